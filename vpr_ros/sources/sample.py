"""The procedurally rendered sample world: the project's embedded demo data.

A street loop (about 1.2 km at ``scale=1``) is lined with buildings whose facades are painted
procedurally from a seeded RNG: a few shared architectural styles (brick, plaster, glass,
concrete, shops, warehouses, timber) so that places can look alike, but every facade gets its
own colours, window grid, doors, signs with random "lettering", stripes and graffiti, so each
place stays unique. Trees, lamp posts and road signs stand on the pavement; parked cars,
pedestrians and trucks differ per traversal.

Frames are rendered with a 2D ray caster (one ray per image column against the facade line
segments, up to ``LAYERS`` hits per column so taller buildings behind show above nearer ones),
a perspective ground plane sampled from a top-down raster of the road, a sky with clouds and
a distant skyline, and billboard sprites with a depth test; all vectorised (numpy, cv2 remap/blur).

Three traversals are written as ROS 2 bags (``/camera/image_raw`` rgb8 about every
``FRAME_SPACING_M`` metres, i.e. 2 Hz at scale 1; ``/odom`` nav_msgs/Odometry at ``ODOM_HZ``,
offset from the image stamps so poses must be interpolated; ``/clock``):

* ``mapping``: a sunny day, right lane, about 1.2 laps (the overlap is a revisit for loop closure);
* ``query``: an overcast autumn evening (darker, gamma, warm tint, desaturated, noisier,
  blurrier, fog, other sun direction), 1-3 m to the left in the other lane, up to +-7 deg yaw
  wobble, more parked cars, pedestrians and trucks, 1.15 laps starting elsewhere;
* ``viewpoint``: one lap 5-6 m to the left with the camera yawed 28-36 deg to the left,
  so only part of each facade is shared with the mapping views.

Poses are camera poses in the ``map`` frame: position in metres, yaw = optical axis heading.
"""
from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from vpr_ros.errors import ConfigError, SourceError
from vpr_ros.frames import Frame, Pose
from vpr_ros.mapdb.local_features import CameraIntrinsics

TRAVERSALS = ('mapping', 'query', 'viewpoint')
STORAGES = ('sqlite3', 'mcap')

LOOP_M = 1200.0          # centreline length of one lap at scale 1
MIN_LOOP_M = 160.0       # shortest loop that still has streets with buildings on both sides
FRAME_SPACING_M = 4.0    # mean distance between images
CRUISE_MPS = 8.0
MIN_LAP_S = 45.0         # short test loops are driven slower so revisits stay > 30 s apart
ODOM_HZ = 20.0
ODOM_OFFSET_S = 0.0137   # odometry is not synchronised with the camera: poses must be interpolated

CAMERA_HEIGHT_M = 1.6
HFOV_DEG = 90.0
PITCH_DEG = 5.0
ROAD_HALF_M = 5.5
MAPPING_LANE_M = -1.5    # lateral offset from the centreline, + is left of the driving direction
PPM = 8.0                # facade texels per metre (level 0 of the mip chain)
MIP_LEVELS = 4
SPRITE_PPM = 16.0
GROUND_RES_M = 0.2
GROUND_LEVELS = 5
MAX_RANGE_M = 160.0
LAYERS = 3

# A campus-like loop (metres, counter-clockwise); scaled to the wanted length.
_SHAPE = np.array([(0, 0), (320, 0), (400, 70), (400, 200), (250, 260), (60, 240), (-20, 130)], np.float64)


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------
@dataclass
class SampleInfo:
    """What ``generate_sample`` wrote: bag path and image count per traversal, lap length."""

    out_dir: str
    bags: dict[str, str]
    frames: dict[str, int]
    route_length_m: float
    storage: str


def generate_sample(out_dir: str, *, seed: int = 0, storage: str = 'sqlite3', compressed: bool = False,
                    image_size: tuple[int, int] = (240, 320), traversals: Sequence[str] = TRAVERSALS,
                    scale: float = 1.0, progress: bool = True) -> SampleInfo:
    """Render the traversals and write each as the bag ``out_dir/<traversal>``.

    Refuses (SourceError) before rendering anything if one of the bags already exists.
    """
    from tqdm import tqdm

    from vpr_ros.sources.bag import write_bag

    if storage not in STORAGES:
        raise SourceError(f'unknown bag storage {storage!r} ({" or ".join(STORAGES)})')
    names = list(dict.fromkeys(traversals))
    for name in names:
        _check_args(name, image_size, scale)
    bags = {name: os.path.join(out_dir, name) for name in names}
    existing = [p for p in bags.values() if os.path.exists(p)]
    if existing:
        raise SourceError(f'{", ".join(existing)} already exist(s); refusing to overwrite sample bags '
                          '(remove them or choose another output directory)')
    os.makedirs(out_dir, exist_ok=True)
    counts: dict[str, int] = {}
    length = _world(int(seed), float(scale)).route.length
    for name in names:
        plan = _plan(name, seed, scale)
        frames = tqdm(_render_frames(plan, image_size), total=len(plan.image_stamps),
                      desc=f'sample {name}', unit='frame', disable=not progress, leave=False)
        counts[name] = write_bag(bags[name], frames, storage=storage, compressed=compressed,
                                 poses=plan.odometry())
    return SampleInfo(out_dir=out_dir, bags=bags, frames=counts, route_length_m=length, storage=storage)


def render_traversal(name: str, *, seed: int = 0, image_size: tuple[int, int] = (240, 320),
                     scale: float = 1.0) -> tuple[list[Frame], list[tuple[float, Pose]]]:
    """Render one traversal: frames with their ground-truth pose, and the odometry stream."""
    _check_args(name, image_size, scale)
    plan = _plan(name, seed, scale)
    return list(_render_frames(plan, image_size)), plan.odometry()


def sample_camera(image_size: tuple[int, int] = (240, 320)) -> CameraIntrinsics:
    """The pinhole the renderer projects with (``image_size`` = (height, width)): HFOV_DEG horizontal field
    of view, square pixels, the optical axis level with the ground. The renderer draws the camera's pitch as
    a shift of the horizon row, i.e. of the principal point: cy = (h - 1) / 2 + f tan(PITCH_DEG). A
    traversal's pitch wobble (0.3-1 deg) is not in it."""
    h, w = int(image_size[0]), int(image_size[1])
    f = (w / 2) / math.tan(math.radians(HFOV_DEG) / 2)
    cy = (h - 1) / 2 + f * math.tan(math.radians(PITCH_DEG))
    return CameraIntrinsics((f, 0.0, (w - 1) / 2, 0.0, f, cy, 0.0, 0.0, 1.0), (), 'plumb_bob', w, h)


def _check_args(name: str, image_size: Sequence[int], scale: float) -> None:
    if name not in TRAVERSALS:
        raise ConfigError(f'unknown sample traversal {name!r}; known: {", ".join(TRAVERSALS)}')
    if len(image_size) != 2 or min(int(v) for v in image_size) < 16:
        raise ConfigError(f'sample image_size must be (height, width), each >= 16; got {tuple(image_size)}')
    if not scale > 0:
        raise ConfigError(f'sample scale must be > 0; got {scale}')


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# Route
# ----------------------------------------------------------------------------------------------
class Route:
    """The closed centreline, resampled every ``step`` metres, with rounded corners."""

    def __init__(self, length_m: float, step: float = 0.5) -> None:
        pts = _densify(_SHAPE * (length_m / _perimeter(_SHAPE)), step)
        sigma = max(2, int(round(0.7 * length_m / LOOP_M * 12 / step + 6)))  # corner radius ~ 10 m
        k = np.exp(-0.5 * (np.arange(-3 * sigma, 3 * sigma + 1) / sigma) ** 2)
        k /= k.sum()
        padded = np.concatenate([pts[-3 * sigma:], pts, pts[:3 * sigma]])
        smooth = np.stack([np.convolve(padded[:, i], k, mode='valid') for i in range(2)], 1)
        smooth *= length_m / _perimeter(smooth)
        self.xy = _densify(smooth, step)
        self.step = _perimeter(self.xy) / len(self.xy)
        self.length = self.step * len(self.xy)
        tang = np.roll(self.xy, -1, 0) - np.roll(self.xy, 1, 0)
        self.tangent = tang / np.linalg.norm(tang, axis=1, keepdims=True)
        self.normal = np.stack([-self.tangent[:, 1], self.tangent[:, 0]], 1)  # points left
        heading = np.unwrap(np.arctan2(self.tangent[:, 1], self.tangent[:, 0]))
        curv = np.abs(np.gradient(heading)) / self.step
        self.curvature = np.convolve(np.concatenate([curv[-20:], curv, curv[:20]]), np.ones(41) / 41, 'valid')

    def at(self, s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point, unit tangent and left normal at arc length(s) ``s`` (wrapping around the loop)."""
        pos = (np.asarray(s, np.float64) % self.length) / self.step
        i0 = np.floor(pos).astype(np.int64) % len(self.xy)
        i1 = (i0 + 1) % len(self.xy)
        a = (pos - np.floor(pos))[..., None]
        xy = (1 - a) * self.xy[i0] + a * self.xy[i1]
        t = (1 - a) * self.tangent[i0] + a * self.tangent[i1]
        t /= np.linalg.norm(t, axis=-1, keepdims=True)
        return xy, t, np.stack([-t[..., 1], t[..., 0]], -1)


def _perimeter(pts: np.ndarray) -> float:
    return float(np.linalg.norm(np.roll(pts, -1, 0) - pts, axis=1).sum())


def _densify(pts: np.ndarray, step: float) -> np.ndarray:
    """Resample a closed polyline at (about) uniform arc-length steps."""
    closed = np.concatenate([pts, pts[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(8, int(round(cum[-1] / step)))
    s = np.arange(n) * (cum[-1] / n)
    return np.stack([np.interp(s, cum, closed[:, i]) for i in range(2)], 1)


# ----------------------------------------------------------------------------------------------
# Facade textures
# ----------------------------------------------------------------------------------------------
_STYLES = ('brick', 'plaster', 'glass', 'concrete', 'shop', 'warehouse', 'timber')
_STYLE_P = np.array([0.2, 0.2, 0.12, 0.14, 0.18, 0.08, 0.08])
_PALETTES: dict[str, list[tuple[float, float, float]]] = {
    'brick': [(0.55, 0.27, 0.2), (0.6, 0.36, 0.26), (0.42, 0.22, 0.18), (0.68, 0.52, 0.4)],
    'plaster': [(0.92, 0.86, 0.7), (0.86, 0.74, 0.6), (0.74, 0.82, 0.86), (0.9, 0.68, 0.6),
                (0.8, 0.86, 0.7), (0.95, 0.93, 0.88), (0.95, 0.8, 0.45)],
    'glass': [(0.22, 0.38, 0.5), (0.18, 0.26, 0.32), (0.32, 0.44, 0.38), (0.4, 0.34, 0.28)],
    'concrete': [(0.6, 0.6, 0.58), (0.72, 0.7, 0.66), (0.5, 0.5, 0.53)],
    'warehouse': [(0.55, 0.6, 0.62), (0.68, 0.3, 0.25), (0.3, 0.45, 0.6), (0.8, 0.78, 0.7),
                  (0.35, 0.5, 0.35)],
    'timber': [(0.55, 0.4, 0.25), (0.45, 0.32, 0.2), (0.66, 0.5, 0.35)],
}
_PALETTES['shop'] = _PALETTES['plaster'] + _PALETTES['brick'][:2]
_FRAMES = [(0.93, 0.93, 0.9), (0.18, 0.18, 0.18), (0.45, 0.32, 0.22), (0.35, 0.4, 0.35)]


class _Canvas:
    """A texture being painted, addressed in metres: x from the left, y up from the ground."""

    def __init__(self, w_m: float, h_m: float, colour: np.ndarray, ppm: float = PPM) -> None:
        self.ppm = ppm
        self.w, self.h = max(4, int(round(w_m * ppm))), max(4, int(round(h_m * ppm)))
        self.w_m, self.h_m = self.w / ppm, self.h / ppm
        self.img = np.empty((self.h, self.w, 3), np.float32)
        self.img[:] = colour

    def view(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        c0, c1 = max(0, int(round(x0 * self.ppm))), min(self.w, int(round(x1 * self.ppm)))
        r0, r1 = max(0, self.h - int(round(y1 * self.ppm))), min(self.h, self.h - int(round(y0 * self.ppm)))
        return self.img[r0:max(r0, r1), c0:max(c0, c1)]

    def rect(self, x0: float, y0: float, x1: float, y1: float,
             colour: Sequence[float] | np.ndarray) -> np.ndarray:
        v = self.view(x0, y0, x1, y1)
        v[:] = colour
        return v


def _facade_params(rng: np.random.Generator, style: str) -> dict:
    """The random architectural parameters of one building (shared by a terrace of look-alikes)."""
    ww = rng.uniform(0.8, 1.8)
    return dict(
        style=style, base=_jitter(rng, _PALETTES[style][rng.integers(len(_PALETTES[style]))], 0.05),
        fh=rng.uniform(2.9, 3.6), gf=rng.uniform(3.4, 4.4), ww=ww, wh=rng.uniform(1.2, 1.9),
        sp=ww + rng.uniform(0.6, 2.2), margin=rng.uniform(0.4, 1.8),
        frame=np.array(_FRAMES[rng.integers(len(_FRAMES))], np.float32),
        glass=_jitter(rng, (0.16, 0.2, 0.26), 0.04), shutters=rng.random() < 0.45,
        shutter=_hsv(rng.choice([0.33, 0.58, 0.08, 0.0]), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.6)),
        balcony=rng.random() < 0.3, cross=rng.random() < 0.4, skip=int(rng.choice([0, 0, 0, 3, 4, 5])),
        panel=rng.uniform(1.2, 2.6), slat=rng.uniform(0.25, 0.45),
        cornice=_jitter(rng, (0.5, 0.48, 0.45), 0.12), cornice_h=rng.uniform(0.3, 0.9))


def _material(cv: _Canvas, rng: np.random.Generator, p: dict) -> None:
    img, style = cv.img, p['style']
    rows, cols = np.arange(cv.h)[:, None], np.arange(cv.w)[None, :]
    if style in ('brick', 'shop') and rng.random() < 0.8:
        course = 3
        brick = rng.uniform(0.85, 1.12, (cv.h // course + 1, cv.w // 6 + 2)).astype(np.float32)
        shift = (rows // course) % 2 * 3
        tone = brick[rows // course, (cols + shift) // 6]
        tone = np.where(rows % course == 0, 0.8, tone)
        img *= tone[..., None]
    elif style == 'concrete':
        pw = max(4, int(p['panel'] * PPM))
        tones = rng.uniform(0.9, 1.1, (cv.h // 16 + 2, cv.w // pw + 2)).astype(np.float32)
        tone = tones[rows // 24, cols // pw]
        tone = np.where((cols % pw == 0) | (rows % 24 == 0), 0.7, tone)
        img *= tone[..., None]
    elif style == 'warehouse':
        img *= (0.86 + 0.14 * np.sin(2 * math.pi * cols / 4.0)).astype(np.float32)[..., None]
    elif style == 'timber':
        sw = max(2, int(p['slat'] * PPM))
        tones = rng.uniform(0.78, 1.18, cv.w // sw + 2).astype(np.float32)
        tone = np.broadcast_to(np.where(cols % sw == 0, 0.6, tones[cols // sw]), (cv.h, cv.w))
        img *= tone[..., None]
    img *= (0.88 + 0.24 * _noise(rng, cv.h, cv.w, 24.0))[..., None]


def _window_columns(w_m: float, ww: float, sp: float, margin: float) -> np.ndarray:
    n = max(1, int((w_m - 2 * margin - ww) // sp) + 1)
    x0 = (w_m - ((n - 1) * sp + ww)) / 2
    return x0 + sp * np.arange(n)


def _windows(cv: _Canvas, rng: np.random.Generator, p: dict, y_start: float, y_stop: float) -> None:
    fh, ww, wh = p['fh'], p['ww'], min(p['wh'], p['fh'] - 0.7)
    xs = _window_columns(cv.w_m, ww, p['sp'], p['margin'])
    skip = p['skip']
    blank = int(rng.integers(skip)) if skip else -1
    floor = 0
    y = y_start
    while y + fh <= y_stop + 0.3:
        y0 = y + (fh - wh) * 0.55
        if p['balcony'] and floor % 2 == 1:
            bal = cv.rect(0.3, y0 - 0.15, cv.w_m - 0.3, y0 + 0.9, p['cornice'] * 0.9)
            bal[:, ::3] *= 0.6
        for j, x in enumerate(xs):
            if skip and j % skip == blank:
                continue
            cv.rect(x - 0.12, y0 - 0.15, x + ww + 0.12, y0 + wh + 0.1, p['frame'])
            g = cv.rect(x, y0, x + ww, y0 + wh, p['glass'] * rng.uniform(0.75, 1.3))
            if g.size:
                g *= np.linspace(1.45, 0.8, g.shape[0], dtype=np.float32)[:, None, None]
                r = rng.random()
                if r < 0.25:  # curtains or blinds of a random colour
                    cv.rect(x, y0 + wh * rng.uniform(0.3, 0.8), x + ww, y0 + wh,
                            _hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.55, 0.9)))
                elif r < 0.35:
                    cv.rect(x + 0.05, y0 + 0.05, x + ww - 0.05, y0 + wh - 0.05, (0.85, 0.75, 0.45))  # lit
            if p['cross']:
                cv.rect(x + ww / 2 - 0.05, y0, x + ww / 2 + 0.05, y0 + wh, p['frame'])
            if p['shutters'] and p['style'] in ('plaster', 'shop'):
                cv.rect(x - 0.12 - ww / 2, y0, x - 0.12, y0 + wh, p['shutter'])
                cv.rect(x + ww + 0.12, y0, x + ww + 0.12 + ww / 2, y0 + wh, p['shutter'])
        y += fh
        floor += 1


def _curtain_wall(cv: _Canvas, rng: np.random.Generator, p: dict, y_start: float, y_stop: float) -> None:
    pw, fh = p['panel'], p['fh']
    mull = p['frame'] * 0.8
    y = y_start
    while y + fh <= y_stop + 0.3:
        cv.rect(0, y, cv.w_m, y + 0.9, p['cornice'])
        band = cv.view(0, y + 0.9, cv.w_m, y + fh)
        n = max(1, int(cv.w_m / pw))
        tones = rng.uniform(0.75, 1.3, n + 1).astype(np.float32)
        cols = (np.arange(band.shape[1]) / (pw * PPM)).astype(np.int64)
        band[:] = p['base'] * tones[np.minimum(cols, n)][None, :, None]
        band *= np.linspace(1.5, 0.75, band.shape[0], dtype=np.float32)[:, None, None]
        band[:, (np.arange(band.shape[1]) % max(3, int(pw * PPM))) == 0] = mull
        y += fh


def _sign(cv: _Canvas, rng: np.random.Generator, x0: float, y0: float, x1: float, y1: float) -> None:
    """A coloured sign board with a random line of blocky "letters"."""
    bg = _vivid(rng)
    fg = np.array((0.05, 0.05, 0.05) if bg.mean() > 0.55 else (0.97, 0.95, 0.85), np.float32)
    if rng.random() < 0.3:
        fg = np.array((0.98, 0.85, 0.1), np.float32)
    cv.rect(x0, y0, x1, y1, bg)
    h = y1 - y0
    text = cv.view(x0 + 0.15 * h, y0 + 0.2 * h, x1 - 0.15 * h, y1 - 0.2 * h)
    n = max(1, int(text.shape[1] / max(2.0, 0.6 * text.shape[0] * 4 / 5)))
    if text.size == 0:
        return
    glyphs = rng.random((5, n, 4)) < 0.55
    glyphs[:, :, 3] = False  # letter spacing
    glyphs[:, rng.random(n) < 0.15] = False  # word gaps
    mask = cv2.resize(glyphs.reshape(5, -1).astype(np.uint8), (text.shape[1], text.shape[0]),
                      interpolation=cv2.INTER_NEAREST).astype(bool)
    text[mask] = fg


def _ground_floor(cv: _Canvas, rng: np.random.Generator, p: dict, shop: bool) -> None:
    gf = p['gf']
    if rng.random() < 0.5:
        cv.rect(0, 0, cv.w_m, gf - 0.2, _jitter(rng, (0.55, 0.52, 0.48), 0.12))  # stone plinth
    if shop:
        x = 0.3
        while x < cv.w_m - 2.5:
            unit = min(cv.w_m - 0.3 - x, rng.uniform(4.5, 9.0))
            if unit < 3.0:
                break
            g = cv.rect(x + 0.3, 0.45, x + unit - 1.6, gf - 1.1, p['glass'] * 1.2)
            for _ in range(int(rng.integers(2, 7))):  # goods on display
                gx = rng.uniform(x + 0.4, x + unit - 2.0)
                cv.rect(gx, 0.45, gx + rng.uniform(0.3, 0.9), rng.uniform(0.8, 1.8), _vivid(rng) * 0.8)
            if g.size:
                g *= np.linspace(1.3, 0.9, g.shape[0], dtype=np.float32)[:, None, None]
            cv.rect(x + unit - 1.45, 0.0, x + unit - 0.3, 2.4, p['frame'])
            cv.rect(x + unit - 1.35, 0.0, x + unit - 0.4, 2.3, p['glass'] * 1.1)
            if rng.random() < 0.6:  # striped awning
                aw = cv.view(x + 0.1, gf - 1.1, x + unit - 0.1, gf - 0.55)
                c1, c2 = _vivid(rng), np.array((0.95, 0.95, 0.92), np.float32)
                stripe = (np.arange(aw.shape[1]) // max(2, int(rng.uniform(0.3, 0.6) * PPM))) % 2 == 0
                aw[:, stripe] = c1
                aw[:, ~stripe] = c2 if rng.random() < 0.6 else c1 * 0.6
            _sign(cv, rng, x + 0.2, gf - 0.55, x + unit - 0.2, gf - 0.05)
            x += unit + rng.uniform(0.0, 0.6)
    else:
        xs = _window_columns(cv.w_m, p['ww'], p['sp'], p['margin'])
        door = int(rng.integers(len(xs)))
        for j, x in enumerate(xs):
            if j == door:
                dw = rng.uniform(1.1, 2.4)
                cv.rect(x - 0.15, 0, x + dw + 0.15, 2.6, p['frame'])
                cv.rect(x, 0, x + dw, 2.45, _hsv(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.7)))
                cv.rect(x + 0.2, 1.6, x + dw - 0.2, 2.3, p['glass'])
            else:
                cv.rect(x - 0.1, 1.0, x + p['ww'] + 0.1, gf - 0.6, p['frame'])
                cv.rect(x, 1.1, x + p['ww'], gf - 0.7, p['glass'] * rng.uniform(0.8, 1.2))
        if rng.random() < 0.6:
            sw = rng.uniform(1.5, min(6.0, cv.w_m * 0.6))
            sx = rng.uniform(0.2, max(0.3, cv.w_m - sw - 0.2))
            sy = rng.uniform(gf - 1.0, gf + 0.3)
            _sign(cv, rng, sx, sy, sx + sw, sy + rng.uniform(0.45, 0.8))
    if rng.random() < 0.3:  # posters
        for _ in range(int(rng.integers(1, 4))):
            px = rng.uniform(0.2, max(0.3, cv.w_m - 1.0))
            poster = cv.rect(px, 0.8, px + 0.7, 1.8, _vivid(rng))
            if poster.size:
                poster[poster.shape[0] // 2:] = _vivid(rng)
    if rng.random() < 0.3:  # graffiti: a few random thick strokes
        for _ in range(int(rng.integers(1, 4))):
            n = int(rng.integers(4, 9))
            x0 = rng.uniform(0, cv.w_m)
            pts = np.stack([x0 + np.cumsum(rng.normal(0.35, 0.4, n)), rng.uniform(0.2, 2.2, n)], 1)
            px = np.stack([pts[:, 0] * PPM, cv.h - pts[:, 1] * PPM], 1).astype(np.int32)
            colour = tuple(float(c) for c in _vivid(rng))
            cv2.polylines(cv.img, [px], False, colour, int(rng.integers(1, 4)), cv2.LINE_8)


def _paint_facade(rng: np.random.Generator, p: dict, w_m: float, h_m: float, front: bool,
                  shop: bool = False) -> np.ndarray:
    """One facade texture (uint8 RGB, ``PPM`` texels per metre, row 0 at the roof line)."""
    cv = _Canvas(w_m, h_m, p['base'])
    _material(cv, rng, p)
    top = cv.h_m - p['cornice_h'] - 0.2
    start = p['gf'] if front else 0.6
    if p['style'] == 'glass':
        _curtain_wall(cv, rng, p, start, top)
    elif p['style'] == 'warehouse' and front:
        door_w = rng.uniform(3.0, 5.0)
        dx = rng.uniform(0.5, max(0.6, cv.w_m - door_w - 0.5))
        d = cv.rect(dx, 0, dx + door_w, min(4.2, top - 0.5), _jitter(rng, (0.6, 0.6, 0.6), 0.15))
        d[::3] *= 0.75
        for x in _window_columns(cv.w_m, 1.6, rng.uniform(3, 6), 0.8):
            cv.rect(x, top - 1.4, x + 1.6, top - 0.6, p['glass'])
    else:
        _windows(cv, rng, p, start, top)
    if front and p['style'] != 'warehouse':
        _ground_floor(cv, rng, p, shop)
    if rng.random() < 0.35:  # a painted band between floors
        y = p['gf'] + p['fh'] * rng.integers(0, 3) - 0.1
        cv.rect(0, y, cv.w_m, y + rng.uniform(0.2, 0.5), _vivid(rng) * 0.8)
    cv.rect(0, cv.h_m - p['cornice_h'], cv.w_m, cv.h_m, p['cornice'])
    dirt = np.clip(np.linspace(0.8, 1.0, min(cv.h, 8)), 0, 1).astype(np.float32)
    cv.img[cv.h - len(dirt):] *= dirt[::-1, None, None]
    return (np.clip(cv.img, 0, 1) * 255 + 0.5).astype(np.uint8)


class _Atlas:
    """Textures with their mip chains in one flat RGB array, addressed by (texture, level)."""

    def __init__(self, textures: list[np.ndarray]) -> None:
        chunks, offsets, widths, heights = [], [], [], []
        pos = 0
        for tex in textures:
            offs, ws, hs = [], [], []
            level = tex
            for _ in range(MIP_LEVELS):
                offs.append(pos)
                hs.append(level.shape[0])
                ws.append(level.shape[1])
                chunks.append(level.reshape(-1, 3))
                pos += level.shape[0] * level.shape[1]
                level = cv2.resize(level, (max(1, level.shape[1] // 2), max(1, level.shape[0] // 2)),
                                   interpolation=cv2.INTER_AREA)
            offsets.append(offs)
            widths.append(ws)
            heights.append(hs)
        self.flat = np.concatenate(chunks)
        self.offset = np.array(offsets, np.int64)
        self.width = np.array(widths, np.int64)
        self.height = np.array(heights, np.int64)


# ----------------------------------------------------------------------------------------------
# Sprites (billboards)
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# World
# ----------------------------------------------------------------------------------------------
@dataclass
class World:
    """Everything static: route, facade segments and their textures, ground raster, sky, street furniture."""

    route: Route
    seg_a: np.ndarray       # (S, 2) segment start
    seg_e: np.ndarray       # (S, 2) end - start; buildings are counter-clockwise, normal = outward
    seg_n: np.ndarray       # (S, 2) outward unit normal
    seg_len: np.ndarray
    seg_mid: np.ndarray
    seg_tex: np.ndarray
    seg_u0: np.ndarray      # texture u (metres) at the segment start
    seg_h: np.ndarray       # building height (m)
    atlas: _Atlas
    ground: list[np.ndarray]
    ground_origin: np.ndarray
    skyline: np.ndarray     # (N_az,) elevation (rad) of the distant skyline
    tree_seeds: list[int]
    furniture: list[tuple[float, float, str, int]]  # x, y, kind, variant
    occupied: np.ndarray    # bool raster (ground grid): inside a building
    n_buildings: int


def _world_rng(seed: int, what: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5A3F1E, what])


@lru_cache(maxsize=2)
def _world(seed: int, scale: float) -> World:
    rng = _world_rng(seed, 0)
    length = max(MIN_LOOP_M, LOOP_M * scale)
    route = Route(length)
    lo = route.xy.min(0) - 70.0
    hi = route.xy.max(0) + 70.0
    gh, gw = (int(np.ceil((hi - lo)[1] / GROUND_RES_M)), int(np.ceil((hi - lo)[0] / GROUND_RES_M)))

    def to_px(xy: np.ndarray) -> np.ndarray:  # 2 bits of sub-pixel precision for cv2 drawing
        return np.round((np.asarray(xy) - lo) / GROUND_RES_M * 4).astype(np.int32)

    centre_px = to_px(route.xy)
    keepout = np.zeros((gh, gw), np.uint8)
    cv2.polylines(keepout, [centre_px], True, 1, int(2 * (ROAD_HALF_M + 1.5) / GROUND_RES_M), cv2.LINE_8, 2)
    occupied = np.zeros((gh, gw), np.uint8)

    textures: list[np.ndarray] = []
    segs: list[tuple] = []  # (a, b, tex, u0, height)
    n_buildings = 0
    for row in ('front', 'back'):
        for side in (1.0, -1.0):
            s = rng.uniform(0, 8)
            params = None
            while s < route.length - 6:
                if row == 'front':
                    w, depth, sb = rng.uniform(8, 22), rng.uniform(9, 16), rng.uniform(9, 12.5)
                    height = rng.uniform(6.5, 22)
                else:
                    w, depth, sb = rng.uniform(15, 32), rng.uniform(12, 22), rng.uniform(28, 40)
                    height = rng.uniform(16, 42)
                gap = rng.choice([0.0, rng.uniform(1, 4), rng.uniform(6, 16)], p=[0.45, 0.4, 0.15])
                xy, t, n = route.at(s + w / 2)
                front = xy + side * sb * n
                corners = np.array([front - t * w / 2, front + t * w / 2,
                                    front + t * w / 2 + side * n * depth,
                                    front - t * w / 2 + side * n * depth])
                s += w + gap
                if not _free(corners, keepout, occupied, to_px):
                    continue
                cv2.fillPoly(occupied, [to_px(corners)], 1, cv2.LINE_8, 2)
                if row == 'front' and params is not None and rng.random() < 0.3:
                    params = dict(params, base=_jitter(rng, params['base'], 0.06))  # terrace of look-alikes
                else:
                    style = _STYLES[rng.choice(len(_STYLES), p=_STYLE_P)] if row == 'front' else \
                        ('brick', 'plaster', 'glass', 'concrete')[rng.integers(4)]
                    params = _facade_params(rng, style)
                h = round(height * PPM) / PPM
                front_tex = len(textures)
                textures.append(_paint_facade(rng, params, w, h, front=row == 'front',
                                              shop=params['style'] == 'shop' or rng.random() < 0.15))
                textures.append(_paint_facade(rng, params, rng.uniform(10, 20), h, front=False))
                if _area(corners) < 0:
                    corners = corners[::-1]
                mids = (corners + np.roll(corners, -1, 0)) / 2
                street = int(np.argmin(np.linalg.norm(mids - xy, axis=1)))
                u = 0.0  # the side texture runs on around the other three walls
                for i in range(4):
                    a, b = corners[i], corners[(i + 1) % 4]
                    segs.append((a, b, front_tex, 0.0, h) if i == street else (a, b, front_tex + 1, u, h))
                    u += float(np.linalg.norm(b - a))
                n_buildings += 1

    a = np.array([s[0] for s in segs], np.float64)
    b = np.array([s[1] for s in segs], np.float64)
    e = b - a
    seg_len = np.linalg.norm(e, axis=1)
    normal = np.stack([e[:, 1], -e[:, 0]], 1) / seg_len[:, None]
    furniture, tree_seeds = _furniture(rng, route, occupied, lo)
    ground = _ground(rng, route, lo, (gh, gw), to_px)
    skyline = _skyline(rng)
    return World(route=route, seg_a=a.astype(np.float32), seg_e=e.astype(np.float32),
                 seg_n=normal.astype(np.float32), seg_len=seg_len.astype(np.float32),
                 seg_mid=((a + b) / 2).astype(np.float32),
                 seg_tex=np.array([s[2] for s in segs], np.int64),
                 seg_u0=np.array([s[3] for s in segs], np.float32),
                 seg_h=np.array([s[4] for s in segs], np.float32), atlas=_Atlas(textures), ground=ground,
                 ground_origin=lo.astype(np.float64), skyline=skyline, tree_seeds=tree_seeds,
                 furniture=furniture, occupied=occupied.astype(bool), n_buildings=n_buildings)


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _free(corners: np.ndarray, keepout: np.ndarray, occupied: np.ndarray,
          to_px: Callable[[np.ndarray], np.ndarray]) -> bool:
    """True if the footprint (corners pushed out by 2 m) is clear of the road and of other buildings."""
    centre = corners.mean(0)
    grown = centre + (corners - centre) * (1 + 2.0 / np.linalg.norm(corners - centre, axis=1, keepdims=True))
    px = to_px(grown) // 4
    x0, y0 = px.min(0)
    x1, y1 = px.max(0) + 1
    if x0 < 0 or y0 < 0 or x1 >= keepout.shape[1] or y1 >= keepout.shape[0]:
        return False
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [px - (x0, y0)], 1)
    region = keepout[y0:y1, x0:x1] | occupied[y0:y1, x0:x1]
    return not bool((mask & region).any())


def _furniture(rng: np.random.Generator, route: Route, occupied: np.ndarray,
               lo: np.ndarray) -> tuple[list[tuple[float, float, str, int]], list[int]]:
    """Trees in avenue stretches, regularly spaced lamp posts, a few road signs."""
    items: list[tuple[float, float, str, int]] = []
    tree_seeds = [int(v) for v in rng.integers(0, 2 ** 31, 12)]

    def place(s: float, d: float, kind: str, variant: int) -> None:
        xy, _, n = route.at(s)
        p = xy + d * n
        r, c = ((p - lo) / GROUND_RES_M).astype(int)[::-1]
        if 0 <= r < occupied.shape[0] and 0 <= c < occupied.shape[1] and not occupied[r, c]:
            items.append((float(p[0]), float(p[1]), kind, variant))

    for side in (1.0, -1.0):
        s = 0.0
        while s < route.length:
            stretch = rng.uniform(40, 120)
            if rng.random() < 0.55:
                t = s + rng.uniform(0, 6)
                while t < min(s + stretch, route.length):
                    place(t, side * rng.uniform(ROAD_HALF_M + 1.3, ROAD_HALF_M + 2.5), 'tree',
                          int(rng.integers(len(tree_seeds))))
                    t += rng.uniform(7, 13)
            s += stretch
        for s in np.arange(rng.uniform(0, 25), route.length, 28.0):
            place(s, side * (ROAD_HALF_M + 0.6), 'lamp', 0)
        for s in np.sort(rng.uniform(0, route.length, max(1, int(route.length / 70)))):
            place(s, side * (ROAD_HALF_M + 0.9), 'sign', int(rng.integers(8)))
    return items, tree_seeds


def _ground(rng: np.random.Generator, route: Route, lo: np.ndarray, shape: tuple[int, int],
            to_px: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
    """Top-down ground raster (paving, grass, kerbs, asphalt, markings) with its mip chain."""
    gh, gw = shape
    px_per_m = 1.0 / GROUND_RES_M
    yy, xx = np.mgrid[0:gh, 0:gw]
    paving = np.array((0.6, 0.58, 0.55), np.float32)
    tiles = np.where((yy % 5 == 0) | (xx % 5 == 0), 0.85, 1.0).astype(np.float32)
    img = paving[None, None, :] * tiles[..., None]
    img *= (0.85 + 0.3 * _noise(rng, gh, gw, 60.0))[..., None]
    grass = _noise(rng, gh, gw, 150.0) > 0.62
    far = np.zeros((gh, gw), np.uint8)
    cv2.polylines(far, [to_px(route.xy)], True, 1, int(2 * (ROAD_HALF_M + 4.0) * px_per_m), cv2.LINE_8, 2)
    grass &= far == 0
    img[grass] = (np.array((0.25, 0.38, 0.15), np.float32)
                  * (0.8 + 0.4 * _noise(rng, gh, gw, 4.0)[grass, None]))
    del yy, xx, tiles, grass, far

    img8 = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    del img
    centre = [to_px(route.xy)]
    cv2.polylines(img8, centre, True, (170, 168, 160), int(2 * (ROAD_HALF_M + 0.3) * px_per_m),
                  cv2.LINE_AA, 2)
    road = np.zeros((gh, gw), np.uint8)
    cv2.polylines(road, centre, True, 1, int(2 * ROAD_HALF_M * px_per_m), cv2.LINE_8, 2)
    asphalt = (70 + 22 * _noise(rng, gh, gw, 3.0) + 14 * _noise(rng, gh, gw, 40.0)).astype(np.uint8)
    on_road = road.astype(bool)
    img8[on_road] = asphalt[on_road, None]
    for _ in range(int(route.length / 25)):  # patches and manholes
        xy, t, n = route.at(rng.uniform(0, route.length))
        p = to_px(xy + n * rng.uniform(-ROAD_HALF_M + 1, ROAD_HALF_M - 1))
        if rng.random() < 0.5:
            cv2.circle(img8, tuple(int(v) for v in p), int(0.35 * px_per_m * 4), (45, 45, 48), -1,
                       cv2.LINE_AA, 2)
        else:
            axes = (int(rng.uniform(1, 4) * px_per_m * 4), int(rng.uniform(0.5, 2) * px_per_m * 4))
            tone = int(rng.uniform(50, 100))
            cv2.ellipse(img8, tuple(int(v) for v in p), axes, float(np.degrees(np.arctan2(t[1], t[0]))),
                        0, 360, (tone, tone, tone + 2), -1, cv2.LINE_AA, 2)
    white = (215, 215, 205)
    for d in (ROAD_HALF_M - 0.4, -(ROAD_HALF_M - 0.4)):
        cv2.polylines(img8, [to_px(route.xy + d * route.normal)], True, white, 1, cv2.LINE_AA, 2)
    s = np.arange(len(route.xy)) * route.step
    dash = (s % 9.0) < 3.0
    starts = np.flatnonzero(dash & ~np.roll(dash, 1))
    pieces = []
    for i in starts:
        j = i
        while dash[j % len(dash)] and j - i < 20:
            j += 1
        pieces.append(to_px(route.xy[np.arange(i, j) % len(dash)]))
    cv2.polylines(img8, pieces, False, white, 1, cv2.LINE_AA, 2)
    for sc in np.arange(rng.uniform(20, 80), route.length, rng.uniform(110, 170)):  # zebra crossings
        xy, t, n = route.at(sc)
        stripes = []
        for d in np.arange(-ROAD_HALF_M + 0.8, ROAD_HALF_M - 0.6, 1.0):
            c = xy + n * d
            stripes.append(to_px(np.array([c - 1.5 * t - 0.25 * n, c + 1.5 * t - 0.25 * n,
                                           c + 1.5 * t + 0.25 * n, c - 1.5 * t + 0.25 * n])))
        cv2.fillPoly(img8, stripes, white, cv2.LINE_AA, 2)
    levels = [img8]
    for _ in range(GROUND_LEVELS - 1):
        levels.append(cv2.pyrDown(levels[-1]))
    return levels


def _skyline(rng: np.random.Generator, n: int = 2048) -> np.ndarray:
    """Elevation (rad) of a distant city skyline as a function of azimuth: blocks of towers."""
    out = np.zeros(n, np.float32)
    i = 0
    while i < n:
        w = int(rng.integers(6, 40))
        out[i:i + w] = math.radians(rng.uniform(0.3, 4.5)) if rng.random() < 0.75 else math.radians(0.2)
        i += w
    return out


# ----------------------------------------------------------------------------------------------
# Conditions and traversal plans
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Condition:
    """Scene lighting/weather and camera response of one traversal."""

    sun_azimuth: float
    sun_elevation: float
    sun: float
    ambient: float
    zenith: tuple[float, float, float]
    horizon: tuple[float, float, float]
    cloudiness: float
    fog_m: float
    autumn: bool
    exposure: float
    exposure_var: float
    gamma: float
    tint: tuple[float, float, float]
    saturation: float
    contrast: float
    noise: float
    blur: float
    motion_blur_p: float
    vignette: float
    cars_per_100m: float
    pedestrians_per_100m: float
    trucks_per_km: float
    cars_left: bool = True


_CONDITIONS = {
    'mapping': Condition(sun_azimuth=0.8, sun_elevation=0.75, sun=0.55, ambient=0.62,
                         zenith=(0.32, 0.5, 0.85), horizon=(0.75, 0.84, 0.95), cloudiness=0.25, fog_m=450.0,
                         autumn=False, exposure=1.0, exposure_var=0.03, gamma=1.0, tint=(1.0, 1.0, 1.0),
                         saturation=1.0, contrast=1.0, noise=1.5, blur=0.5, motion_blur_p=0.0, vignette=0.1,
                         cars_per_100m=2.0, pedestrians_per_100m=0.8, trucks_per_km=1.0),
    'query': Condition(sun_azimuth=3.9, sun_elevation=0.2, sun=0.3, ambient=0.58,
                       zenith=(0.45, 0.47, 0.52), horizon=(0.78, 0.72, 0.66), cloudiness=0.75, fog_m=300.0,
                       autumn=True, exposure=0.85, exposure_var=0.1, gamma=1.1, tint=(1.06, 1.0, 0.88),
                       saturation=0.75, contrast=0.92, noise=2.0, blur=0.6, motion_blur_p=0.1, vignette=0.2,
                       cars_per_100m=4.0, pedestrians_per_100m=4.0, trucks_per_km=8.0),
    'viewpoint': Condition(sun_azimuth=2.3, sun_elevation=0.45, sun=0.45, ambient=0.6,
                           zenith=(0.36, 0.52, 0.82), horizon=(0.78, 0.84, 0.92), cloudiness=0.45,
                           fog_m=350.0, autumn=False, exposure=1.08, exposure_var=0.05, gamma=1.05,
                           tint=(0.95, 1.0, 1.07), saturation=0.9, contrast=1.0, noise=3.0, blur=0.7,
                           motion_blur_p=0.1, vignette=0.15, cars_per_100m=2.5, pedestrians_per_100m=1.5,
                           trucks_per_km=2.0, cars_left=False),
}
# start (fraction of a lap), laps, stamp of the first message, lane offset range relative to the
# mapping lane (m), yaw offset (deg) and its wobble (deg), pitch wobble (deg)
_DRIVES = {
    'mapping': (0.0, 1.2, 1000.0, (0.0, 0.0), 0.0, 1.0, 0.3),
    'query': (0.3, 1.15, 5000.0, (1.0, 3.0), 0.0, 7.0, 1.0),
    'viewpoint': (0.55, 1.0, 9000.0, (5.0, 6.0), 32.0, 4.0, 0.5),
}


@dataclass
class _Plan:
    """A traversal: world, condition, trajectory and the dynamic objects seen on it."""

    name: str
    world: World
    cond: Condition
    seed: int
    t0: float
    t_end: float
    image_stamps: np.ndarray
    pose_fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    sprites: np.ndarray              # (N, 4): x, y, width, height
    sprite_tex: list[np.ndarray]     # RGBA per sprite

    def odometry(self) -> list[tuple[float, Pose]]:
        stamps = np.arange(self.t0 + ODOM_OFFSET_S, self.t_end, 1.0 / ODOM_HZ)
        x, y, yaw, _ = self.pose_fn(stamps)
        return [(float(t), Pose.from_xy_yaw(a, b, c)) for t, a, b, c in zip(stamps, x, y, yaw)]


def _plan(name: str, seed: int, scale: float) -> _Plan:
    world = _world(int(seed), float(scale))
    route = world.route
    cond = _CONDITIONS[name]
    start, laps, t0, lane_rng, yaw_off, yaw_wobble, pitch_wobble = _DRIVES[name]
    rng = _world_rng(seed, 1 + TRAVERSALS.index(name))
    cruise = min(CRUISE_MPS, route.length / MIN_LAP_S)

    s0 = start * route.length
    s_grid = s0 + np.arange(0.0, laps * route.length + route.step, route.step)
    speed_var = _smooth(rng, (60.0, 250.0))
    curv = np.interp(s_grid % route.length, np.arange(len(route.curvature)) * route.step, route.curvature)
    speed = cruise * (1 + 0.15 * speed_var(s_grid)) * (1 - 0.4 * np.clip(curv * 12.0, 0, 1))
    t_grid = t0 + np.concatenate([[0.0], np.cumsum(np.diff(s_grid) / speed[:-1])])
    lane_fn = _smooth(rng, (80.0, 300.0))
    yaw_fn = _smooth(rng, (4.0, 15.0))
    pitch_fn = _smooth(rng, (1.5, 6.0))
    lane_lo, lane_hi = lane_rng

    def pose_fn(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        s = np.interp(t, t_grid, s_grid)
        lanes = []
        for ds in (0.0, 1.0):  # the heading follows lane changes too
            lanes.append(MAPPING_LANE_M + lane_lo + (lane_hi - lane_lo) * 0.5 * (1 + lane_fn(s + ds)))
        xy, tang, n = route.at(s)
        pos = xy + lanes[0][..., None] * n
        heading = np.arctan2(tang[..., 1], tang[..., 0]) + np.arctan(lanes[1] - lanes[0])
        yaw = heading + np.radians(yaw_off + yaw_wobble * yaw_fn(t))
        yaw = (yaw + math.pi) % (2 * math.pi) - math.pi
        return pos[..., 0], pos[..., 1], yaw, np.radians(PITCH_DEG + pitch_wobble * pitch_fn(t))

    t_end = float(t_grid[-1])
    period = FRAME_SPACING_M / cruise
    stamps = t0 + 0.3 + period * np.arange(int((t_end - t0 - 0.6) / period) + 1)
    stamps += rng.uniform(-0.004, 0.004, len(stamps))  # camera trigger jitter
    sprites, tex = _scene_sprites(world, cond, rng)
    return _Plan(name=name, world=world, cond=cond, seed=int(seed), t0=t0, t_end=t_end, image_stamps=stamps,
                 pose_fn=pose_fn, sprites=sprites, sprite_tex=tex)


def _scene_sprites(world: World, cond: Condition,
                   rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """Street furniture (trees in this season) plus this traversal's cars, pedestrians and trucks."""
    route = world.route
    fr = np.random.default_rng(world.tree_seeds[0])  # furniture looks the same in every traversal
    library = {'tree': [_tree(s, cond.autumn) for s in world.tree_seeds], 'lamp': [_lamp(fr)],
               'sign': [_road_sign(fr) for _ in range(8)]}
    rows: list[tuple[float, float, float, float]] = []
    tex: list[np.ndarray] = []

    def add(x: float, y: float, rgba: np.ndarray) -> None:
        rows.append((x, y, rgba.shape[1] / SPRITE_PPM, rgba.shape[0] / SPRITE_PPM))
        tex.append(rgba)

    for x, y, kind, variant in world.furniture:
        add(x, y, library[kind][variant])
    cars = [_car(rng) for _ in range(10)]
    people = [_pedestrian(rng) for _ in range(10)]
    trucks = [_truck(rng) for _ in range(4)]
    kerb = ROAD_HALF_M
    for per_m, lib, lateral in ((cond.cars_per_100m / 100, cars, (kerb - 0.9, kerb - 0.6)),
                                (cond.pedestrians_per_100m / 100, people, (kerb + 0.8, kerb + 4.0)),
                                (cond.trucks_per_km / 1000, trucks, (kerb - 1.1, kerb - 0.9))):
        for s in rng.uniform(0, route.length, rng.poisson(per_m * route.length * 2)):
            side = 1.0 if rng.random() < 0.5 else -1.0
            if lib is not people and side > 0 and not cond.cars_left:
                side = -1.0
            xy, _, n = route.at(s)
            p = xy + side * rng.uniform(*lateral) * n
            r, c = ((p - world.ground_origin) / GROUND_RES_M).astype(int)[::-1]
            if not world.occupied[r, c]:
                add(float(p[0]), float(p[1]), lib[int(rng.integers(len(lib)))])
    return np.array(rows, np.float32).reshape(-1, 4), tex


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------
class _Renderer:
    """Renders linear-light RGB float32 images of one plan at one image size."""

    def __init__(self, plan: _Plan, size: tuple[int, int]) -> None:
        self.plan, self.world, self.cond = plan, plan.world, plan.cond
        self.h, self.w = int(size[0]), int(size[1])
        self.f = (self.w / 2) / math.tan(math.radians(HFOV_DEG) / 2)
        self.cx = (self.w - 1) / 2
        self.xs = ((self.cx - np.arange(self.w)) / self.f).astype(np.float32)  # + is left
        self.rows = np.arange(self.h, dtype=np.float32)[:, None]
        c = self.cond
        sun = np.array([math.cos(c.sun_azimuth), math.sin(c.sun_azimuth)], np.float32)
        lambert = np.clip(self.world.seg_n @ sun, 0, None) * math.cos(c.sun_elevation)
        self.seg_shade = (c.ambient + c.sun * 1.3 * lambert).astype(np.float32)
        self.ground_shade = c.ambient + c.sun * math.sin(c.sun_elevation) * 1.1
        crng = _world_rng(plan.seed, 10 + TRAVERSALS.index(plan.name))
        clouds = _noise(crng, 96, 2048 + 64, 24.0) * 0.6 + _noise(crng, 96, 2048 + 64, 6.0) * 0.4
        clouds = clouds[:, :2048]
        self.clouds = np.clip((clouds - (1 - c.cloudiness)) * 3.0, 0, 1).astype(np.float32)
        self.zenith = np.array(c.zenith, np.float32)
        self.horizon = np.array(c.horizon, np.float32)
        self.fog = self.horizon * 0.9
        yy, xx = np.mgrid[0:self.h, 0:self.w].astype(np.float32)
        r2 = ((xx - self.cx) / (self.w / 2)) ** 2 + ((yy - (self.h - 1) / 2) / (self.h / 2)) ** 2
        self.vignette = (1 - c.vignette * 0.5 * r2).astype(np.float32)[..., None]

    def render(self, x: float, y: float, yaw: float, pitch: float) -> np.ndarray:
        w, h, f = self.w, self.h, self.f
        world = self.world
        cam = np.array([x, y], np.float32)
        fwd = np.array([math.cos(yaw), math.sin(yaw)], np.float32)
        left = np.array([-math.sin(yaw), math.cos(yaw)], np.float32)
        hz = (h - 1) / 2 + f * math.tan(pitch)  # horizon row
        dirs = fwd[None, :] + self.xs[:, None] * left[None, :]  # forward component 1: ray t == depth

        rel = world.seg_a - cam
        dist = np.linalg.norm(world.seg_mid - cam, axis=1) - world.seg_len / 2
        keep = np.flatnonzero(((rel * world.seg_n).sum(1) < 0) & (dist < MAX_RANGE_M))
        img = np.empty((h, w, 3), np.float32)
        depth = np.full((h, w), np.inf, np.float32)
        layer = np.full((h, w), -1, np.int64)
        z0 = np.full(w, np.inf, np.float32)
        if len(keep):
            e, r = world.seg_e[keep], rel[keep]
            denom = dirs[:, 0:1] * e[None, :, 1] - dirs[:, 1:2] * e[None, :, 0]
            with np.errstate(divide='ignore', invalid='ignore'):
                t = (r[:, 0] * e[:, 1] - r[:, 1] * e[:, 0])[None, :] / denom
                u = (r[None, :, 0] * dirs[:, 1:2] - r[None, :, 1] * dirs[:, 0:1]) / denom
            t = np.where((t > 0.3) & (u >= 0) & (u <= 1), t, np.inf)
            k = min(LAYERS, len(keep))
            near = (np.argpartition(t, k - 1, axis=1)[:, :k] if len(keep) > k
                    else np.tile(np.arange(k), (w, 1)))
            tz = np.take_along_axis(t, near, 1)
            order = np.argsort(tz, axis=1)
            near, tz = np.take_along_axis(near, order, 1), np.take_along_axis(tz, order, 1)
            uu = np.take_along_axis(u, near, 1)
            sid = keep[near]  # (w, k) segment ids
            hit = np.isfinite(tz)
            zk = np.where(hit, tz, 1.0).astype(np.float32)
            hb = world.seg_h[sid]
            top = np.where(hit, hz - f * (hb - CAMERA_HEIGHT_M) / zk, np.inf).astype(np.float32)
            z0 = np.where(hit[:, 0], tz[:, 0], np.inf).astype(np.float32)
            # visible layer per pixel: the nearest one whose roof line is above the pixel
            for kk in range(k - 1, -1, -1):
                layer[self.rows >= top[None, :, kk]] = kk
            # texture addressing per (column, layer); the texel row is linear in the image row
            level = np.clip(np.floor(np.log2(np.maximum(PPM * zk / f, 1.0))), 0, MIP_LEVELS - 1)
            level = level.astype(np.int64)
            tex = world.seg_tex[sid]
            ppl = (PPM / 2.0 ** level).astype(np.float32)
            tw, th = world.atlas.width[tex, level], world.atlas.height[tex, level]
            ucol = ((world.seg_u0[sid] + uu * world.seg_len[sid]) * ppl).astype(np.int64) % tw
            base = world.atlas.offset[tex, level] + ucol
            va = (hb - CAMERA_HEIGHT_M - hz * zk / f) * ppl
            vb = zk / f * ppl
            shade = self.seg_shade[sid]
        bottom = hz + f * CAMERA_HEIGHT_M / z0  # where the nearest wall meets the ground
        ground = self.rows > np.maximum(bottom, hz)[None, :]
        layer[ground] = -2

        wall = layer >= 0
        if wall.any():
            rr, cc = np.nonzero(wall)
            kk = layer[rr, cc]
            v = np.clip((va[cc, kk] + rr * vb[cc, kk]).astype(np.int64), 0, th[cc, kk] - 1)
            col = world.atlas.flat[base[cc, kk] + v * tw[cc, kk]].astype(np.float32)
            z = zk[cc, kk]
            height = CAMERA_HEIGHT_M + (hz - rr) * z / f
            ao = np.clip(0.72 + 0.28 * height / 1.5, 0.72, 1.0) * (1 / 255)
            img[rr, cc] = col * (shade[cc, kk] * ao)[:, None]
            depth[rr, cc] = z
        self._ground(img, depth, ground, cam, fwd, left, hz)
        self._sky(img, layer == -1, yaw, hz)
        self._sprites(img, depth, cam, fwd, left, hz)
        fog = 1 - np.exp(-np.minimum(depth, 1e4) / self.cond.fog_m)
        img += (self.fog - img) * fog[..., None]
        return img

    def _ground(self, img: np.ndarray, depth: np.ndarray, ground: np.ndarray, cam: np.ndarray,
                fwd: np.ndarray, left: np.ndarray, hz: float) -> None:
        first = max(int(np.floor(hz)) + 1, 0)
        if first >= self.h:
            return
        rows = np.arange(first, self.h)
        z_row = (self.f * CAMERA_HEIGHT_M / np.maximum(rows - hz, 1e-3)).astype(np.float32)
        # footprint of a pixel on the ground: z/f across, z^2/(f h) along the view
        foot = np.sqrt(z_row / self.f * z_row ** 2 / (self.f * CAMERA_HEIGHT_M))
        lvl = np.clip(np.floor(np.log2(np.maximum(foot / GROUND_RES_M, 1.0)) - 0.5), 0, GROUND_LEVELS - 1)
        lvl = lvl.astype(np.int64)
        origin = self.world.ground_origin
        for level in np.unique(lvl):
            band = rows[lvl == level]
            m = ground[band]
            if not m.any():
                continue
            z = z_row[band - first][:, None]
            lat = z * self.xs[None, :]
            res = GROUND_RES_M * 2 ** level
            mx = ((cam[0] - origin[0] + z * fwd[0] + lat * left[0]) / res - 0.5).astype(np.float32)
            my = ((cam[1] - origin[1] + z * fwd[1] + lat * left[1]) / res - 0.5).astype(np.float32)
            # bilinear where the texture is magnified near the camera, or the kerbs look jagged
            interp = cv2.INTER_LINEAR if level == 0 else cv2.INTER_NEAREST
            col = cv2.remap(self.world.ground[level], mx, my, interp, borderMode=cv2.BORDER_REPLICATE)
            img[band[0]:band[-1] + 1][m] = col[m] * np.float32(self.ground_shade / 255)
            depth[band[0]:band[-1] + 1][m] = np.broadcast_to(z, m.shape)[m]

    def _sky(self, img: np.ndarray, sky: np.ndarray, yaw: float, hz: float) -> None:
        if not sky.any():
            return
        rr, cc = np.nonzero(sky)
        elev = np.arctan((hz - rr) / self.f).astype(np.float32)
        az = (yaw + np.arctan(self.xs)) % (2 * math.pi)
        a = np.clip(elev / 0.9, 0, 1) ** 0.6
        col = self.horizon + (self.zenith - self.horizon) * a[:, None]
        n_el, n_az = self.clouds.shape
        ai = (az[cc] / (2 * math.pi) * n_az).astype(np.int64) % n_az
        ei = np.clip((elev / (math.pi / 2) * n_el * 1.5).astype(np.int64), 0, n_el - 1)
        cloud = self.clouds[ei, ai] * np.clip(elev * 20, 0, 1)
        grey = 0.95 - 0.35 * self.cond.cloudiness
        col += (np.float32(grey) - col) * cloud[:, None]
        n_sky = self.world.skyline.shape[0]
        sky_i = (n_sky * az / (2 * math.pi)).astype(np.int64) % n_sky
        city = elev < self.world.skyline[sky_i][cc]
        col[city] = self.horizon * 0.78 + np.float32(0.04) * (ai[city] % 7 == 0)[:, None]
        img[rr, cc] = col

    def _sprites(self, img: np.ndarray, depth: np.ndarray, cam: np.ndarray, fwd: np.ndarray,
                 left: np.ndarray, hz: float) -> None:
        sp = self.plan.sprites
        if not len(sp):
            return
        rel = sp[:, :2] - cam
        z = rel @ fwd
        lat = rel @ left
        f = self.f
        cx = self.cx - f * lat / np.maximum(z, 1e-3)
        half = f * sp[:, 2] / 2 / np.maximum(z, 1e-3)
        ok = (z > 1.5) & (z < 90) & (cx + half > 0) & (cx - half < self.w)
        for i in np.flatnonzero(ok)[np.argsort(-z[ok])]:
            zi = float(z[i])
            c0, c1 = cx[i] - half[i], cx[i] + half[i]
            r1 = hz + f * CAMERA_HEIGHT_M / zi
            r0 = r1 - f * sp[i, 3] / zi
            ca, cb = max(0, int(math.ceil(c0))), min(self.w, int(math.ceil(c1)))
            ra, rb = max(0, int(math.ceil(r0))), min(self.h, int(math.ceil(r1)))
            if ca >= cb or ra >= rb:
                continue
            tex = self.plan.sprite_tex[i]
            th, tw = tex.shape[:2]
            ui = np.clip(((np.arange(ca, cb) - c0) / (c1 - c0) * tw).astype(np.int64), 0, tw - 1)
            vi = np.clip(((np.arange(ra, rb) - r0) / (r1 - r0) * th).astype(np.int64), 0, th - 1)
            patch = tex[vi[:, None], ui[None, :]]
            m = (patch[..., 3] > 0.5) & (depth[ra:rb, ca:cb] > zi)
            img[ra:rb, ca:cb][m] = patch[..., :3][m] * self.ground_shade
            depth[ra:rb, ca:cb][m] = zi


def _develop(img: np.ndarray, cond: Condition, rng: np.random.Generator, exposure: float,
             vignette: np.ndarray) -> np.ndarray:
    """Camera response: exposure, tint, saturation, contrast, gamma, vignette, blur, noise -> uint8."""
    img *= np.float32(exposure) * np.asarray(cond.tint, np.float32)
    if cond.saturation != 1.0:
        grey = img.mean(2, keepdims=True)
        img = grey + (img - grey) * np.float32(cond.saturation)
    if cond.contrast != 1.0:
        img = 0.5 + (img - 0.5) * np.float32(cond.contrast)
    np.clip(img, 0, 1, out=img)
    if cond.gamma != 1.0:
        img = cv2.pow(img, cond.gamma)
    img *= vignette
    if cond.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), cond.blur)
    if rng.random() < cond.motion_blur_p:
        n = int(rng.integers(3, 8))
        kernel = np.zeros((n, n), np.float32)
        kernel[n // 2, :] = 1.0 / n
        img = cv2.filter2D(img, -1, cv2.warpAffine(kernel, cv2.getRotationMatrix2D(
            ((n - 1) / 2, (n - 1) / 2), float(rng.uniform(-20, 20)), 1.0), (n, n)) * 1.0)
    out = img * 255.0 + 0.5
    if cond.noise > 0:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(cond.noise)
    return np.clip(out, 0, 255).astype(np.uint8)


def _render_frames(plan: _Plan, image_size: Sequence[int]) -> Iterator[Frame]:
    renderer = _Renderer(plan, (int(image_size[0]), int(image_size[1])))
    x, y, yaw, pitch = plan.pose_fn(plan.image_stamps)
    rng = _world_rng(plan.seed, 20 + TRAVERSALS.index(plan.name))
    expo_fn = _smooth(rng, (10.0, 40.0))
    for i, stamp in enumerate(plan.image_stamps):
        img = renderer.render(float(x[i]), float(y[i]), float(yaw[i]), float(pitch[i]))
        exposure = plan.cond.exposure * (1 + plan.cond.exposure_var * float(expo_fn(stamp)))
        rgb = _develop(img, plan.cond, rng, exposure, renderer.vignette)
        yield Frame(float(stamp), rgb, Pose.from_xy_yaw(x[i], y[i], yaw[i]), source=f'sample:{plan.name}',
                    meta={'traversal': plan.name, 'index': i})
