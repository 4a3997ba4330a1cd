"""Small helpers: smooth random fields, noise and colours for textures."""
from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np


def _smooth(rng: np.random.Generator, periods: tuple[float, float],
            terms: int = 4) -> Callable[[np.ndarray], np.ndarray]:
    """A random smooth function of x in about [-1, 1]: a sum of sines with periods in ``periods``."""
    per = rng.uniform(*periods, terms)
    amp = rng.uniform(0.5, 1.0, terms)
    phase = rng.uniform(0, 2 * math.pi, terms)
    norm = float(np.sqrt((amp ** 2).sum() / 2))  # about unit standard deviation before the clip

    def f(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)[..., None]
        return np.clip((amp * np.sin(2 * math.pi * x / per + phase)).sum(-1) / (1.6 * norm), -1, 1)
    return f


def _noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth value noise in [0, 1] of shape (h, w) with features about ``cell`` pixels wide."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    small = rng.random((gh, gw)).astype(np.float32)
    big = cv2.resize(small, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[:h, :w], 0, 1)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def _jitter(rng: np.random.Generator, colour: Sequence[float], amount: float) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float32) + rng.normal(0, amount, 3).astype(np.float32), 0.02, 0.98)


def _vivid(rng: np.random.Generator) -> np.ndarray:
    return _hsv(rng.random(), rng.uniform(0.55, 0.95), rng.uniform(0.55, 0.95))
