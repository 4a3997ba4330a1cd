"""Multi-view triangulation of one keyframe's local features from keyframes with known poses.

For an *anchor* keyframe and a few neighbours (all with map poses): the anchor's keypoints are
matched to each neighbour's (mutual nearest neighbours + Lowe's ratio test, as verification
does); matches that disagree with the known relative pose (Sampson epipolar distance above the
threshold) are dropped; every anchor keypoint seen in at least one neighbour is triangulated by
the linear (DLT) method over all its views on undistorted normalised coordinates (Hartley &
Zisserman, Multiple View Geometry, 12.2) and kept when

* it lies in front of every camera that sees it,
* it reprojects within ``max_reprojection_px`` in every view, and
* its largest ray angle ``a`` is at least ``min_parallax_deg`` (ORB-SLAM creates map points only
  above a parallax of ~1.1 deg, cos > 0.9998: below it the depth is unconstrained), and its
  predicted relative depth error, ``(keypoint_sigma_px / f) / sin(a)`` (the angular noise of one
  ray over the parallax), is at most ``max_relative_depth_sigma``: with forward motion, points
  far ahead have little parallax and metres of depth error, which would drag the PnP solve.

The result is a set of map-frame 3-D landmarks carrying the anchor's descriptors, so a query
matched to the anchor's features gets 2-D/3-D correspondences for PnP.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vpr_ros.errors import ConfigError
from vpr_ros.features import CameraIntrinsics, LocalFeatures
from vpr_ros.geometry.transforms import invert


@dataclass(frozen=True)
class TriangulationConfig:
    neighbours: int = 2                 # keyframes on each side of the anchor in map time
    ratio: float = 0.8                  # Lowe's ratio test (as verification)
    max_reprojection_px: float = 2.45   # sqrt(chi2_2dof(0.95)) for 1 px keypoint noise (ORB-SLAM)
    min_parallax_deg: float = 1.0
    keypoint_sigma_px: float = 1.0         # keypoint localisation noise (pixels of the detection scale)
    max_relative_depth_sigma: float = 0.05

    def validate(self) -> None:
        if not 1 <= self.neighbours <= 10:
            raise ConfigError('triangulation: neighbours must be in 1..10')
        if not 0 < self.ratio <= 1:
            raise ConfigError('triangulation: ratio must be in (0, 1]')
        if self.max_reprojection_px <= 0:
            raise ConfigError('triangulation: max_reprojection_px must be > 0')
        if not 0 <= self.min_parallax_deg < 90:
            raise ConfigError('triangulation: min_parallax_deg must be in [0, 90)')
        if self.keypoint_sigma_px <= 0 or self.max_relative_depth_sigma <= 0:
            raise ConfigError('triangulation: keypoint_sigma_px and max_relative_depth_sigma must be > 0')


@dataclass(frozen=True)
class Landmarks:
    """Triangulated anchor keypoints: ``points[i]`` (map frame) is anchor keypoint ``keypoint_ids[i]``."""

    keypoint_ids: np.ndarray   # (n,) int64 rows of the anchor's LocalFeatures
    points: np.ndarray         # (n, 3) float64 map-frame positions [m]
    views: np.ndarray          # (n,) int32 cameras the point was triangulated from (anchor included)

    def __len__(self) -> int:
        return len(self.keypoint_ids)

    @property
    def nbytes(self) -> int:
        return int(self.keypoint_ids.nbytes + self.points.nbytes + self.views.nbytes)

    @staticmethod
    def empty() -> 'Landmarks':
        return Landmarks(np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros(0, np.int32))


@dataclass(frozen=True)
class View:
    """One keyframe: its features, its camera intrinsics and its camera pose ``T_map_optical``."""

    features: LocalFeatures
    camera: CameraIntrinsics
    T_map_optical: np.ndarray

    def normalised(self) -> np.ndarray:
        return self.camera.normalise(self.features.keypoints, self.features.image_size)

    @property
    def focal(self) -> float:
        return self.camera.focal(self.features.image_size)


def triangulate_dlt(projections: Sequence[np.ndarray], points: Sequence[np.ndarray]) -> np.ndarray:
    """Linear N-view triangulation. ``projections``: (3, 4) world->normalised-camera matrices
    ``[R | t]``; ``points``: (m, 2) normalised observations, one array per view, rows aligned.
    Returns (m, 3); rows are NaN where the system is degenerate."""
    m = len(points[0])
    A = np.zeros((m, 2 * len(projections), 4))
    for k, (P, x) in enumerate(zip(projections, points)):
        A[:, 2 * k] = x[:, :1] * P[2] - P[0]
        A[:, 2 * k + 1] = x[:, 1:2] * P[2] - P[1]
    A /= np.maximum(np.linalg.norm(A, axis=2, keepdims=True), 1e-12)
    _, _, vt = np.linalg.svd(A)
    X = vt[:, -1]
    with np.errstate(divide='ignore', invalid='ignore'):
        out = X[:, :3] / X[:, 3:]
    out[np.abs(X[:, 3]) < 1e-12] = np.nan
    return out


def _sampson_px(n_a: np.ndarray, n_b: np.ndarray, T_a_b: np.ndarray, focal: float) -> np.ndarray:
    """Sampson distance (pixels, via the focal length) of normalised matches under the known pose."""
    R, t = T_a_b[:3, :3], T_a_b[:3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    E = tx @ R          # x_a^T E x_b = 0 for X_a = R X_b + t
    xa = np.column_stack([n_a, np.ones(len(n_a))])
    xb = np.column_stack([n_b, np.ones(len(n_b))])
    Exb, Etxa = xb @ E.T, xa @ E
    num = np.einsum('ij,ij->i', xa, Exb) ** 2
    den = Exb[:, 0] ** 2 + Exb[:, 1] ** 2 + Etxa[:, 0] ** 2 + Etxa[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-300)) * focal  # invariant to the scale of E


def triangulate_anchor(anchor: View, neighbours: Sequence[View], config: TriangulationConfig,
                       binary: bool) -> Landmarks:
    """The anchor's keypoints triangulated from the anchor and its neighbours (see module docstring)."""
    from vpr_ros.matching.descriptor_matching import mutual_ratio_matches

    n_anchor = anchor.normalised()
    T_anchor_map = invert(anchor.T_map_optical)
    # obs[k] = (anchor rows, normalised points in neighbour k)
    observations: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]] = []
    for nb in neighbours:
        pairs = mutual_ratio_matches(anchor.features.descriptors, nb.features.descriptors, config.ratio,
                                     binary)
        if not len(pairs):
            continue
        n_nb = nb.normalised()[pairs[:, 1]]
        T_anchor_nb = T_anchor_map @ nb.T_map_optical
        if np.linalg.norm(T_anchor_nb[:3, 3]) < 1e-6:
            continue  # no baseline: nothing to triangulate
        d = _sampson_px(n_anchor[pairs[:, 0]], n_nb, T_anchor_nb, min(anchor.focal, nb.focal))
        keep = d <= config.max_reprojection_px
        observations.append((pairs[keep, 0], n_nb[keep], invert(nb.T_map_optical)[:3], nb.focal))
    if not observations:
        return Landmarks.empty()
    rows = np.unique(np.concatenate([o[0] for o in observations]))
    if not len(rows):
        return Landmarks.empty()
    # Per anchor row: the views that see it. Rows seen by different neighbour subsets are solved in
    # groups with the same subset, so the DLT stays vectorised.
    seen = np.zeros((len(rows), len(observations)), bool)
    where = np.full((len(rows), len(observations)), -1, np.int64)
    for k, (r, *_) in enumerate(observations):
        idx = np.searchsorted(rows, r)
        seen[idx, k] = True
        where[idx, k] = np.arange(len(r))
    points = np.full((len(rows), 3), np.nan)
    views = seen.sum(axis=1).astype(np.int32) + 1
    P_anchor = T_anchor_map[:3]
    for subset in np.unique(seen, axis=0):
        if not subset.any():
            continue
        group = np.flatnonzero((seen == subset).all(axis=1))
        ks = np.flatnonzero(subset)
        Ps = [P_anchor] + [observations[k][2] for k in ks]
        xs = [n_anchor[rows[group]]] + [observations[k][1][where[group, k]] for k in ks]
        focals = [anchor.focal] + [observations[k][3] for k in ks]
        X = triangulate_dlt(Ps, xs)
        ok = np.isfinite(X).all(axis=1)
        centres = []
        for P, x, f in zip(Ps, xs, focals):
            Xc = X @ P[:, :3].T + P[:, 3]
            with np.errstate(divide='ignore', invalid='ignore'):
                err = np.linalg.norm(Xc[:, :2] / Xc[:, 2:] - x, axis=1) * f
            ok &= (Xc[:, 2] > 0) & (err <= config.max_reprojection_px)
            centres.append(-P[:, :3].T @ P[:, 3])
        rays = [X - c for c in centres]
        rays = [r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12) for r in rays]
        cos_min = np.ones(len(X))
        for i in range(len(rays)):
            for j in range(i + 1, len(rays)):
                cos_min = np.minimum(cos_min, np.einsum('ij,ij->i', rays[i], rays[j]))
        ok &= cos_min <= np.cos(np.radians(config.min_parallax_deg))
        sin_parallax = np.sqrt(np.clip(1.0 - cos_min ** 2, 0.0, 1.0))
        ok &= config.keypoint_sigma_px / min(focals) <= config.max_relative_depth_sigma * sin_parallax
        points[group[ok]] = X[ok]
    good = np.isfinite(points).all(axis=1)
    return Landmarks(rows[good].astype(np.int64), points[good], views[good])


__all__ = ['Landmarks', 'TriangulationConfig', 'View', 'triangulate_anchor', 'triangulate_dlt']
