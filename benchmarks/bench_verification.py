"""Geometric verification figures at 640x480: local-feature extraction and ms per verified candidate.

Renders the sample world's mapping and query traversals at 480x640 (``--scale`` of the route),
extracts local features of every frame, and verifies each query frame against its nearest mapping
frame (a true revisit under appearance change) and against the farthest one (an unrelated place),
with the fundamental matrix (no intrinsics) and the essential matrix (the sample camera's
intrinsics). Prints per feature kind: extraction ms, verification ms per candidate (wall p50/p95;
target <= 30 ms) and its process CPU time (meaningful on a loaded machine), and the fraction of true /
unrelated pairs verified. No pass/fail.

    .venv/bin/python benchmarks/bench_verification.py [--scale 0.1] [--kinds rootsift orb]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from vpr_ros.features import LocalFeatureConfig, extract  # noqa: E402
from vpr_ros.matching.verification import verify_pair  # noqa: E402
from vpr_ros.sample import render_traversal, sample_camera  # noqa: E402

TARGET_MS = 30.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scale', type=float, default=0.1, help='sample route scale (frames rendered)')
    parser.add_argument('--kinds', nargs='+', default=['rootsift', 'orb'])
    parser.add_argument('--max-keypoints', type=int, default=500)
    parser.add_argument('--revisit-m', type=float, default=3.0, help='a true pair is at most this far apart')
    args = parser.parse_args()
    h, w = 480, 640
    mapping, _ = render_traversal('mapping', scale=args.scale, image_size=(h, w))
    query, _ = render_traversal('query', scale=args.scale, image_size=(h, w))
    camera = sample_camera((h, w))  # the renderer's pinhole (its pitch is a principal-point shift)
    pos = np.array([f.pose.position[:2] for f in mapping])
    print(f'{len(mapping)} map and {len(query)} query frames at {w}x{h}; load {os.getloadavg()[0]:.1f}')
    print('| features | keypoints/img | extract ms p50 (CPU mean) | model | '
          'verify ms/candidate p50 / p95 (CPU mean) | '
          'true pairs verified | unrelated verified | target <= 30 ms |')
    print('|---|---|---|---|---|---|---|---|')
    for kind in args.kinds:
        cfg = LocalFeatureConfig(kind, args.max_keypoints)
        t_extract, feats = [], []
        cpu0 = time.process_time()
        for frame in mapping:
            t0 = time.perf_counter()
            feats.append(extract(frame.rgb, cfg))
            t_extract.append((time.perf_counter() - t0) * 1e3)
        cpu_extract = (time.process_time() - cpu0) * 1e3 / len(mapping)
        pairs = []
        for frame in query:
            d = np.linalg.norm(pos - np.asarray(frame.pose.position[:2]), axis=1)
            if d.min() <= args.revisit_m:
                pairs.append((extract(frame.rgb, cfg), int(np.argmin(d)), int(np.argmax(d))))
        for model, cams in (('fundamental', (None, None)), ('essential', (camera, camera))):
            ms, same, other = [], [], []
            cpu0 = time.process_time()
            for qf, near, far in pairs:
                for pid, out in ((near, same), (far, other)):
                    v = verify_pair(qf, feats[pid], pid, query_camera=cams[0], place_camera=cams[1],
                                    binary=kind == 'orb')
                    ms.append(v.ms)
                    out.append(v.verified)
            cpu_ms = (time.process_time() - cpu0) * 1e3 / max(len(ms), 1)
            p50, p95 = np.percentile(ms, 50), np.percentile(ms, 95)
            print(f'| {kind} {args.max_keypoints} | {np.mean([len(x) for x in feats]):.0f} | '
                  f'{np.median(t_extract):.1f} ({cpu_extract:.1f} CPU) | {model} | {p50:.1f} / {p95:.1f} '
                  f'({cpu_ms:.1f} CPU) | '
                  f'{np.mean(same):.2f} ({len(same)}) | {np.mean(other):.2f} ({len(other)}) | '
                  f"{'yes' if p95 <= TARGET_MS else 'NO'} |")
    return 0


if __name__ == '__main__':
    sys.exit(main())
