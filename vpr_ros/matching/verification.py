"""Geometric verification of retrieval candidates with local features (RootSIFT or ORB).

For a query and each of a few candidate places:

1. tentative matches: mutual nearest neighbours in descriptor space that also pass Lowe's ratio
   test (``ratio``, 0.8 as in Lowe 2004) in the query -> place direction;
2. a robust two-view model with OpenCV's USAC MAGSAC++ (``cv2.USAC_MAGSAC``): the essential
   matrix on undistorted normalised coordinates when both cameras' intrinsics are known (the
   inlier threshold ``threshold_px`` is converted with the focal length), otherwise the
   fundamental matrix on pixels;
3. the candidate is *verified* when it has at least ``min_inliers`` inliers and at least
   ``min_inlier_ratio`` of its tentative matches are inliers. The defaults (20 inliers, 0.25)
   follow common loop-closure practice (RTAB-Map's ``Vis/MinInliers`` is 20; DLoopDetector checks
   a fundamental matrix with at least 12 correspondences; ratio ~0.25 rejects a model fitted
   through a small coherent subset of random matches) and are not fitted to any data set;
4. with an essential matrix, ``cv2.recoverPose`` gives the relative rotation and the translation
   direction (unit norm: monocular scale is unknown) by the cheirality check, and the inliers'
   median *parallax*: the angle between each place bearing and the rotated query bearing, i.e.
   what is left after the rotation is removed, which grows with the baseline relative to the scene
   depth (the measure ORB-SLAM and SVO use for the baseline of two views). Of two verified views
   of the same street, the one with the smaller parallax was taken nearer to the query.

Relative pose convention: ``rotation`` R and ``translation`` t map a 3-D point from the query
camera's optical frame to the matched place's camera optical frame, ``X_place = R X_query + t``;
i.e. [R | t] is the pose of the query camera expressed in the place camera's optical frame
(x right, y down, z forward).

Candidates are re-ranked by their inlier count (verified ones first).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vpr_ros.errors import ConfigError
from vpr_ros.features import CameraIntrinsics, LocalFeatures
from vpr_ros.matching.descriptor_matching import mutual_ratio_matches
from vpr_ros.settings import setting

if TYPE_CHECKING:
    from vpr_ros.mapdb.store import VprMap


@dataclass
class VerificationConfig:
    """Geometric verification of loop-closure candidates; the node's ``verification.*`` parameters."""

    SETTINGS_PREFIX = 'verification'

    enabled: bool = setting(
        True, 'Verify loop-closure candidates geometrically (local features stored in the map, MAGSAC++ '
        'fundamental/essential matrix) before publishing them. A map without local features runs without '
        'verification and says so in /diagnostics.')
    top_k: int = setting(
        3, 'Candidates verified per frame (the eligible ones scoring at least loop_closure.min_score); the '
        "one with most inliers is the frame's verified candidate.", low=1, high=50)
    ratio: float = setting(0.8, "Lowe's ratio test on descriptor distances.", low=0.01, high=1.0)
    min_inliers: int = setting(20, 'Minimum RANSAC inliers of a verified candidate.', low=5, high=100000)
    min_inlier_ratio: float = setting(0.25, 'Minimum inliers / tentative matches.', low=0.0, high=1.0)
    threshold_px: float = setting(  # scaled by 1/focal for the essential matrix
        1.0, 'MAGSAC++ inlier threshold [px].', low=0.01, high=100.0)
    confidence: float = 0.999
    max_iterations: int = 2000

    def validate(self) -> None:
        if self.top_k < 1:
            raise ConfigError('verification: top_k must be >= 1')
        if not 0 < self.ratio <= 1:
            raise ConfigError('verification: ratio must be in (0, 1]')
        if self.min_inliers < 5:
            raise ConfigError('verification: min_inliers must be >= 5 (the essential matrix needs 5 points, '
                              'the fundamental matrix 7)')
        if not 0 <= self.min_inlier_ratio <= 1:
            raise ConfigError('verification: min_inlier_ratio must be in [0, 1]')
        if self.threshold_px <= 0:
            raise ConfigError('verification: threshold_px must be > 0')
        if not 0 < self.confidence < 1:
            raise ConfigError('verification: confidence must be in (0, 1)')
        if self.max_iterations < 10:
            raise ConfigError('verification: max_iterations must be >= 10')


@dataclass(frozen=True)
class Verification:
    place_id: int
    verified: bool
    matches: int                   # tentative (mutual + ratio) matches
    inliers: int
    model: str                     # 'essential', 'fundamental' or '' (too few matches to fit)
    ms: float
    rotation: np.ndarray | None = None     # (3, 3), essential model only
    translation: np.ndarray | None = None  # (3,) unit vector, essential model only
    parallax_deg: float | None = None      # median rotation-compensated parallax, essential model only

    @property
    def inlier_ratio(self) -> float:
        return self.inliers / self.matches if self.matches else 0.0


def median_parallax_deg(n_q: np.ndarray, n_p: np.ndarray, R: np.ndarray) -> float:
    """Median angle (degrees) between place bearings and query bearings rotated by ``R`` into the place
    camera: the parallax the translation leaves. ``n_q``, ``n_p``: (m, 2) normalised coordinates."""
    def bearings(n: np.ndarray) -> np.ndarray:
        b = np.column_stack([n, np.ones(len(n))])
        return b / np.linalg.norm(b, axis=1, keepdims=True)

    cos = np.einsum('ij,ij->i', bearings(n_q) @ np.asarray(R, np.float64).T, bearings(n_p))
    return float(np.degrees(np.median(np.arccos(np.clip(cos, -1.0, 1.0))))) if len(cos) else 0.0


def _rotation_is_valid(R: np.ndarray) -> bool:
    return bool(np.allclose(R @ R.T, np.eye(3), atol=1e-6) and np.linalg.det(R) > 0)


def verify_pair(query: LocalFeatures, place: LocalFeatures, place_id: int = -1,
                config: VerificationConfig = VerificationConfig(),
                query_camera: CameraIntrinsics | None = None,
                place_camera: CameraIntrinsics | None = None, binary: bool = False) -> Verification:
    """Verify one (query, place) pair; see the module docstring for the method and pose convention."""
    import cv2

    t0 = time.perf_counter()

    def done(verified: bool, n: int, inl: int, model: str, R=None, t=None, parallax=None) -> Verification:
        ms = (time.perf_counter() - t0) * 1e3
        return Verification(place_id, verified, n, inl, model, ms, R, t, parallax)

    pairs = mutual_ratio_matches(query.descriptors, place.descriptors, config.ratio, binary)
    n = len(pairs)
    if n < max(config.min_inliers, 8):
        return done(False, n, 0, '')
    model = 'essential' if query_camera is not None and place_camera is not None else 'fundamental'
    try:
        return _fit(pairs, query, place, config, query_camera, place_camera, done)
    except cv2.error:
        # USAC asserts on some degenerate match sets (e.g. '!model.empty()' in setModelParameters, seen
        # on real frames in a 10-minute soak): no model can be fitted, so the candidate is not verified.
        return done(False, n, 0, model)


def _fit(pairs: np.ndarray, query: LocalFeatures, place: LocalFeatures, config: VerificationConfig,
         query_camera: CameraIntrinsics | None, place_camera: CameraIntrinsics | None,
         done: Callable[..., Verification]) -> Verification:
    import cv2

    n = len(pairs)
    p_q = query.keypoints[pairs[:, 0]].astype(np.float64)
    p_p = place.keypoints[pairs[:, 1]].astype(np.float64)
    if query_camera is not None and place_camera is not None:
        n_q = query_camera.normalise(p_q, query.image_size)
        n_p = place_camera.normalise(p_p, place.image_size)
        focal = min(query_camera.focal(query.image_size), place_camera.focal(place.image_size))
        E, mask = cv2.findEssentialMat(n_q, n_p, np.eye(3), method=cv2.USAC_MAGSAC, prob=config.confidence,
                                       threshold=config.threshold_px / focal, maxIters=config.max_iterations)
        if E is not None and E.shape[0] > 3:  # several solutions stacked: keep MAGSAC's best
            E = E[:3]
        if E is None or mask is None or E.shape != (3, 3):
            return done(False, n, 0, 'essential')
        inliers = int(mask.sum())
        verified = inliers >= config.min_inliers and inliers / n >= config.min_inlier_ratio
        R = t = parallax = None
        if verified:
            _, R, t, _ = cv2.recoverPose(E, n_q, n_p, np.eye(3), mask=mask.copy())
            t = np.asarray(t, np.float64).reshape(3)
            t = t / max(np.linalg.norm(t), 1e-12)
            if _rotation_is_valid(R):
                keep = mask.ravel().astype(bool)
                parallax = median_parallax_deg(n_q[keep], n_p[keep], R)
            else:
                R = t = None
        return done(verified, n, inliers, 'essential', R, t, parallax)
    F, mask = cv2.findFundamentalMat(p_q, p_p, cv2.USAC_MAGSAC, config.threshold_px, config.confidence,
                                     config.max_iterations)
    if F is None or mask is None:
        return done(False, n, 0, 'fundamental')
    inliers = int(mask.sum())
    return done(inliers >= config.min_inliers and inliers / n >= config.min_inlier_ratio, n, inliers,
                'fundamental')


def for_map(vmap: 'VprMap', config: VerificationConfig | None = None) -> 'Verifier | None':
    """A verifier over the map's stored local features; None when the map has none."""
    store = vmap.local_features
    if store is None:
        return None
    return Verifier(store.get, config, store.config.kind == 'orb', store.camera)


class Verifier:
    """Verifies the top few candidates of a frame against the map's stored local features.

    ``place_features``: place id -> LocalFeatures or None (a place without features is never
    verified). ``place_camera``: the map images' intrinsics, or None: a map without stored
    intrinsics is assumed to share the query camera (the essential matrix is then used whenever
    the query camera is known).
    """

    def __init__(self, place_features: Callable[[int], LocalFeatures | None],
                 config: VerificationConfig | None = None, binary: bool = False,
                 place_camera: CameraIntrinsics | None = None) -> None:
        self.config = config or VerificationConfig()
        self.config.validate()
        self.place_features = place_features
        self.binary = binary
        self.place_camera = place_camera

    def verify(self, query: LocalFeatures, place_ids: Sequence[int],
               query_camera: CameraIntrinsics | None = None,
               cache: dict[int, Verification] | None = None, top_k: int | None = None) -> list[Verification]:
        """Verification of each candidate (at most ``top_k``, by default the config's), re-ranked:
        verified first, by inliers.

        ``cache``: verifications of this query already computed (filled in), by place id.
        """
        out = []
        place_camera = self.place_camera if self.place_camera is not None else query_camera
        for pid in list(place_ids)[:self.config.top_k if top_k is None else top_k]:
            if cache is not None and int(pid) in cache:
                out.append(cache[int(pid)])
                continue
            feats = self.place_features(int(pid))
            if feats is None:
                out.append(Verification(int(pid), False, 0, 0, '', 0.0))
                continue
            out.append(verify_pair(query, feats, int(pid), self.config, query_camera, place_camera,
                                   self.binary))
            if cache is not None:
                cache[int(pid)] = out[-1]
        order = sorted(range(len(out)), key=lambda i: (not out[i].verified, -out[i].inliers, i))
        return [out[i] for i in order]

    def for_frame(self, query: Callable[[], LocalFeatures], query_camera: CameraIntrinsics | None,
                  timed: Callable[[float], None]) -> Callable[..., list[Verification]]:
        """The ``verify(candidates, top_k=None)`` that :meth:`LoopClosureFilter.update` takes, for one
        query frame: ``query()`` gives its features (extracted on first use), each candidate is
        verified once per frame (asked again, the result is reused) and its milliseconds go to
        ``timed`` once."""
        cache: dict[int, Verification] = {}

        def verify(candidates: Sequence[Any], top_k: int | None = None) -> list[Verification]:
            seen = set(cache)
            out = self.verify(query(), [c.place_id for c in candidates], query_camera, cache, top_k)
            for v in out:
                if v.place_id in cache and v.place_id not in seen:
                    timed(v.ms)
            return out
        return verify


__all__ = ['Verification', 'VerificationConfig', 'Verifier', 'for_map', 'median_parallax_deg',
           'mutual_ratio_matches', 'verify_pair']
