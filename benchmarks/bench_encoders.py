"""Encoder and pipeline figures (issue: core). Prints a table; no pass/fail.

For each encoder: ms/frame at batch 1 and 8; the full per-frame pipeline (decode an Image message
+ preprocess + encode + search a 300-place map) vs the bare model forward on the same input
(target: the pipeline adds <= 10 %); and map build images/s (bag decode + encode + store) vs
bare encode images/s.

    .venv/bin/python benchmarks/bench_encoders.py [--encoders effnet_gem sift_vlad ...] [--repeats 20]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from vpr_ros.encoders import create_encoder  # noqa: E402
from vpr_ros.frames import Frame, Pose, image_msg_to_rgb  # noqa: E402
from vpr_ros.localization import Localizer  # noqa: E402
from vpr_ros.mapdb.store import VprMap  # noqa: E402


class ImageMsg:
    def __init__(self, rgb: np.ndarray) -> None:
        self.height, self.width = rgb.shape[:2]
        self.encoding, self.is_bigendian, self.step = 'rgb8', 0, rgb.shape[1] * 3
        self.data = rgb.tobytes()


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """Sample-world frames when the sample module is available, else smooth random textures."""
    try:
        from vpr_ros.sample import render_traversal

        rendered, _ = render_traversal('mapping', seed=seed, scale=0.3)
        return [f.rgb for f in rendered[:n]]
    except ImportError:
        import cv2

        rng = np.random.default_rng(seed)
        return [cv2.resize((rng.random((12, 16, 3)) * 255).astype(np.uint8), (320, 240)) for _ in range(n)]


def timeit(fn, repeats: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats * 1e3


def bench(name: str, images: list[np.ndarray], repeats: int) -> dict[str, float]:
    import torch

    enc = create_encoder(name)
    if enc.requires_fit:
        enc.fit(images[:40])
    rows = {}
    rows['ms_b1'] = timeit(lambda: enc.describe(images[:1]), repeats)
    rows['ms_b8'] = timeit(lambda: enc.describe(images[:8]), max(2, repeats // 4)) / 8
    is_torch = hasattr(enc, 'model')
    if is_torch:
        x = enc.preprocess(images[:1])

        def bare():
            with torch.inference_mode():
                enc.model(x)
    else:
        bare = lambda: enc._encode(images[:1])  # noqa: E731
    rows['bare_ms'] = timeit(bare, repeats)
    vmap = VprMap.empty(enc.identity(), encoder_state=enc.get_state())
    rng = np.random.default_rng(0)
    for i in range(300):
        vmap.add(float(i), Pose((float(i), 0.0, 0.0)), enc.describe([images[i % len(images)]])[0]
                 if i < len(images) else _noise_like(enc, rng))
    loc = Localizer(vmap, enc, top_k=10)
    msg = ImageMsg(images[0])
    rows['pipeline_ms'] = timeit(lambda: loc.localize(image_msg_to_rgb(msg), 0.0), repeats)
    rows['pipeline_over_bare'] = rows['pipeline_ms'] / rows['bare_ms']
    # map build: bag decode + encode + store, vs bare encode throughput
    from vpr_ros.pipeline import build_map
    from vpr_ros.sources import open_source
    from vpr_ros.sources.bag import write_bag

    with tempfile.TemporaryDirectory() as tmp:
        n = 32
        write_bag(os.path.join(tmp, 'bag'),
                  [Frame(float(i), images[i % len(images)], Pose((float(i), 0.0, 0.0))) for i in range(n)])
        t0 = time.perf_counter()
        build_map(open_source(os.path.join(tmp, 'bag')), enc, os.path.join(tmp, 'map'), progress=False)
        rows['build_img_s'] = n / (time.perf_counter() - t0)
    rows['bare_encode_img_s'] = 1e3 / rows['ms_b8']
    rows['dim'] = enc.dim
    return rows


def _noise_like(enc, rng) -> np.ndarray:
    v = rng.normal(size=(1, enc.dim)).astype(np.float32)
    return v / np.linalg.norm(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--encoders', nargs='+',
                        default=['effnet_gem', 'raw_pixels', 'sift_vlad', 'orb_bovw'])
    parser.add_argument('--repeats', type=int, default=20)
    args = parser.parse_args()
    import torch

    images = frames(48)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'images {images[0].shape[1]}x{images[0].shape[0]}')
    head = ('encoder', 'dim', 'ms b=1', 'ms b=8', 'bare fwd ms', 'pipeline ms', 'pipeline/bare',
            'build img/s', 'bare img/s')
    print(' | '.join(head))
    print(' | '.join('---' for _ in head))
    for name in args.encoders:
        r = bench(name, images, args.repeats)
        print(f"{name} | {r['dim']} | {r['ms_b1']:.1f} | {r['ms_b8']:.1f} | {r['bare_ms']:.1f} | "
              f"{r['pipeline_ms']:.1f} | {r['pipeline_over_bare']:.3f} | {r['build_img_s']:.1f} | "
              f"{r['bare_encode_img_s']:.1f}")


if __name__ == '__main__':
    main()
