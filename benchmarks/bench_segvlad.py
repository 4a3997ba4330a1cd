"""SegVLAD vs global VLAD (AnyLoc-style) vs GeM on the sample world (issue: SegVLAD). Prints a table.

Map = the ``mapping`` traversal, queries = ``viewpoint`` (6 m to the side, camera yawed ~32 deg:
only part of each facade is shared, the case segment retrieval is meant for) or ``query``
(appearance change). For each encoder config: Recall@1/5 within ``--dist`` metres, bytes of
descriptors per map image (as stored: float32, or float16 for the ``fp16`` rows), ms per query
to describe it (batch 1) and to search the map, then each SegVLAD row against the targets
(<= 100 KB per image, query <= 5x effnet_gem, Recall@1 within 1 point of the exact config).

    .venv/bin/python benchmarks/bench_segvlad.py [--scale 0.5] [--queries viewpoint] \
        [--only segvlad anyloc_vlad | --all]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from vpr_ros.encoders import create_encoder  # noqa: E402
from vpr_ros.evaluation.metrics import QueryRecord, Thresholds, evaluate_retrieval  # noqa: E402
from vpr_ros.mapdb.store import VprMap  # noqa: E402
from vpr_ros.sample import render_traversal  # noqa: E402

# label -> (encoder, encoder config, map storage: descriptor dtype and faiss index spec)
CONFIGS: dict[str, tuple[str, dict, dict]] = {
    'effnet_gem': ('effnet_gem', {}, {}),
    'anyloc_vlad': ('anyloc_vlad', {}, {}),
    'anyloc_vlad head': ('anyloc_vlad', {'layer': 'head'}, {}),
    'segvlad': ('segvlad', {}, {}),  # the exact configuration: PCA 1024, float32, flat index
    'segvlad order0': ('segvlad', {'order': 0}, {}),
    'segvlad order1': ('segvlad', {'order': 1}, {}),
    'segvlad 32seg': ('segvlad', {'segments': 32}, {}),
    'segvlad 100seg': ('segvlad', {'segments': 100}, {}),
    'segvlad block7': ('segvlad', {'layer': 7}, {}),
    'segvlad head': ('segvlad', {'layer': 'head'}, {}),
    'segvlad head 320x427': ('segvlad', {'layer': 'head', 'image_size': [320, 416],
                                         'segment_size': [240, 320]}, {}),
    'segvlad graph': ('segvlad', {'segmenter': 'graph'}, {}),
    'segvlad nopca': ('segvlad', {'pca_dim': 0}, {}),
    'segvlad whitened': ('segvlad', {'pca_whiten': True}, {}),
    'segvlad fp16': ('segvlad', {}, {'dtype': 'float16'}),
    'segvlad pca256': ('segvlad', {'pca_dim': 256}, {}),
    'segvlad pca256 fp16': ('segvlad', {'pca_dim': 256}, {'dtype': 'float16'}),  # the practical configuration
    'segvlad pca256 fp16 hnsw': ('segvlad', {'pca_dim': 256}, {'dtype': 'float16', 'index': 'hnsw32'}),
    'segvlad pca256 fp16 ivf': ('segvlad', {'pca_dim': 256}, {'dtype': 'float16', 'index': 'ivf'}),
}
DEFAULT_ONLY = ['effnet_gem', 'anyloc_vlad', 'segvlad', 'segvlad whitened', 'segvlad fp16', 'segvlad pca256',
                'segvlad pca256 fp16', 'segvlad pca256 fp16 hnsw', 'segvlad pca256 fp16 ivf']
# The targets for a practical SegVLAD configuration, against the exact one and effnet_gem.
TARGET_KB_PER_IMAGE = 100.0
TARGET_QUERY_RATIO = 5.0
TARGET_R1_LOSS = 0.01


def build(name: str, config: dict, storage: dict, map_frames, threads: int = 0, fit_frames=None):
    """Fit (if needed; on ``fit_frames``, default the map frames) and fill an in-memory map:
    (encoder, map, fit seconds, build seconds)."""
    encoder = create_encoder(name, {**config, 'threads': threads})
    t0 = time.perf_counter()
    if encoder.requires_fit:
        encoder.fit([f.rgb for f in (map_frames if fit_frames is None else fit_frames)])
    fit_s = time.perf_counter() - t0
    vmap = VprMap.empty(encoder.identity(), encoder_state=encoder.get_state(), **storage)
    t0 = time.perf_counter()
    for i in range(0, len(map_frames), 8):
        batch = map_frames[i:i + 8]
        for frame, vectors in zip(batch, encoder.describe([f.rgb for f in batch])):
            vmap.add(frame.stamp, frame.pose, vectors)
    vmap.index  # noqa: B018 -- build (and train) the index outside the query timings
    return encoder, vmap, fit_s, time.perf_counter() - t0


def query(encoder, vmap: VprMap, query_frames, th: Thresholds) -> dict:
    """Recall@1/5 and per-query timings (batch 1: describe, search) of ``query_frames``."""
    records = []
    for frame in query_frames:
        t0 = time.perf_counter()
        vectors = encoder.describe([frame.rgb])[0]
        t1 = time.perf_counter()
        matches = vmap.search(vectors, 5)
        t2 = time.perf_counter()
        records.append(QueryRecord(frame.stamp, frame.pose, [m.place_id for m in matches],
                                   [m.score for m in matches], (t1 - t0) * 1e3, (t2 - t1) * 1e3))
    return evaluate_retrieval(records, vmap.places, th, ns=(1, 5))


def run(label: str, name: str, config: dict, storage: dict, map_frames, query_frames, th: Thresholds,
        threads: int = 0) -> dict:
    encoder, vmap, fit_s, build_s = build(name, config, storage, map_frames, threads)
    result = query(encoder, vmap, query_frames, th)
    timing = result['timing_ms']
    stored = vmap.descriptors.size * np.dtype(vmap.meta.dtype).itemsize / len(vmap)
    return {'config': label, 'R@1': result['recall']['R@1'], 'R@5': result['recall']['R@5'],
            'vectors/img': round(len(vmap.owners) / len(vmap), 1), 'dim': encoder.dim,
            'KB/img': round(stored / 1000, 1), 'describe ms': timing['encode']['p50'],
            'search ms': timing['search']['p50'],
            'query ms': round(timing['encode']['p50'] + timing['search']['p50'], 1),
            'fit s': round(fit_s, 1), 'build s': round(build_s, 1)}


def target_lines(rows: list[dict], queries: str) -> list[str]:
    """Each SegVLAD row against the issue's targets (needs the effnet_gem and exact segvlad rows)."""
    by = {r['config']: r for r in rows}
    if 'effnet_gem' not in by or 'segvlad' not in by:
        return ['(targets need the effnet_gem and segvlad rows)']
    base, exact = by['effnet_gem']['query ms'], by['segvlad']['R@1']
    lines = [f'targets: <= {TARGET_KB_PER_IMAGE:g} KB/image, query <= {TARGET_QUERY_RATIO:g}x effnet_gem '
             f'({base} ms), R@1 >= exact segvlad ({exact:.3f}) - {TARGET_R1_LOSS}']
    for r in rows:
        if not r['config'].startswith('segvlad'):
            continue
        ratio = r['query ms'] / base
        checks = [r['KB/img'] <= TARGET_KB_PER_IMAGE, ratio <= TARGET_QUERY_RATIO,
                  r['R@1'] >= exact - TARGET_R1_LOSS]
        verdict = 'meets all' if all(checks) else 'misses'
        lines.append(f'  {r["config"]:28s} {r["KB/img"]:7.1f} KB/img  query {r["query ms"]:6.1f} ms = '
                     f'{ratio:4.2f}x  R@1 {r["R@1"]:.3f} ({r["R@1"] - exact:+.3f})  -> {verdict}')
    if 'anyloc_vlad' in by:
        lines.append(f'{queries} R@1: segvlad {exact:.3f} vs global VLAD '
                     '(anyloc_vlad, same backbone + vocabulary) '
                     f'{by["anyloc_vlad"]["R@1"]:.3f}')
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scale', type=float, default=0.5, help='sample-world size (1 = ~1.2 km loop)')
    parser.add_argument('--queries', default='viewpoint', choices=['viewpoint', 'query'])
    parser.add_argument('--query-every', type=int, default=2, help='use every n-th query frame')
    parser.add_argument('--dist', type=float, default=10.0, help='positive radius in metres')
    parser.add_argument('--only', nargs='*', default=DEFAULT_ONLY,
                        help=f'config labels; known: {list(CONFIGS)}')
    parser.add_argument('--all', action='store_true', help='run every config (the ablations too)')
    parser.add_argument('--threads', type=int, default=0,
                        help='torch threads (0: torch default, as the node)')
    parser.add_argument('--json', default=None, help='also write the rows to this file')
    args = parser.parse_args()
    map_frames, _ = render_traversal('mapping', scale=args.scale)
    query_frames, _ = render_traversal(args.queries, scale=args.scale)
    query_frames = query_frames[::args.query_every]
    print(f'map: {len(map_frames)} mapping frames; queries: {len(query_frames)} {args.queries} frames; '
          f'positives within {args.dist} m')
    rows = []
    labels = list(CONFIGS) if args.all else args.only
    unknown = [label for label in labels if label not in CONFIGS]
    if unknown:
        parser.error(f'unknown config(s) {unknown}; known: {list(CONFIGS)}')
    for label in labels:
        name, config, storage = CONFIGS[label]
        row = run(label, name, config, storage, map_frames, query_frames, Thresholds(dist_m=args.dist),
                  args.threads)
        rows.append(row)
        print('  '.join(f'{k}={v}' for k, v in row.items()), flush=True)
    print('\n'.join(target_lines(rows, args.queries)))
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as fh:
            json.dump(rows, fh, indent=1)


if __name__ == '__main__':
    main()
