"""The street loop the traversals drive: a closed polyline with arc-length lookup."""
from __future__ import annotations

import numpy as np

from vpr_ros.sample.constants import _SHAPE, LOOP_M


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
