"""The aggregator zoo on this CPU (issue: zoo). Prints a table; no pass/fail.

For every encoder at its native input size: ms/frame at batch 1 and 8, parameters, descriptor
dim, bytes per map place, and the ratio of our encoder call (preprocess + forward + checks) to
the bare ``nn.Module`` forward on the same input (target <= 1.05). With ``--recall`` also the
Recall@1 of the training-free encoders on the sample world (query vs mapping, 25 m); encoders
whose weights cannot be had offline run with random weights, so their recall would mean nothing.

    .venv/bin/python benchmarks/bench_zoo.py [--encoders boq mixvpr ...] [--recall] [--scale 0.5]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from vpr_ros.encoders import available_encoders, create_encoder  # noqa: E402
from vpr_ros.encoders.catalog import parameter_count  # noqa: E402

TRAINING_FREE = ['effnet_gem', 'anyloc_vlad', 'segvlad', 'sift_vlad', 'orb_bovw', 'raw_pixels']


def best_of(fn, repeats: int) -> float:
    """Best (least disturbed) time in ms: a shared 2-core machine is noisy, the minimum is stable."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def speed_row(name: str, images: list[np.ndarray], repeats: int) -> dict:
    import torch

    from vpr_ros.sample import render_traversal

    enc = create_encoder(name)
    if enc.input_size and tuple(enc.input_size) != images[0].shape[:2]:
        # Frames rendered at the encoder's native size: the ratio then measures our wrapper, not a resize.
        frames, _ = render_traversal('mapping', scale=0.2, image_size=tuple(enc.input_size))
        images = [f.rgb for f in frames[:16]]
    if enc.requires_fit:
        enc.fit(images[:16])
    row = {'encoder': name, 'dim': enc.dim,
           'input': 'x'.join(map(str, enc.input_size or images[0].shape[:2])),
           'params_M': parameter_count(enc) / 1e6, 'kib_per_place': enc.dim * 4 / 1024}
    row['ms_b1'] = best_of(lambda: enc.describe(images[:1]), repeats)
    row['ms_b8'] = best_of(lambda: enc.describe(images[:8]), max(2, repeats // 3)) / 8
    if hasattr(enc, 'model') and not enc.multi_vector:
        x = enc.preprocess(images[:1])

        def bare():
            with torch.inference_mode():
                enc.model(x)
        row['bare_ms'] = best_of(bare, repeats)
        row['call_over_bare'] = best_of(lambda: enc.encode(images[:1]), repeats) / row['bare_ms']
    return row


def recall_row(name: str, sample_dir: str) -> float:
    from vpr_ros.evaluation.metrics import Thresholds
    from vpr_ros.localization import Localizer
    from vpr_ros.pipeline import build_map, evaluate
    from vpr_ros.sources import open_source

    with tempfile.TemporaryDirectory() as tmp:
        build_map(open_source(os.path.join(sample_dir, 'mapping')), create_encoder(name),
                  os.path.join(tmp, 'm'), progress=False)
        res = evaluate(Localizer.from_map(os.path.join(tmp, 'm'), top_k=10),
                       open_source(os.path.join(sample_dir, 'query')), None, Thresholds(25.0), progress=False)
    return res['retrieval']['recall']['R@1']


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--encoders', nargs='+', default=None)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--recall', action='store_true', help='also Recall@1 of the training-free encoders')
    parser.add_argument('--scale', type=float, default=0.5, help='sample world scale for --recall')
    args = parser.parse_args()
    logging.getLogger('vpr_ros').setLevel(logging.ERROR)  # random-init warnings are expected here
    import torch

    from vpr_ros.sample import render_traversal

    frames, _ = render_traversal('mapping', scale=0.2)
    images = [f.rgb for f in frames[:16]]
    names = args.encoders or available_encoders()
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; best of {args.repeats}')
    print('encoder | input | dim | params [M] | KiB/place (fp32) | ms b=1 | ms b=8 | call/bare forward')
    print('--- | --- | --- | --- | --- | --- | --- | ---')
    for name in names:
        r = speed_row(name, images, args.repeats)
        ratio = f"{r['call_over_bare']:.3f}" if 'call_over_bare' in r else 'n/a'
        print(f"{name} | {r['input']} | {r['dim']} | {r['params_M']:.2f} | {r['kib_per_place']:.1f} | "
              f"{r['ms_b1']:.1f} | {r['ms_b8']:.1f} | {ratio}", flush=True)
    if args.recall:
        from vpr_ros.sample import generate_sample

        with tempfile.TemporaryDirectory() as tmp:
            generate_sample(tmp, scale=args.scale, traversals=('mapping', 'query'), progress=False)
            print(f'\nRecall@1 (25 m), sample world scale {args.scale}, query vs mapping traversal')
            for name in [n for n in TRAINING_FREE if n in names or args.encoders is None]:
                print(f'{name}: {recall_row(name, tmp) * 100:.1f}%', flush=True)


if __name__ == '__main__':
    main()
