"""Billboard sprites: trees, lamps, road signs, cars, pedestrians, trucks."""
from __future__ import annotations

import numpy as np

from vpr_ros.sample.constants import SPRITE_PPM
from vpr_ros.sample.facades import _Canvas, _sign
from vpr_ros.sample.textures import _hsv, _jitter, _noise, _vivid


def _sprite_canvas(w_m: float, h_m: float) -> tuple[_Canvas, np.ndarray]:
    cv = _Canvas(w_m, h_m, np.zeros(3, np.float32), SPRITE_PPM)
    return cv, np.zeros((cv.h, cv.w), bool)


def _rgba(cv: _Canvas, alpha: np.ndarray) -> np.ndarray:
    return np.concatenate([np.clip(cv.img, 0, 1), alpha[..., None].astype(np.float32)], 2)


def _tree(seed: int, autumn: bool) -> np.ndarray:
    """A tree; the same seed gives the same shape in both seasons."""
    rng = np.random.default_rng(seed)
    w, h = rng.uniform(3.0, 6.0), rng.uniform(5.0, 9.0)
    cv, alpha = _sprite_canvas(w, h)
    _box(cv, alpha, (w / 2 - 0.15, 0, w / 2 + 0.15, h * 0.55), (0.3, 0.22, 0.15))
    yy, xx = np.mgrid[0:cv.h, 0:cv.w].astype(np.float32) / SPRITE_PPM
    yy = h - yy
    canopy = np.zeros_like(alpha)
    for _ in range(int(rng.integers(6, 12))):
        cx, cy = rng.uniform(0.3 * w, 0.7 * w), rng.uniform(0.45 * h, 0.8 * h)
        r = rng.uniform(0.22, 0.35) * min(w, h)
        canopy |= (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    leaf = _noise(rng, cv.h, cv.w, 4.0)
    canopy &= leaf > 0.18
    if autumn:
        canopy &= _noise(np.random.default_rng(seed + 1), cv.h, cv.w, 6.0) > 0.35  # leaves falling
        hue = rng.uniform(0.02, 0.13)
        colour = np.stack([_hsv(hue + 0.04 * v, 0.8, 0.45 + 0.4 * v) for v in (0.0, 1.0)])
    else:
        hue = rng.uniform(0.22, 0.33)
        colour = np.stack([_hsv(hue, 0.65, 0.15 + 0.25 * v) for v in (0.0, 1.0)])
    cv.img[canopy] = (colour[0] + (colour[1] - colour[0]) * leaf[canopy, None])
    return _rgba(cv, alpha | canopy)


def _lamp(rng: np.random.Generator) -> np.ndarray:
    cv, alpha = _sprite_canvas(1.4, 6.5)
    grey = _jitter(rng, (0.25, 0.27, 0.28), 0.03)
    for box, col in (((0.63, 0, 0.77, 6.3), grey), ((0.2, 6.1, 1.2, 6.3), grey),
                     ((0.15, 5.9, 0.55, 6.15), (0.9, 0.9, 0.8))):
        _box(cv, alpha, box, col)
    return _rgba(cv, alpha)


def _mark(alpha: np.ndarray, cv: _Canvas, x0: float, y0: float, x1: float, y1: float) -> None:
    c0, c1 = max(0, int(round(x0 * cv.ppm))), min(cv.w, int(round(x1 * cv.ppm)))
    r0, r1 = max(0, cv.h - int(round(y1 * cv.ppm))), min(cv.h, cv.h - int(round(y0 * cv.ppm)))
    alpha[r0:r1, c0:c1] = True


def _box(cv: _Canvas, alpha: np.ndarray, box: tuple[float, float, float, float], colour) -> np.ndarray:
    _mark(alpha, cv, *box)
    return cv.rect(*box, colour)


def _road_sign(rng: np.random.Generator) -> np.ndarray:
    cv, alpha = _sprite_canvas(0.8, 2.9)
    _box(cv, alpha, (0.36, 0, 0.44, 2.3), (0.5, 0.5, 0.52))
    colour = [(0.1, 0.25, 0.7), (0.8, 0.1, 0.1), (0.95, 0.8, 0.1), (0.1, 0.5, 0.25)][rng.integers(4)]
    _box(cv, alpha, (0.05, 2.2, 0.75, 2.9), (0.95, 0.95, 0.95))
    plate = _box(cv, alpha, (0.1, 2.25, 0.7, 2.85), colour)
    plate[plate.shape[0] // 3: 2 * plate.shape[0] // 3, plate.shape[1] // 4: 3 * plate.shape[1] // 4] = 0.95
    return _rgba(cv, alpha)


def _car(rng: np.random.Generator) -> np.ndarray:
    cv, alpha = _sprite_canvas(4.2, 1.5)
    paint = np.array([(0.9, 0.9, 0.9), (0.08, 0.08, 0.09), (0.6, 0.62, 0.64), (0.7, 0.1, 0.1),
                      (0.12, 0.2, 0.55), (0.2, 0.4, 0.25), (0.85, 0.7, 0.2)][rng.integers(7)], np.float32)
    _box(cv, alpha, (0.0, 0.3, 4.2, 0.95), paint)
    cab = rng.uniform(0.7, 1.2)
    _box(cv, alpha, (cab, 0.95, cab + 2.2, 1.45), paint * 0.9)
    _box(cv, alpha, (cab + 0.15, 1.0, cab + 2.05, 1.4), (0.12, 0.14, 0.18))
    _box(cv, alpha, (0.0, 0.55, 0.15, 0.75), (0.9, 0.85, 0.6))
    for x in (0.55, 3.05):
        _box(cv, alpha, (x, 0.0, x + 0.62, 0.55), (0.05, 0.05, 0.05))
    return _rgba(cv, alpha)


def _pedestrian(rng: np.random.Generator) -> np.ndarray:
    cv, alpha = _sprite_canvas(0.7, 1.8)
    _box(cv, alpha, (0.2, 0.0, 0.32, 0.85), _jitter(rng, (0.15, 0.15, 0.25), 0.08))
    _box(cv, alpha, (0.38, 0.0, 0.5, 0.85), _jitter(rng, (0.15, 0.15, 0.25), 0.08))
    _box(cv, alpha, (0.15, 0.85, 0.55, 1.5), _vivid(rng) * rng.uniform(0.4, 1.0))
    _box(cv, alpha, (0.05, 0.95, 0.15, 1.45), _vivid(rng) * 0.5)
    _box(cv, alpha, (0.55, 0.95, 0.65, 1.45), _vivid(rng) * 0.5)
    _box(cv, alpha, (0.25, 1.5, 0.45, 1.78), _hsv(0.07, rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.85)))
    return _rgba(cv, alpha)


def _truck(rng: np.random.Generator) -> np.ndarray:
    cv, alpha = _sprite_canvas(9.0, 3.3)
    body = _vivid(rng) if rng.random() < 0.5 else np.array((0.9, 0.9, 0.88), np.float32)
    _box(cv, alpha, (0.0, 0.5, 9.0, 3.3), body)
    if rng.random() < 0.5:  # a bus: a row of windows
        _box(cv, alpha, (0.3, 1.8, 8.7, 2.9), (0.12, 0.14, 0.18))
    else:  # a lorry with an advert
        _sign(cv, rng, 1.5, 1.2, 8.5, 3.0)
    for x in (1.0, 6.8):
        _box(cv, alpha, (x, 0.0, x + 0.9, 0.9), (0.05, 0.05, 0.05))
    return _rgba(cv, alpha)
