"""Sequence matching cost per frame: full similarity rows vs the top-K shortlist, 1k and 10k places.

Times ``Localizer.search`` (everything after the encoder: retrieval, the similarity row, the
SeqSLAM step) on maps of random unit descriptors of the given dimensions (1280 = effnet_gem,
3584 = anyloc_vlad, 8192 = sift_vlad), with a flat (exact) index. Queries walk along the map
(place i + noise), so the sequence history is full and realistic. Rows per configuration:
single frame (the current behaviour), sequence with full rows (every place scored exactly per
frame), sequence with a top-K shortlist. Prints ms per frame (p50 / p95) and the SeqSLAM step
alone; a 10 Hz camera leaves 100 ms per frame for decode + encode + search on two cores.

    .venv/bin/python benchmarks/bench_sequence.py [--places 1000 10000] [--dims 1280 3584 8192]
        [--frames 60] [--length 10] [--shortlist 100]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from vpr_ros.localization import IdentityOnly, Localizer  # noqa: E402
from vpr_ros.mapdb.store import VprMap  # noqa: E402
from vpr_ros.matching.sequence import SequenceConfig  # noqa: E402


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_map(places: int, dim: int, seed: int = 0) -> VprMap:
    rng = np.random.default_rng(seed)
    identity = {'name': f'synthetic{dim}', 'dim': dim, 'config': {}}
    vmap = VprMap.empty(identity)
    desc = _unit(rng.standard_normal((places, dim)))
    vmap.descriptors = desc
    vmap.owners = np.arange(places, dtype=np.int64)
    from vpr_ros.mapdb.store import Place

    vmap.places = [Place(i, float(i), None) for i in range(places)]
    vmap.meta.count = vmap.meta.vectors = places
    _ = vmap.index  # build the faiss index outside the timing
    return vmap


def run(vmap: VprMap, sequence: SequenceConfig, frames: int,
        seed: int = 1) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    loc = Localizer(vmap, IdentityOnly(vmap.meta.encoder), top_k=5, sequence=sequence)
    start = int(rng.integers(0, max(len(vmap) - frames, 1)))
    total, seq = [], []
    for i in range(frames):
        q = _unit(vmap.descriptors[(start + i) % len(vmap)] + rng.standard_normal(vmap.meta.dim) * 0.04)
        out = loc.search(float(i), q[None])
        if i >= sequence.length:  # history full: the steady state
            total.append(out.search_ms)
            seq.append(out.sequence_ms)
    return total, seq


def _fmt(values: list[float]) -> str:
    return f'{np.percentile(values, 50):7.2f} / {np.percentile(values, 95):7.2f}'


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--places', type=int, nargs='+', default=[1000, 10000])
    p.add_argument('--dims', type=int, nargs='+', default=[1280, 3584, 8192])
    p.add_argument('--frames', type=int, default=60)
    p.add_argument('--length', type=int, default=10)
    p.add_argument('--shortlist', type=int, default=100)
    args = p.parse_args(argv)
    print(f'load: {os.getloadavg()[0]:.2f} (1 min), cpus {os.cpu_count()}; sequence length {args.length}, '
          f'5 velocities, contrast window 10; ms per frame p50 / p95 (search_ms = retrieval + row + SeqSLAM)')
    print(f"{'places':>7} {'dim':>5}  {'mode':<22} {'search ms':>17}  {'SeqSLAM step ms':>17}")
    for places in args.places:
        for dim in args.dims:
            vmap = make_map(places, dim)
            rows = [('single frame', SequenceConfig()),
                    ('sequence, full rows', SequenceConfig(length=args.length)),
                    (f'sequence, top-{args.shortlist}',
                     SequenceConfig(length=args.length, shortlist=args.shortlist))]
            for name, cfg in rows:
                total, seq = run(vmap, cfg, args.frames + (cfg.length or 0))
                step = _fmt(seq) if cfg.enabled else f"{'-':>17}"
                print(f'{places:>7} {dim:>5}  {name:<22} {_fmt(total)}  {step}')
            del vmap
            time.sleep(0.1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
