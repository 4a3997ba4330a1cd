"""Peak resident memory of the vocabulary fit's images in build-map (issue 23, part 5).

build-map holds up to 400 keyframes for encoders that fit on the map (anyloc_vlad, the default,
included). It used to hold them at full resolution (100 4K frames: 2.9 GB RSS); now it holds what
``Encoder.fit_image`` returns, the frame at the encoder's input size. Each variant runs in its own
process (``ru_maxrss`` is a process peak): it decodes ``--frames`` synthetic frames one at a time
as a source does, keeps them as build-map keeps them, and fits the encoder on them. The fitted
state of the two variants is compared (identical by construction: see fit_image).

    .venv/bin/python benchmarks/bench_fit_memory.py [--frames 100] [--size 2160 3840]
        [--encoder anyloc_vlad]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _frame(i: int, size: tuple[int, int]) -> np.ndarray:
    import cv2

    small = np.random.default_rng(i).integers(0, 255, (9, 16, 3)).astype(np.uint8)
    return cv2.resize(small, size[::-1], interpolation=cv2.INTER_CUBIC)


def _child(frames: int, size: tuple[int, int], encoder_name: str, shrink: bool, state_path: str) -> None:
    from vpr_ros.encoders import create_encoder

    encoder = create_encoder(encoder_name, {'threads': 1})
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    keep = [encoder.fit_image(_frame(i, size)) if shrink else _frame(i, size) for i in range(frames)]
    held_mb = sum(im.nbytes for im in keep) / 2**20
    encoder.fit(keep)
    np.savez(state_path, **encoder.get_state())
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({'held_images_mb': round(held_mb, 1), 'peak_rss_mb': round(peak_kb / 1024, 1),
                      'rss_over_encoder_mb': round((peak_kb - base_kb) / 1024, 1),
                      'seconds': round(time.perf_counter() - t0, 1)}))


def fit_rss(frames: int, size: tuple[int, int], encoder: str = 'anyloc_vlad', shrink: bool = True,
            state_path: str | None = None) -> dict[str, Any]:
    """Peak RSS of one fit in a fresh process (``shrink``: fit_image, else full frames as before)."""
    state_path = state_path or os.path.join(tempfile.mkdtemp(prefix='vpr_fitmem_'), 'state.npz')
    done = subprocess.run([sys.executable, os.path.abspath(__file__), '--child', str(int(shrink)),
                           '--frames', str(frames), '--size', str(size[0]), str(size[1]),
                           '--encoder', encoder, '--state', state_path],
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'child failed')
    return {**json.loads(done.stdout.strip().splitlines()[-1]), 'state': state_path}


def same_state(a: str, b: str) -> bool:
    with np.load(a) as x, np.load(b) as y:
        return x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--frames', type=int, default=100)
    ap.add_argument('--size', type=int, nargs=2, default=[2160, 3840], metavar=('H', 'W'))
    ap.add_argument('--encoder', default='anyloc_vlad')
    ap.add_argument('--child', type=int, choices=[0, 1], help=argparse.SUPPRESS)
    ap.add_argument('--state', help=argparse.SUPPRESS)
    args = ap.parse_args()
    size = (args.size[0], args.size[1])
    if args.child is not None:
        _child(args.frames, size, args.encoder, bool(args.child), args.state)
        return 0
    full = fit_rss(args.frames, size, args.encoder, shrink=False)
    small = fit_rss(args.frames, size, args.encoder, shrink=True)
    print(json.dumps({'frames': args.frames, 'size': list(size), 'encoder': args.encoder,
                      'full_frames (before)': {k: v for k, v in full.items() if k != 'state'},
                      'fit_image (now)': {k: v for k, v in small.items() if k != 'state'},
                      'identical_fitted_state': same_state(full['state'], small['state']),
                      'load_avg_1_5_15': [round(v, 2) for v in os.getloadavg()]}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
