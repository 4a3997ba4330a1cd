"""Metric 6-DoF pose of a query image from the map's own geometry.

For a retrieval candidate: the local features of the candidate place and of its
``local_map`` nearest keyframes on each side in map time (the *anchors*, as ORB-SLAM relocalises
against a keyframe and its covisible neighbours) are each triangulated from their own neighbouring
keyframes (:mod:`.triangulation`; computed on first use and cached, the map stores only the
features and poses); the query's features are matched to every anchor's (mutual nearest
neighbours + ratio test), and the matches with a landmark give 2-D/3-D correspondences for PnP
(:mod:`.pnp`; one per query keypoint, the candidate's own first). Candidates are tried best
first until one solve is good.

Frames (:mod:`.transforms`): ``T_map_body`` of the query is the pose in the same convention as
the map's place poses; the relative constraint is between the camera optical frames, as the
essential-matrix constraint of :mod:`vpr_ros.matching.verification`.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vpr_ros.errors import ConfigError
from vpr_ros.features import CameraIntrinsics, LocalFeatures
from vpr_ros.frames import Pose
from vpr_ros.geometry.pnp import PnPConfig, propagate, solve_pnp
from vpr_ros.geometry.transforms import (
    CameraMount,
    covariance_in_body,
    invert,
    matrix_to_pose,
    pose_to_matrix,
    relative_covariance,
)
from vpr_ros.geometry.triangulation import Landmarks, TriangulationConfig, View, triangulate_anchor
from vpr_ros.settings import setting

if TYPE_CHECKING:
    from vpr_ros.mapdb.store import VprMap

METRIC = 'metric'            # status of a good solve; anything else says why the place pose is used
LANDMARK_BYTES = 8 + 3 * 8 + 4   # cached per landmark: keypoint row, map-frame point, view count


@dataclass(frozen=True)
class MetricConfig:
    """The metric 6-DoF pose; its described fields (and PnPConfig's) are the node's ``metric.*``."""

    SETTINGS_PREFIX = 'metric'

    enabled: bool = setting(
        True, 'Solve the metric 6-DoF pose of each frame (and of ~/localize and loop closures) against the '
        "map's geometry: PnP on landmarks triangulated from the matched place and its neighbouring "
        "keyframes. Needs local features in the map and intrinsics (camera_info or the map's); otherwise, "
        'and when a solve is not good, ~/pose is the place pose.')
    candidates: int = setting(3, 'Retrieval candidates tried (best first) until a solve is good.',
                              low=1, high=50)
    local_map: int = 2           # keyframes each side of a candidate whose landmarks join its solve
    ratio: float = 0.8           # Lowe's ratio test for query -> anchor matches
    cache_places: int = 512      # anchors whose landmarks are kept in memory (LRU)
    triangulation: TriangulationConfig = field(default_factory=TriangulationConfig)
    pnp: PnPConfig = field(default_factory=PnPConfig)
    mount: CameraMount = field(default_factory=CameraMount)

    def validate(self) -> None:
        if self.candidates < 1:
            raise ConfigError('metric: candidates must be >= 1')
        if not 0 <= self.local_map <= 5:
            raise ConfigError('metric: local_map must be in 0..5')
        if not 0 < self.ratio <= 1:
            raise ConfigError('metric: ratio must be in (0, 1]')
        if self.cache_places < 1:
            raise ConfigError('metric: cache_places must be >= 1')
        self.triangulation.validate()
        self.pnp.validate()


@dataclass(frozen=True)
class MetricPose:
    """The outcome for one query. ``status == 'metric'``: ``T_map_body`` and ``covariance`` are the solve;
    otherwise they are None and ``status`` says why (the caller falls back to the place pose)."""

    status: str
    place_id: int = -1
    T_map_body: np.ndarray | None = None
    covariance: np.ndarray | None = None          # (6, 6) map frame, (x, y, z, rot_x, rot_y, rot_z)
    T_map_optical: np.ndarray | None = None       # the query camera
    optical_covariance: np.ndarray | None = None  # (6, 6) of T_map_optical, same parameterisation
    T_map_anchor_optical: np.ndarray | None = None
    landmarks: int = 0
    correspondences: int = 0
    inliers: int = 0
    rms_px: float = float('nan')
    ms: float = 0.0

    @property
    def good(self) -> bool:
        return self.status == METRIC

    @property
    def pose(self) -> Pose | None:
        return matrix_to_pose(self.T_map_body) if self.T_map_body is not None else None

    @property
    def inlier_ratio(self) -> float:
        return self.inliers / self.correspondences if self.correspondences else 0.0

    def body_constraint(self, T_map_place_body: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(R, t, covariance)`` of the query body in the place body (the map poses' frames), for a
        between-factor from the place to the query: ``T_place_query``, ``t`` in metres, covariance of the
        right perturbation in the query body's axes, ``(x, y, z, rot_x, rot_y, rot_z)`` (the convention
        of ``vpr_ros.slam.constraints.LoopConstraint``; the place pose is taken as exact)."""
        if not self.good:
            raise ValueError(f'no metric constraint: {self.status}')
        assert self.T_map_body is not None and self.covariance is not None
        T = invert(T_map_place_body) @ self.T_map_body
        return T[:3, :3], T[:3, 3], covariance_in_body(self.covariance, self.T_map_body[:3, :3])

    def constraint(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(R, t, covariance)`` of the query camera in the anchor place's camera, both optical frames:
        ``X_place = R X_query + t``, ``t`` in metres, covariance (6, 6) in the place camera's axes."""
        if not self.good:
            raise ValueError(f'no metric constraint: {self.status}')
        assert self.T_map_anchor_optical is not None and self.T_map_optical is not None
        T = invert(self.T_map_anchor_optical) @ self.T_map_optical
        cov = relative_covariance(self.optical_covariance, self.T_map_anchor_optical[:3, :3])
        return T[:3, :3], T[:3, 3], cov


class MetricLocalizer:
    """Metric poses against a map, through accessors (so a node can read its map under its own lock).

    ``features(pid)``: the place's LocalFeatures or None; ``pose(pid)``: its map pose or None;
    ``stamps()``: every place's stamp (row = id); ``map_camera``: the map images' intrinsics (None:
    the map is assumed to share the query camera, as verification assumes).
    """

    def __init__(self, features: Callable[[int], LocalFeatures | None], pose: Callable[[int], Pose | None],
                 stamps: Callable[[], np.ndarray], map_camera: CameraIntrinsics | None, binary: bool,
                 config: MetricConfig | None = None) -> None:
        self.config = config or MetricConfig()
        self.config.validate()
        self._features, self._stamps = features, stamps
        # a position-only place pose (orientation unknown) cannot place a camera: treated as no pose
        self._pose = lambda pid: p if (p := pose(pid)) is not None and p.orientation is not None else None
        self.map_camera = map_camera
        self.binary = binary
        self._cache: OrderedDict[tuple[int, CameraIntrinsics, tuple[int, ...]], Landmarks] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._order: tuple[int, np.ndarray] = (-1, np.zeros(0, np.int64))

    def reconfigure(self, config: MetricConfig) -> None:
        """New settings; cached landmarks are dropped when their triangulation or camera mount changed."""
        config.validate()
        if (config.triangulation, config.mount) != (self.config.triangulation, self.config.mount):
            with self._cache_lock:
                self._cache.clear()
        self.config = config

    # ----- landmarks ------------------------------------------------------------------------------
    def neighbours(self, place_id: int, each_side: int | None = None) -> list[int]:
        """Up to ``each_side`` (default ``triangulation.neighbours``) places each side of ``place_id`` in
        map time, nearest first."""
        stamps = self._stamps()
        if self._order[0] != len(stamps):
            self._order = (len(stamps), np.argsort(stamps, kind='stable'))
        order = self._order[1]
        at = np.flatnonzero(order == int(place_id))
        if not len(at):
            return []
        i = int(at[0])
        k = self.config.triangulation.neighbours if each_side is None else each_side
        out = []
        for d in range(1, k + 1):
            out += [int(order[j]) for j in (i - d, i + d) if 0 <= j < len(order)]
        return out

    def _view(self, place_id: int, camera: CameraIntrinsics) -> View | None:
        feats, pose = self._features(place_id), self._pose(place_id)
        if feats is None or pose is None or not len(feats):
            return None
        return View(feats, camera, self.config.mount.camera_in_map(pose_to_matrix(pose)))

    def landmarks(self, place_id: int, camera: CameraIntrinsics) -> Landmarks:
        """The anchor's triangulated landmarks, cached by anchor, camera and neighbours (a map that grows
        gives its newest places a neighbour after they were first triangulated)."""
        neighbours = tuple(self.neighbours(place_id))
        key = (int(place_id), camera, neighbours)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        anchor = self._view(place_id, camera)
        if anchor is None:
            found = Landmarks.empty()
        else:
            views = [v for v in (self._view(n, camera) for n in neighbours) if v is not None]
            found = triangulate_anchor(anchor, views, self.config.triangulation, self.binary)
        with self._cache_lock:
            self._cache[key] = found
            while len(self._cache) > self.config.cache_places:
                self._cache.popitem(last=False)
        return found

    def precompute(self, place_ids: Sequence[int] | None = None,
                   camera: CameraIntrinsics | None = None) -> int:
        """Triangulate places' landmarks now (e.g. at map load), so that no request pays for them:
        ``place_ids`` (default: every place, at most ``cache_places`` of them, the LRU bound) with
        ``camera`` (default: the map's intrinsics; without either there is nothing to do). Returns
        how many places were triangulated."""
        camera = camera or self.map_camera
        if camera is None:
            return 0
        ids = range(len(self._stamps())) if place_ids is None else place_ids
        ids = list(ids)[:self.config.cache_places]
        for pid in ids:
            self.landmarks(int(pid), camera)
        return len(ids)

    @property
    def cached_places(self) -> int:
        with self._cache_lock:
            return len(self._cache)

    @property
    def cached_bytes(self) -> int:
        with self._cache_lock:
            return sum(lm.nbytes for lm in self._cache.values())

    # ----- query ----------------------------------------------------------------------------------
    def localize(self, query: LocalFeatures, candidates: Sequence[int],
                 query_camera: CameraIntrinsics | None) -> MetricPose:
        """Metric pose of the query from the first candidate (best first) with a good solve; otherwise
        the attempt with the most inliers, whose status says why it is not good."""
        t0 = time.perf_counter()
        camera = query_camera or self.map_camera
        map_camera = self.map_camera or query_camera
        if camera is None or map_camera is None:
            return MetricPose('no_intrinsics', ms=(time.perf_counter() - t0) * 1e3)
        best = MetricPose('no_candidates')
        matched: dict[int, np.ndarray] = {}  # query -> anchor matches: neighbouring candidates share anchors
        for pid in list(candidates)[:self.config.candidates]:
            attempt = self._solve(query, int(pid), camera, map_camera, matched)
            if attempt.good:
                best = attempt
                break
            if best.status == 'no_candidates' or attempt.inliers > best.inliers:
                best = attempt
        return MetricPose(**{**best.__dict__, 'ms': (time.perf_counter() - t0) * 1e3})

    def _solve(self, query: LocalFeatures, pid: int, camera: CameraIntrinsics,
               map_camera: CameraIntrinsics, matched: dict[int, np.ndarray]) -> MetricPose:
        from vpr_ros.matching.descriptor_matching import mutual_ratio_matches

        cfg = self.config
        anchor_pose = self._pose(pid)
        anchor_feats = self._features(pid)
        if anchor_pose is None:
            return MetricPose('no_place_pose', pid)
        if anchor_feats is None:
            return MetricPose('no_local_features', pid)
        rows, points, landmarks = [], [], 0
        for aid in [pid] + self.neighbours(pid, cfg.local_map):
            feats = anchor_feats if aid == pid else self._features(aid)
            lms = self.landmarks(aid, map_camera)
            landmarks += len(lms)
            if feats is None or not len(lms):
                continue
            row_to_lm = np.full(len(feats), -1, np.int64)
            row_to_lm[lms.keypoint_ids] = np.arange(len(lms))
            pairs = matched.get(aid)
            if pairs is None:
                pairs = matched[aid] = mutual_ratio_matches(query.descriptors, feats.descriptors, cfg.ratio,
                                                            self.binary)
            if len(pairs):
                pairs = pairs[row_to_lm[pairs[:, 1]] >= 0]
            rows.append(pairs[:, 0])
            points.append(lms.points[row_to_lm[pairs[:, 1]]])
        if landmarks < cfg.pnp.min_inliers:
            return MetricPose('few_landmarks', pid, landmarks=landmarks)
        query_rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        query_rows, first = np.unique(query_rows, return_index=True)  # one landmark per query keypoint
        n = len(query_rows)
        if n < cfg.pnp.min_inliers:
            return MetricPose('few_matches', pid, landmarks=landmarks, correspondences=n)
        K = camera.matrix_for(query.image_size)
        norm = camera.normalise(query.keypoints[query_rows], query.image_size)
        pixels = norm @ K[:2, :2].T + K[:2, 2]
        sol = solve_pnp(np.concatenate(points)[first], pixels, K, cfg.pnp)
        if sol is None:
            return MetricPose('pnp_failed', pid, landmarks=landmarks, correspondences=n)
        mount = cfg.mount
        T_map_opt = invert(sol.T_cam_world)
        cov_body = propagate(sol, lambda T: mount.body_in_map(invert(T)))
        k = len(sol.inliers)
        sigma_p = float(np.sqrt(max(np.max(np.linalg.eigvalsh(cov_body[:3, :3])), 0.0)))
        if k < cfg.pnp.min_inliers or sol.inlier_ratio < cfg.pnp.min_inlier_ratio:
            status = 'few_inliers'
        elif not np.isfinite(sigma_p) or sigma_p > cfg.pnp.max_position_sigma_m:
            status = 'uncertain'
        else:
            status = METRIC
        solved = status == METRIC
        return MetricPose(status, pid, mount.body_in_map(T_map_opt) if solved else None,
                          cov_body if solved else None, T_map_opt if solved else None,
                          propagate(sol, invert) if solved else None,
                          mount.camera_in_map(pose_to_matrix(anchor_pose)) if solved else None,
                          landmarks, n, k, sol.rms_px)


Guard = Callable[[Callable[..., Any]], Callable[..., Any]]


def for_map(vmap: 'VprMap', config: MetricConfig | None = None,
            guard: Guard | None = None) -> MetricLocalizer | None:
    """A metric localizer over the map's stored local features and poses; None when it has no features.
    ``guard`` wraps each map accessor (e.g. to hold the node's map lock while it reads)."""
    store = vmap.local_features
    if store is None:
        return None

    def features(pid: int) -> LocalFeatures | None:
        return store.get(pid) if 0 <= pid < len(store) else None

    def pose(pid: int) -> Pose | None:
        return vmap.place(pid).pose if 0 <= pid < len(vmap) else None

    def stamps() -> np.ndarray:
        return vmap.places.stamps  # places are only appended: the order is re-sorted when the count changes

    wrap = guard or (lambda fn: fn)
    return MetricLocalizer(wrap(features), wrap(pose), wrap(stamps), store.camera, store.config.kind == 'orb',
                           config)


__all__ = ['LANDMARK_BYTES', 'METRIC', 'MetricConfig', 'MetricLocalizer', 'MetricPose', 'for_map']
