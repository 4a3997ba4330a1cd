"""Where BoQ looks: its cross-attention maps drawn over the image.

Each BoQ block has M learnable queries that cross-attend to the h x w feature tokens; the
attention weights (averaged over heads) say which image regions feed each query's output.
``explain_boq`` draws, over the network's input image, the mean over queries of every block and
the few queries of the last block with the most concentrated attention.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from vpr_ros.encoders.torch_encoder import resize_rgb
from vpr_ros.frames import read_image_file

TOP_QUERIES = 3


def _overlay(ax, rgb: np.ndarray, attention: np.ndarray, title: str) -> None:
    """Show ``rgb`` with a (h, w) attention map upsampled (bilinear) and min-max scaled on top."""
    heat = cv2.resize(attention.astype(np.float32), (rgb.shape[1], rgb.shape[0]),
                      interpolation=cv2.INTER_LINEAR)
    span = float(heat.max() - heat.min())
    heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    ax.imshow(rgb)
    ax.imshow(heat, cmap='jet', alpha=0.45, vmin=0.0, vmax=1.0)
    ax.set_title(title, fontsize=9)
    ax.axis('off')


def explain_boq(image_path: str, out_png: str, config: dict | None = None) -> str:
    """Render the BoQ cross-attention of ``image_path`` (encoder ``boq`` with ``config``) to ``out_png``.

    Top row: the image as the network sees it (resized to ``input_size``) and the mean attention
    over all queries of each block; bottom row: the ``TOP_QUERIES`` queries of the last block whose
    attention peaks highest. Returns the PNG path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from vpr_ros.encoders import create_encoder

    rgb = read_image_file(image_path)
    encoder = create_encoder('boq', config)
    attns, (h, w) = encoder.attention([rgb])
    maps = [a[0].numpy().reshape(-1, h, w) for a in attns]  # per block: (M, h, w)
    shown = resize_rgb(rgb, encoder.input_size, encoder.interpolation)

    last = maps[-1]
    top = np.argsort(-last.reshape(len(last), -1).max(axis=1))[:TOP_QUERIES]
    cols = max(1 + len(maps), len(top))
    fig = Figure(figsize=(3.2 * cols, 6.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis('off')
    axes[0, 0].imshow(shown)
    axes[0, 0].set_title(f'input {shown.shape[1]}x{shown.shape[0]} ({encoder.config["backbone"]})',
                         fontsize=9)
    for i, m in enumerate(maps):
        _overlay(axes[0, 1 + i], shown, m.mean(axis=0), f'block {i + 1}: mean of {len(m)} queries')
    for j, q in enumerate(top):
        _overlay(axes[1, j], shown, last[q], f'block {len(maps)}, query {int(q)}')
    fig.suptitle(f'BoQ cross-attention on a {h}x{w} token grid: {os.path.basename(image_path)}', fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png)
    return out_png
