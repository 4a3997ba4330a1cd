"""Issue 28: what resizing in float (``resize_uint8: false``) changes against the old uint8 rounding.

For each encoder whose release resizes the float image (megaloc, boq, netvlad, gem) the same frames
are encoded twice, with the same weights: once rounded to whole 0-255 values after the resize (the
old behaviour, kept for older maps), once in float. Prints the grey-level change of the resized image
and the descriptor change (1 - cosine), beside the 1 - cosine between different frames (the scale
retrieval works at), plus the preprocessing time ratio float / uint8 (A/B alternated in one run;
the median, as the machine is shared). The default frame size, 450x600, is no encoder's input size,
so every encoder resizes. No released weights are available offline: the networks are randomly
initialised with seed 0 (NetVLAD's layer fitted on the frames), so the figures bound the effect of the
input change on these architectures, not on the trained models.

    .venv/bin/python benchmarks/bench_float_resize.py [--frames 4] [--size 450 600]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from vpr_ros.encoders import create_encoder  # noqa: E402
from vpr_ros.encoders.torch_encoder import resize_rgb  # noqa: E402

VARIANTS = {'megaloc': {}, 'boq': {}, 'boq_dinov2': {'backbone': 'dinov2_vitb14'}, 'netvlad': {}, 'gem': {}}


def grey_change(images: list[np.ndarray], size: tuple[int, int], interpolation: str) -> tuple[float, float]:
    diffs = [np.abs(resize_rgb(im.astype(np.float32), size, interpolation)
                    - resize_rgb(im, size, interpolation).astype(np.float32)) for im in images]
    return float(np.mean([d.mean() for d in diffs])), float(max(d.max() for d in diffs))


def preprocess_ratio(float_enc, uint8_enc, images: list[np.ndarray], repeats: int = 15) -> float:
    times = {True: [], False: []}
    for _ in range(repeats):
        for enc, key in ((float_enc, True), (uint8_enc, False)):
            t0 = time.perf_counter()
            enc.preprocess(images[:1])
            times[key].append(time.perf_counter() - t0)
    return float(np.median(times[True]) / np.median(times[False]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=8)
    parser.add_argument('--size', type=int, nargs=2, default=[450, 600], help='camera frame height width')
    parser.add_argument('--encoders', nargs='*', default=list(VARIANTS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    from vpr_ros.sample import render_traversal

    frames, _ = render_traversal('mapping', scale=0.2, image_size=tuple(args.size))
    step = max(1, len(frames) // args.frames)
    images = [f.rgb for f in frames[::step][:args.frames]]
    print(f'{len(images)} sample-world frames {args.size[0]}x{args.size[1]}, random seeded weights, '
          f'shared 2-core CPU')
    print(f'{"encoder":12s} {"input":>9s} {"grey mean":>9s} {"grey max":>8s} {"1-cos mean":>10s} '
          f'{"1-cos max":>9s} {"frames 1-cos":>12s} {"prep f/u8":>9s}')
    for name in args.encoders:
        config = {**VARIANTS[name], 'threads': 2, 'batch_size': 1}
        encoder = 'boq' if name == 'boq_dinov2' else name
        rounded = create_encoder(encoder, {**config, 'resize_uint8': True})
        exact = create_encoder(encoder, {**config, 'resize_uint8': False})
        if rounded.requires_fit:  # NetVLAD without weights: one layer, fitted once, given to both
            rounded.fit(images)
            exact.set_state(rounded.get_state())
        size = rounded.target_size(images[0].shape)
        mean_grey, max_grey = grey_change(images, size, rounded.interpolation)
        d_old, d_new = rounded.encode(images), exact.encode(images)
        cos = 1.0 - np.sum(d_old * d_new, axis=1)
        between = 1.0 - (d_new @ d_new.T)[np.triu_indices(len(images), 1)]
        ratio = preprocess_ratio(exact, rounded, images)
        print(f'{name:12s} {size[0]:>4d}x{size[1]:<4d} {mean_grey:9.3f} {max_grey:8.3f} {cos.mean():10.2e} '
              f'{cos.max():9.2e} {np.median(between):12.2e} {ratio:9.2f}')


if __name__ == '__main__':
    main()
