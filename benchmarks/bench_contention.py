"""Latency on a shared CPU: effnet_gem beside 0, 1 and 2 competing busy processes.

A robot's node shares its cores with SLAM and drivers. For each number of busy processes
(``python -c 'while True: pass'``, started before and stopped after each case) this prints p50/p95
per frame, the ratio to the quiet case and the torch thread counts the frames ran on, for

- encoder: a fresh process looping ``create_encoder(ENCODER).encode([one 240x320 frame])``;
- node: bench_node's localizer node subprocess (1000-place map) fed 640x480 frames at ``--rate``
  Hz: its per-frame processing time (``/diagnostics``) and the end-to-end latency.

Run it with nothing else on the CPU (``flock -x /tmp/vpr-cpu.lock``); it prints the load average
and the CPU share other processes took during the quiet case. ``--pythonpath`` runs the encoder
loop and the node against another checkout (to compare with an older commit).

    .venv/bin/python benchmarks/bench_contention.py [--busy 0 1 2] [--frames 80] [--threads 0]
        [--rate 5] [--seconds 12] [--skip-node]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ENCODER = 'effnet_gem'

ENCODER_LOOP = """
import json, sys, time
import numpy as np
from vpr_ros.encoders import create_encoder
import torch
frames, threads = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
import cv2
img = cv2.resize((rng.random((6, 8, 3)) * 255).astype(np.float32), (320, 240)).clip(0, 255).astype(np.uint8)
enc = create_encoder(sys.argv[3], {'threads': threads} if threads else None)
for _ in range(5):
    enc.encode([img])
times, used = [], []
for _ in range(frames):
    t0 = time.perf_counter()
    enc.encode([img])
    times.append((time.perf_counter() - t0) * 1e3)
    used.append(torch.get_num_threads())
print(json.dumps({'times': times, 'threads': used}))
"""


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open('/proc/stat', encoding='ascii') as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@contextmanager
def busy_processes(n: int) -> Iterator[None]:
    procs = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(n)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def child_env(pythonpath: str, extra: list[str] = ()) -> dict[str, str]:
    env = dict(os.environ, **dict(item.split('=', 1) for item in extra))
    env['PYTHONPATH'] = pythonpath + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    return env


def encoder_case(frames: int, threads: int, pythonpath: str, extra_env: list[str]) -> dict:
    out = subprocess.run([sys.executable, '-c', ENCODER_LOOP, str(frames), str(threads), ENCODER],
                         env=child_env(pythonpath, extra_env), capture_output=True, text=True, check=True,
                         cwd=pythonpath)  # python -c puts the cwd first on sys.path
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(times: list[float]) -> tuple[float, float]:
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def thread_mix(used: list[int]) -> str:
    counts = {t: used.count(t) for t in sorted(set(used))}
    return ' '.join(f'{t}:{100 * c / len(used):.0f}%' for t, c in counts.items())


def with_cpu_used(run: Callable[[], dict]) -> tuple[dict, float]:
    """Run ``run`` and return its result with the CPU utilisation of the whole machine in cores."""
    busy0, total0 = cpu_jiffies()
    result = run()
    busy1, total1 = cpu_jiffies()
    cores = len(os.sched_getaffinity(0))
    return result, cores * (busy1 - busy0) / max(1, total1 - total0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--busy', type=int, nargs='+', default=[0, 1, 2],
                        help='competing busy processes per case')
    parser.add_argument('--frames', type=int, default=80, help='encoder loop frames per case')
    parser.add_argument('--threads', type=int, default=0, help="encoder 'threads' (0 = the default)")
    parser.add_argument('--rate', type=float, default=5.0, help='node input rate [Hz]')
    parser.add_argument('--seconds', type=float, default=12.0, help='node input duration per case')
    parser.add_argument('--skip-node', action='store_true')
    parser.add_argument('--env', nargs='*', default=[], metavar='KEY=VALUE',
                        help='environment of the measured processes, e.g. OMP_WAIT_POLICY=ACTIVE')
    parser.add_argument('--pythonpath', default=os.path.dirname(HERE), help='the vpr_ros checkout to measure')
    args = parser.parse_args()
    load = ' '.join(open('/proc/loadavg').read().split()[:3])
    print(f'{os.cpu_count()} CPUs, load average before: {load}, '
          f'checkout {args.pythonpath}, threads {args.threads or "default"}, env {" ".join(args.env) or "-"}')
    rows = []
    for n in args.busy:
        with busy_processes(n):
            r, used_cores = with_cpu_used(
                lambda: encoder_case(args.frames, args.threads, args.pythonpath, args.env))
        rows.append(('encoder', n, *summary(r['times']), thread_mix(r['threads']), used_cores))
    if not args.skip_node:
        sys.path.insert(0, args.pythonpath)
        sys.path.insert(1, HERE)
        os.environ.update(child_env(args.pythonpath, args.env))
        os.chdir(args.pythonpath)  # the node runs `python -m vpr_ros...` from here
        os.environ.setdefault('ROS_DOMAIN_ID', str(100 + os.getpid() % 100))
        os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
        import bench_node

        images = bench_node.frames(20)
        with tempfile.TemporaryDirectory(prefix='bench_contention_') as tmp:
            map_path = os.path.join(tmp, 'map')
            bench_node.build_map(map_path, images, 1000, ENCODER, {}, 'float32')
            params = [f'threads:={args.threads}',
                      'qos_overrides./camera/image_raw.subscription.reliability:=reliable']
            for n in args.busy:
                with busy_processes(n):
                    r, used_cores = with_cpu_used(lambda: bench_node.run_rate(map_path, images, args.rate,
                                                                             args.seconds, tmp, params))
                rows.append(('node', n, r['processing_p50'], r['processing_p95'],
                             f"e2e {r['latency_p50']:.0f}/{r['latency_p95']:.0f} ms, "
                             f"{r['answered']}/{r['published']} answered", used_cores))
    quiet = {kind: p50 for kind, n, p50, *_ in rows if n == 0}
    print(f"{'case':>8} {'busy':>4} {'p50 ms':>7} {'p95 ms':>7} {'p50/quiet':>9} {'CPU used':>8}  notes")
    for kind, n, p50, p95, note, used_cores in rows:
        ratio = f'{p50 / quiet[kind]:9.2f}' if kind in quiet else f"{'-':>9}"
        print(f'{kind:>8} {n:4d} {p50:7.1f} {p95:7.1f} {ratio} {used_cores:6.2f} c  {note}')
    print('encoder notes: torch threads per frame (share of frames); node p50/p95 = per-frame processing '
          'from /diagnostics; CPU used = whole machine, cores, during the case')
    return 0


if __name__ == '__main__':
    sys.exit(main())
