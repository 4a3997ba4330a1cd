"""Encoder runtimes side by side (issue 27): torch eager, onnxruntime, OpenVINO; f32, bf16, int8.

One run, three parts, every figure from the same run (compare ratios: on a shared machine the
absolute times move with the other load):

1. encode latency, batch 1 (one 240x320 frame, ``encode([frame])`` including preprocessing), p50/p95
   per encoder x runtime x precision (and anyloc_vlad on OpenVINO f32 with its VLAD outside the
   graph), quiet and beside 1 and 2 busy processes (``python -c 'while
   True: pass'``) and beside one busy torch training process (2 threads, libgomp's default
   spin-waiting, as a process that does not import vpr_ros runs). Within each condition the
   configurations are called in turn, frame by frame (alternating), so slow drifts of the machine
   hit them alike. ``threads`` is the default 0 (adapted to the free cores) everywhere.
2. recall on the sample world (mapping traversal as the map, query traversal; positives within
   25 m and within 5 m) for f32 on torch and on the default runtime, bf16 and int8 (int8 calibrated
   on the map's images, as ``precision: int8`` does when a map is built).
3. the localizer node (benchmarks/bench_node.py, 1000-place anyloc_vlad map, 640x480 input) at 10 and
   30 Hz with ``runtime:=torch`` and with the default: frames answered and node p50.

    .venv/bin/python benchmarks/bench_runtime.py [--frames 25] [--scale 0.25] [--skip-recall]
        [--skip-node] [--encoders anyloc_vlad effnet_gem]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from vpr_ros.encoders import create_encoder  # noqa: E402
from vpr_ros.encoders.base import Encoder  # noqa: E402
from vpr_ros.evaluation.metrics import Thresholds  # noqa: E402
from vpr_ros.sample import render_traversal  # noqa: E402

# (label, runtime, precision); 'auto' is what a default config runs. 'VLAD outside' is anyloc_vlad's
# f32 path with the VLAD in numpy after the graph (the default runs it inside the graph).
VLAD_OUTSIDE = 'openvino, VLAD outside'
RUNTIME_CASES = [('torch', 'torch', 'f32'), ('onnxruntime', 'onnxruntime', 'f32'),
                 ('openvino', 'openvino', 'f32'), (VLAD_OUTSIDE, 'openvino', 'f32'),
                 ('auto (default)', 'auto', 'f32'),
                 ('openvino bf16', 'openvino', 'bf16'),
                 ('onnxruntime int8', 'onnxruntime', 'int8'), ('openvino int8', 'openvino', 'int8')]
SPINNER = 'while True: pass'
TORCH_TRAINING = """
import torch
torch.set_num_threads(2)
m = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3))
opt = torch.optim.SGD(m.parameters(), 0.01)
x = torch.randn(8, 3, 96, 96)
while True:
    opt.zero_grad()
    m(x).square().mean().backward()
    opt.step()
"""
CONDITIONS = [('quiet', []), ('1 busy', [SPINNER]), ('2 busy', [SPINNER, SPINNER]),
              ('busy torch', [TORCH_TRAINING])]


@contextmanager
def busy(programs: list[str]) -> Iterator[None]:
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')}
    procs = [subprocess.Popen([sys.executable, '-c', p], env=env) for p in programs]
    try:
        time.sleep(1.5 if any('torch' in p for p in programs) else 0.5)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def make(name: str, runtime: str, precision: str, fit_images: list[np.ndarray],
         state: dict | None) -> Encoder:
    encoder = create_encoder(name, {'runtime': runtime, 'precision': precision},
                             state if precision == 'f32' else None)
    if not encoder.is_fitted:
        encoder.fit(fit_images)
    return encoder


def latency(encoders: dict[tuple[str, str], Encoder], frame: np.ndarray, frames: int) -> dict:
    """Per configuration: (wall p50, wall p95, this process's CPU ms per frame p50: all its threads,
    so a pool that spin-waits shows as CPU beyond the work)."""
    times: dict[tuple[str, str], list[float]] = {k: [] for k in encoders}
    cpu: dict[tuple[str, str], list[float]] = {k: [] for k in encoders}
    for enc in encoders.values():
        enc.encode([frame])
    for _ in range(frames):
        for key, enc in encoders.items():
            c0, t0 = time.process_time(), time.perf_counter()
            enc.encode([frame])
            times[key].append((time.perf_counter() - t0) * 1e3)
            cpu[key].append((time.process_time() - c0) * 1e3)
    return {k: (float(np.percentile(v, 50)), float(np.percentile(v, 95)), float(np.percentile(cpu[k], 50)))
            for k, v in times.items()}


def recall(encoder: Encoder, map_frames, query_frames) -> dict[str, float]:
    from bench_segvlad import query

    from vpr_ros.mapdb.store import VprMap

    vmap = VprMap.empty(encoder.identity(), encoder_state=encoder.get_state())
    for i in range(0, len(map_frames), 8):
        batch = map_frames[i:i + 8]
        for frame, vectors in zip(batch, encoder.describe([f.rgb for f in batch])):
            vmap.add(frame.stamp, frame.pose, vectors)
    out = {}
    for dist in (25.0, 5.0):
        out[f'R@1 {dist:g} m'] = query(encoder, vmap, query_frames, Thresholds(dist_m=dist))['recall']['R@1']
    return out


def node_rates(seconds: float, rates: list[float]) -> None:
    import bench_node

    os.environ.setdefault('ROS_DOMAIN_ID', str(100 + os.getpid() % 100))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.chdir(os.path.dirname(HERE))  # the node runs `python -m vpr_ros...` from the checkout
    images = bench_node.frames(20)
    print('\n3. node (anyloc_vlad, 1000 places, 640x480 rgb8): frames answered of sent, node p50 ms')
    print('runtime | ' + ' | '.join(f'{r:g} Hz answered | {r:g} Hz node p50' for r in rates))
    print('--- | ' + ' | '.join('--- | ---' for _ in rates))
    with tempfile.TemporaryDirectory(prefix='bench_runtime_') as tmp:
        map_path = os.path.join(tmp, 'map')
        bench_node.build_map(map_path, images, 1000, 'anyloc_vlad', {}, 'float32')
        rows: dict[str, list[str]] = {'torch': [], 'default (auto)': []}
        for rate in rates:
            for label in rows:  # alternating: torch, default, at each rate
                params = ['qos_overrides./camera/image_raw.subscription.reliability:=reliable']
                if label == 'torch':
                    params.append('runtime:=torch')
                r = bench_node.run_rate(map_path, images, rate, seconds, tmp, params)
                rows[label] += [f"{r['answered']}/{r['published']}", f"{r['processing_p50']:.1f}"]
        for label, cells in rows.items():
            print(f'{label} | ' + ' | '.join(cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=25, help='timed frames per configuration and condition')
    parser.add_argument('--scale', type=float, default=0.25,
                        help='sample-world size for calibration and recall')
    parser.add_argument('--encoders', nargs='+', default=['anyloc_vlad', 'effnet_gem'])
    parser.add_argument('--conditions', nargs='+', default=[c for c, _ in CONDITIONS])
    parser.add_argument('--seconds', type=float, default=10.0, help='node input duration per rate')
    parser.add_argument('--rates', type=float, nargs='+', default=[10.0, 30.0])
    parser.add_argument('--skip-recall', action='store_true')
    parser.add_argument('--skip-node', action='store_true')
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(open('/proc/loadavg').read().split()[:3])} at start")
    map_frames, _ = render_traversal('mapping', scale=args.scale)
    query_frames, _ = render_traversal('query', scale=args.scale)
    fit_images = [f.rgb for f in map_frames]
    frame = query_frames[len(query_frames) // 2].rgb
    encoders: dict[tuple[str, str], Encoder] = {}
    for name in args.encoders:
        reference = make(name, 'torch', 'f32', fit_images, None)
        state = reference.get_state()
        for label, runtime, precision in RUNTIME_CASES:
            if label == VLAD_OUTSIDE and name != 'anyloc_vlad':
                continue
            encoders[(name, label)] = reference if label == 'torch' else make(name, runtime, precision,
                                                                               fit_images, state)
            if label == VLAD_OUTSIDE:
                encoders[(name, label)].dense.network.heads_in_graph = False
    for enc in encoders.values():
        enc.encode([frame])  # chooses, exports or loads, and checks each runtime
    chosen = {name: encoders[(name, 'auto (default)')].runtimes() for name in args.encoders}
    print(f'runtime: auto chose {chosen}')

    results = {}
    for condition, programs in CONDITIONS:
        if condition not in args.conditions:
            continue
        with busy(programs):
            results[condition] = latency(encoders, frame, args.frames)
        load = ' '.join(open('/proc/loadavg').read().split()[:3])
        print(f'  measured {condition} (load average after: {load})', flush=True)
    conds = list(results)
    print(f'\n1. encode latency, batch 1, ms p50/p95 ({args.frames} frames each, alternating); '
          'x torch = p50 speed-up over torch eager in the same condition; busy/quiet = p50 ratio; '
          'CPU ms = CPU time of this process per frame, p50 (above the work when a pool spin-waits)')
    print('encoder | runtime | ' + ' | '.join(f'{c} p50/p95' for c in conds) + ' | '
          + ' | '.join(f'x torch {c}' for c in conds) + ' | 1 busy/quiet | '
          + ' | '.join(f'CPU ms {c}' for c in conds))
    print('--- | --- | ' + ' | '.join('---' for _ in conds * 3) + ' | ---')
    for (name, label) in encoders:
        cells = [f'{results[c][(name, label)][0]:.1f}/{results[c][(name, label)][1]:.1f}' for c in conds]
        speed = [f'{results[c][(name, "torch")][0] / results[c][(name, label)][0]:.2f}' for c in conds]
        ratio = (f"{results['1 busy'][(name, label)][0] / results['quiet'][(name, label)][0]:.2f}"
                 if {'1 busy', 'quiet'} <= set(results) else '-')
        cpu = [f'{results[c][(name, label)][2]:.1f}' for c in conds]
        print(f'{name} | {label} | ' + ' | '.join(cells + speed) + f' | {ratio} | ' + ' | '.join(cpu))

    if not args.skip_recall:
        print(f'\n2. recall on the sample world (scale {args.scale}: {len(map_frames)} map, '
              f'{len(query_frames)} query frames), Recall@1 within 25 m / 5 m')
        print('encoder | runtime | R@1 25 m | R@1 5 m')
        print('--- | --- | --- | ---')
        for (name, label), enc in encoders.items():
            if label in ('onnxruntime', 'openvino', VLAD_OUTSIDE):
                continue  # f32 on every runtime is within 1e-5 of torch (tests); auto stands for them
            r = recall(enc, map_frames, query_frames)
            print(f"{name} | {label} | {r['R@1 25 m']:.3f} | {r['R@1 5 m']:.3f}", flush=True)
    if not args.skip_node:
        node_rates(args.seconds, args.rates)
    return 0


if __name__ == '__main__':
    sys.exit(main())
