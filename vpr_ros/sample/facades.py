"""Facade textures: a few shared architectural styles, painted per building, in a mip atlas."""
from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from vpr_ros.sample.constants import MIP_LEVELS, PPM
from vpr_ros.sample.textures import _hsv, _jitter, _noise, _vivid

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
