"""Which training-free encoder should be the default, and which VLAD centre form (issue 10, section 3).

One map of the sample world's ``mapping`` traversal per configuration, evaluated on BOTH other
traversals: ``query`` (appearance change: evening light, fog, another lane; positives within
25 m, every frame) and ``viewpoint`` (5-6 m to the side, camera yawed ~32 deg; positives within
``--viewpoint-dist`` m, every 2nd frame, as bench_segvlad.py). anyloc_vlad and segvlad run with
both vocabulary forms: ``centres: mean`` (the official AnyLoc/SegVLAD plain-mean centres) and
``centres: unit`` (spherical k-means); the ``boot40`` rows fit the vocabulary on only the first 40
keyframes, as the node's bootstrap of an empty map does. Prints Recall@1/5 per traversal, describe ms
per frame
(batch 1, p50 over the query traversal, torch's default threads) and the search ms.

    .venv/bin/python benchmarks/bench_default.py [--scale 0.5] [--only effnet_gem segvlad] [--json F]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from bench_segvlad import build, query  # noqa: E402

from vpr_ros.evaluation.metrics import Thresholds  # noqa: E402
from vpr_ros.sample import render_traversal  # noqa: E402

# label -> (encoder, config, bootstrap keyframes: fit on only the first N keyframes of the mapping
# traversal, every 2nd 2 Hz frame as the node's default 1 s keyframe gate takes them; None = all)
CONFIGS: dict[str, tuple[str, dict] | tuple[str, dict, int]] = {
    'effnet_gem': ('effnet_gem', {}),
    'anyloc_vlad': ('anyloc_vlad', {'centres': 'unit'}),
    'anyloc_vlad mean': ('anyloc_vlad', {'centres': 'mean'}),
    'segvlad': ('segvlad', {'centres': 'unit'}),
    'segvlad mean': ('segvlad', {'centres': 'mean'}),
    'anyloc_vlad boot40': ('anyloc_vlad', {'centres': 'unit'}, 40),
    'anyloc_vlad mean boot40': ('anyloc_vlad', {'centres': 'mean'}, 40),
    'segvlad boot40': ('segvlad', {'centres': 'unit'}, 40),
    'sift_vlad': ('sift_vlad', {}),
    'orb_bovw': ('orb_bovw', {}),
    'raw_pixels': ('raw_pixels', {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scale', type=float, default=0.5, help='sample-world size (1 = ~1.2 km loop)')
    parser.add_argument('--query-dist', type=float, default=25.0)
    parser.add_argument('--viewpoint-dist', type=float, default=10.0)
    parser.add_argument('--only', nargs='*', default=list(CONFIGS), help=f'labels; known: {list(CONFIGS)}')
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: default)')
    parser.add_argument('--json', default=None, help='also write the rows to this file')
    args = parser.parse_args()
    unknown = [label for label in args.only if label not in CONFIGS]
    if unknown:
        parser.error(f'unknown config(s) {unknown}; known: {list(CONFIGS)}')
    map_frames, _ = render_traversal('mapping', scale=args.scale)
    traversals = {'query': (render_traversal('query', scale=args.scale)[0], args.query_dist),
                  'viewpoint': (render_traversal('viewpoint', scale=args.scale)[0][::2], args.viewpoint_dist)}
    print(f'scale {args.scale}: map {len(map_frames)} mapping frames; '
          + '; '.join(f'{k} {len(f)} frames within {d:g} m' for k, (f, d) in traversals.items()))
    print('config | query R@1 | query R@5 | viewpoint R@1 | viewpoint R@5 | describe ms | search ms | fit s')
    print('--- | --- | --- | --- | --- | --- | --- | ---')
    rows = []
    for label in args.only:
        name, config, *boot = CONFIGS[label]
        fit_frames = map_frames[:2 * boot[0]:2] if boot else None
        encoder, vmap, fit_s, _ = build(name, config, {}, map_frames, args.threads, fit_frames)
        row: dict = {'config': label, 'fit s': round(fit_s, 1)}
        for trav, (frames, dist) in traversals.items():
            res = query(encoder, vmap, frames, Thresholds(dist_m=dist))
            row[f'{trav} R@1'], row[f'{trav} R@5'] = res['recall']['R@1'], res['recall']['R@5']
            for verdict, key in ((True, 'right'), (False, 'wrong')):  # top-1 scores, for min_score advice
                scores = [q['scores'][0] for q in res['per_query']
                          if q.get('correct_at_1') is verdict and q['scores']]
                row[f'{trav} top-1 score p50 {key}'] = round(float(np.median(scores)), 3) if scores else None
            if trav == 'query':
                row['describe ms'] = res['timing_ms']['encode']['p50']
                row['search ms'] = res['timing_ms']['search']['p50']
        rows.append(row)
        print(f"{label} | {row['query R@1']:.3f} | {row['query R@5']:.3f} | {row['viewpoint R@1']:.3f} | "
              f"{row['viewpoint R@5']:.3f} | {row['describe ms']:.1f} | {row['search ms']:.2f} | "
              f"{row['fit s']}", flush=True)
    print('top-1 score p50 (right / wrong answers): ' + '; '.join(
        f"{r['config']} q {r['query top-1 score p50 right']}/{r['query top-1 score p50 wrong']} "
        f"v {r['viewpoint top-1 score p50 right']}/{r['viewpoint top-1 score p50 wrong']}" for r in rows))
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as fh:
            json.dump(rows, fh, indent=1)


if __name__ == '__main__':
    main()
