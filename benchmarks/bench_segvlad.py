"""SegVLAD vs global VLAD (AnyLoc-style) vs GeM on the sample world (issue: SegVLAD). Prints a table.

Map = the ``mapping`` traversal, queries = ``viewpoint`` (6 m to the side, camera yawed ~32 deg:
only part of each facade is shared, the case segment retrieval is meant for) or ``query``
(appearance change). For each encoder config: Recall@1/5 within ``--dist`` metres, bytes of
descriptors per map image (as stored: float32, or float16 for the ``fp16`` row), ms per query
to describe it (batch 1) and to search the map.

    .venv/bin/python benchmarks/bench_segvlad.py [--scale 0.5] [--queries viewpoint] [--only segvlad anyloc_vlad]
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
from vpr_ros.sources.sample import render_traversal  # noqa: E402

CONFIGS: dict[str, tuple[str, dict]] = {
    'effnet_gem': ('effnet_gem', {}),
    'anyloc_vlad': ('anyloc_vlad', {}),
    'anyloc_vlad head': ('anyloc_vlad', {'layer': 'head'}),
    'segvlad': ('segvlad', {}),
    'segvlad order0': ('segvlad', {'order': 0}),
    'segvlad order1': ('segvlad', {'order': 1}),
    'segvlad 32seg': ('segvlad', {'segments': 32}),
    'segvlad 100seg': ('segvlad', {'segments': 100}),
    'segvlad block7': ('segvlad', {'layer': 7}),
    'segvlad head': ('segvlad', {'layer': 'head'}),
    'segvlad head 320x427': ('segvlad', {'layer': 'head', 'image_size': [320, 416], 'segment_size': [240, 320]}),
    'segvlad graph': ('segvlad', {'segmenter': 'graph'}),
    'segvlad nopca': ('segvlad', {'pca_dim': 0}),
    'segvlad whitened': ('segvlad', {'pca_whiten': True}),
    'segvlad pca256': ('segvlad', {'pca_dim': 256}),
    'segvlad pca1024 fp16': ('segvlad', {}),
    'segvlad pca256 fp16': ('segvlad', {'pca_dim': 256}),  # the practical configuration
}


def run(label: str, name: str, config: dict, map_frames, query_frames, th: Thresholds, threads: int = 1) -> dict:
    encoder = create_encoder(name, {**config, 'threads': threads})
    t0 = time.perf_counter()
    if encoder.requires_fit:
        encoder.fit([f.rgb for f in map_frames])
    fit_s = time.perf_counter() - t0
    dtype = 'float16' if label.endswith('fp16') else 'float32'
    vmap = VprMap.empty(encoder.identity(), dtype=dtype, encoder_state=encoder.get_state())
    t0 = time.perf_counter()
    for i in range(0, len(map_frames), 8):
        batch = map_frames[i:i + 8]
        for frame, vectors in zip(batch, encoder.describe([f.rgb for f in batch])):
            vmap.add(frame.stamp, frame.pose, vectors)
    build_s = time.perf_counter() - t0
    records = []
    for frame in query_frames:
        t0 = time.perf_counter()
        vectors = encoder.describe([frame.rgb])[0]
        t1 = time.perf_counter()
        matches = vmap.search(vectors, 5)
        t2 = time.perf_counter()
        records.append(QueryRecord(frame.stamp, frame.pose, [m.place_id for m in matches],
                                   [m.score for m in matches], (t1 - t0) * 1e3, (t2 - t1) * 1e3))
    result = evaluate_retrieval(records, vmap.places, th, ns=(1, 5))
    return {'config': label, 'R@1': result['recall']['R@1'], 'R@5': result['recall']['R@5'],
            'vectors/img': round(len(vmap.owners) / len(vmap), 1), 'dim': encoder.dim,
            'KiB/img': round(vmap.descriptors.size * np.dtype(vmap.meta.dtype).itemsize / len(vmap) / 1024, 1),
            'describe ms': result['timing_ms']['encode']['p50'], 'search ms': result['timing_ms']['search']['p50'],
            'fit s': round(fit_s, 1), 'build s': round(build_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scale', type=float, default=0.5, help='sample-world size (1 = ~1.2 km loop)')
    parser.add_argument('--queries', default='viewpoint', choices=['viewpoint', 'query'])
    parser.add_argument('--query-every', type=int, default=2, help='use every n-th query frame')
    parser.add_argument('--dist', type=float, default=10.0, help='positive radius in metres')
    parser.add_argument('--only', nargs='*', default=None, help=f'config labels; known: {list(CONFIGS)}')
    parser.add_argument('--threads', type=int, default=1, help='torch and faiss threads')
    parser.add_argument('--json', default=None, help='also write the rows to this file')
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    map_frames, _ = render_traversal('mapping', scale=args.scale)
    query_frames, _ = render_traversal(args.queries, scale=args.scale)
    query_frames = query_frames[::args.query_every]
    print(f'map: {len(map_frames)} mapping frames; queries: {len(query_frames)} {args.queries} frames; '
          f'positives within {args.dist} m')
    rows = []
    for label in args.only or list(CONFIGS):
        name, config = CONFIGS[label]
        row = run(label, name, config, map_frames, query_frames, Thresholds(dist_m=args.dist), args.threads)
        rows.append(row)
        print('  '.join(f'{k}={v}' for k, v in row.items()), flush=True)
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as fh:
            json.dump(rows, fh, indent=1)


if __name__ == '__main__':
    main()
