"""The world of one seed and scale: route, buildings, furniture, ground raster, skyline."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from vpr_ros.sample.constants import GROUND_LEVELS, GROUND_RES_M, LOOP_M, MIN_LOOP_M, PPM, ROAD_HALF_M
from vpr_ros.sample.facades import _STYLE_P, _STYLES, _Atlas, _facade_params, _paint_facade
from vpr_ros.sample.route import Route
from vpr_ros.sample.textures import _jitter, _noise


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
