"""What map verification costs on load: a synthetic map of N places x D float32 descriptors.

Prints the save time, the file sizes, SHA-256 throughput, and VprMap.load time with
verify='full' / 'size' / 'none' (mmap=True, as map-info does, and mmap=False, as the node does).
The files were just written, so they are read from the page cache: this measures the CPU cost
of verification, not the disk. Run with `flock -x /tmp/vpr-cpu.lock` and report `uptime`; the CPU
seconds of this process are printed beside the wall time (they hold up on a loaded machine).

    python benchmarks/bench_map_verify.py --places 100000 --dim 1280
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vpr_ros.encoders.base import l2_normalize  # noqa: E402
from vpr_ros.mapdb import integrity  # noqa: E402
from vpr_ros.mapdb.meta import MapMeta  # noqa: E402
from vpr_ros.mapdb.store import Place, VprMap  # noqa: E402


def synthetic_map(places: int, dim: int) -> VprMap:
    rng = np.random.default_rng(0)
    descriptors = np.empty((places, dim), np.float32)
    for start in range(0, places, 65536):
        stop = min(places, start + 65536)
        descriptors[start:stop] = l2_normalize(rng.standard_normal((stop - start, dim), np.float32))
    identity = {'name': 'synthetic', 'config': {}, 'weights_fingerprint': 'none', 'dim': dim,
                'multi_vector': False}
    meta = MapMeta(encoder=identity, count=places, vectors=places)
    return VprMap(meta, [Place(i, float(i), None) for i in range(places)], descriptors, np.arange(places))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--places', type=int, default=100_000)
    parser.add_argument('--dim', type=int, default=1280)
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--dir', default=None, help='where to write the map (default: a temp dir)')
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix='bench_map_verify-', dir=args.dir)
    try:
        path = os.path.join(root, 'map')
        vmap = synthetic_map(args.places, args.dim)
        t0, c0 = time.perf_counter(), time.process_time()
        vmap.save(path)
        save_s, save_cpu = time.perf_counter() - t0, time.process_time() - c0
        del vmap
        sizes = {n: os.path.getsize(os.path.join(path, n)) for n in sorted(os.listdir(path))}
        total = sum(sizes.values())
        print(f'map: {args.places} places x {args.dim} float32; {total / 1e6:.0f} MB on disk (descriptors '
              f"{sizes['descriptors.npy'] / 1e6:.0f} MB, index {sizes.get('index.faiss', 0) / 1e6:.0f} MB)")
        print(f'save (incl. hashing every file): {save_s:.2f} s wall, {save_cpu:.2f} s CPU')
        big = os.path.join(path, 'descriptors.npy')
        t0, c0 = time.perf_counter(), time.process_time()
        integrity.sha256_file(big)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        print(f'sha256 of descriptors.npy: {dt:.2f} s wall, {dc:.2f} s CPU = '
              f'{sizes["descriptors.npy"] / dc / 1e9:.2f} GB/s per CPU second')
        for mmap in (True, False):
            for verify in integrity.VERIFY_MODES:
                best, best_cpu = float('inf'), float('inf')
                for _ in range(args.repeats):
                    t0, c0 = time.perf_counter(), time.process_time()
                    loaded = VprMap.load(path, mmap=mmap, verify=verify)
                    best = min(best, time.perf_counter() - t0)
                    best_cpu = min(best_cpu, time.process_time() - c0)
                    del loaded
                print(f'load mmap={str(mmap):5s} verify={verify:4s}: {best:6.2f} s wall, '
                      f'{best_cpu:6.2f} s CPU (best of {args.repeats})')
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    main()
