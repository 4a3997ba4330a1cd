"""Loop-closure constraints as a SLAM back end consumes them: a relative pose and its 6x6 covariance.

A :class:`LoopConstraint` says where the query frame's body was relative to the matched place's body:
``T_place_query`` (rotation, translation in metres), as a between-factor measurement from the place
node to the query node. Its ``covariance`` is that of the perturbation xi in
``T_true = T_place_query * Exp(xi)``, i.e. expressed in the *query* body frame (GTSAM's convention for
a between-factor), ordered as ROS orders pose covariances: (x, y, z, rotation about x, y, z).

Two kinds exist, told apart by the covariance alone:

* **metric**: the translation has a scale (a PnP solve against triangulated map landmarks, issue 25
  part 1); the back end adds one between-factor with that covariance;
* **direction-only**: what today's verification gives (:mod:`vpr_ros.matching.verification`: the
  essential matrix's rotation and unit translation direction; a monocular pair has no scale). The
  translation is then a unit vector, its variance *along* itself is :data:`UNKNOWN_SCALE_VARIANCE_M2`
  (the 10^6 m^2 that ``~/loop_closure_constraint`` publishes) and its variance across it is the
  direction's angular variance (rad^2: the metric variance at 1 m). The back end reads such a
  constraint as a relative rotation plus a bearing (:mod:`vpr_ros.slam.graph`), never as a distance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vpr_ros.errors import ConfigError
from vpr_ros.slam.poses import BODY_FROM_OPTICAL, make_pose

if TYPE_CHECKING:
    from vpr_ros.geometry.metric import MetricPose
    from vpr_ros.matching.loop_closure import LoopDecision
    from vpr_ros.matching.verification import Verification

UNKNOWN_SCALE_VARIANCE_M2 = 1.0e6    # the scale of a direction is unknown (also ~/loop_closure_constraint's)
DIRECTION_ONLY_VARIANCE_M2 = 1.0e4   # at or above this along the translation, the constraint has no scale
ROTATION_SIGMA_RAD = 0.05            # ~3 deg: a conservative fixed value for a verified pair (also published)
BEARING_SIGMA_RAD = 0.1              # ~6 deg: the translation direction of a verified pair (see docs)


@dataclass(frozen=True)
class LoopConstraint:
    t_query: float
    t_match: float
    rotation: np.ndarray      # (3, 3) R_place_query, body frames
    translation: np.ndarray   # (3,) query position in the place body frame [m]; unit norm when direction-only
    covariance: np.ndarray    # (6, 6), see the module docstring for the frame and order
    place_id: int = -1
    inliers: int = 0

    def __post_init__(self) -> None:
        R = np.asarray(self.rotation, np.float64)
        t = np.asarray(self.translation, np.float64).reshape(-1)
        cov = np.asarray(self.covariance, np.float64)
        if R.shape != (3, 3) or not np.allclose(R @ R.T, np.eye(3), atol=1e-6) or np.linalg.det(R) <= 0:
            raise ConfigError('loop constraint: rotation must be a 3x3 rotation matrix')
        if t.shape != (3,) or not np.isfinite(t).all():
            raise ConfigError('loop constraint: translation must be 3 finite values')
        if cov.shape != (6, 6) or not np.isfinite(cov).all() or not np.allclose(cov, cov.T, atol=1e-9):
            raise ConfigError('loop constraint: covariance must be a finite symmetric 6x6 matrix')
        if np.linalg.eigvalsh(cov).min() <= 0:
            raise ConfigError('loop constraint: covariance must be positive definite')
        object.__setattr__(self, 'rotation', R)
        object.__setattr__(self, 'translation', t)
        object.__setattr__(self, 'covariance', cov)

    @property
    def pose(self) -> np.ndarray:
        """``T_place_query`` as a 4x4 matrix."""
        return make_pose(self.rotation, self.translation)

    def _direction_in_query(self) -> np.ndarray:
        norm = float(np.linalg.norm(self.translation))
        if norm < 1e-9:
            return np.zeros(3)
        return self.rotation.T @ (self.translation / norm)

    @property
    def direction_only(self) -> bool:
        a = self._direction_in_query()
        return bool(a.any() and a @ self.covariance[:3, :3] @ a >= DIRECTION_ONLY_VARIANCE_M2)

    @property
    def bearing_sigma_rad(self) -> float:
        """Angular standard deviation of the translation direction (from the variance across it)."""
        a = self._direction_in_query()
        across = np.eye(3) - np.outer(a, a)
        variance = float(np.trace(across @ self.covariance[:3, :3] @ across)) / 2.0
        return float(np.sqrt(variance) / max(float(np.linalg.norm(self.translation)), 1e-9))

    @property
    def rotation_covariance(self) -> np.ndarray:
        return self.covariance[3:, 3:]


def direction_only_covariance(rotation: np.ndarray, direction: np.ndarray,
                              rotation_sigma: float = ROTATION_SIGMA_RAD,
                              bearing_sigma: float = BEARING_SIGMA_RAD) -> np.ndarray:
    """The 6x6 covariance of a direction-only constraint (module docstring): in the query frame the
    translation is free along ``R^T direction`` and ``bearing_sigma`` (rad, at unit norm) across it."""
    a = np.asarray(rotation, np.float64).T @ (np.asarray(direction, np.float64) / np.linalg.norm(direction))
    along = np.outer(a, a)
    cov = np.zeros((6, 6))
    cov[:3, :3] = UNKNOWN_SCALE_VARIANCE_M2 * along + bearing_sigma ** 2 * (np.eye(3) - along)
    cov[3:, 3:] = rotation_sigma ** 2 * np.eye(3)
    return cov


def from_verification(t_query: float, t_match: float, verification: 'Verification',
                      body_from_camera: np.ndarray = BODY_FROM_OPTICAL,
                      rotation_sigma: float = ROTATION_SIGMA_RAD,
                      bearing_sigma: float = BEARING_SIGMA_RAD) -> LoopConstraint:
    """The direction-only constraint of a verified closure (essential matrix model).

    The verification's ``[R | t]`` is the query camera's pose in the place camera's optical frame
    (:mod:`vpr_ros.matching.verification`); ``body_from_camera`` rotates it into the body frames.
    """
    if verification.rotation is None or verification.translation is None:
        raise ConfigError(f'closure to place {verification.place_id} has no relative pose (model '
                          f'{verification.model or "none"!r}): the pose graph needs the essential matrix, '
                          'i.e. the camera intrinsics (--camera-info)')
    B = np.asarray(body_from_camera, np.float64)
    R = B @ np.asarray(verification.rotation, np.float64) @ B.T
    u = B @ np.asarray(verification.translation, np.float64).reshape(3)
    u = u / np.linalg.norm(u)
    cov = direction_only_covariance(R, u, rotation_sigma, bearing_sigma)
    return LoopConstraint(t_query, t_match, R, u, cov, verification.place_id, verification.inliers)


def from_metric(t_query: float, t_match: float, solved: 'MetricPose',
                T_map_place_body: np.ndarray) -> LoopConstraint:
    """The metric constraint of a good PnP solve against the matched place (:mod:`vpr_ros.geometry.metric`):
    the query body in the place body, translation in metres, the solve's covariance in the query body."""
    R, t, cov = solved.body_constraint(T_map_place_body)
    return LoopConstraint(t_query, t_match, R, t, 0.5 * (cov + cov.T), solved.place_id, solved.inliers)


METRIC_KIND, DIRECTION_KIND = 'metric', 'direction_only'


def published_kind(verification: 'Verification | None', solved: 'MetricPose | None') -> str | None:
    """Which constraint a published closure gets (``~/loop_closure_constraint`` and the pose graph):
    metric when the metric solve against the matched place is good, else direction-only when the
    verification has a relative pose (essential matrix), else none."""
    if solved is not None and solved.good:
        return METRIC_KIND
    if verification is not None and verification.rotation is not None:
        return DIRECTION_KIND
    return None


def published(decision: 'LoopDecision', solved: 'MetricPose | None', T_map_place_body: np.ndarray | None,
              body_from_camera: np.ndarray = BODY_FROM_OPTICAL) -> LoopConstraint:
    """The constraint of a published closure, chosen by :func:`published_kind` (``T_map_place_body``: the
    matched place's map pose, needed by a metric one). ConfigError when the closure has no relative pose."""
    kind = published_kind(decision.verification, solved)
    if kind == METRIC_KIND and solved is not None and T_map_place_body is not None:
        return from_metric(decision.t_query, decision.t_match, solved, T_map_place_body)
    if decision.verification is None:
        raise ConfigError(f'closure to place {decision.place_id} was not verified: no relative pose')
    return from_verification(decision.t_query, decision.t_match, decision.verification, body_from_camera)


__all__ = ['BEARING_SIGMA_RAD', 'DIRECTION_KIND', 'DIRECTION_ONLY_VARIANCE_M2', 'METRIC_KIND',
           'ROTATION_SIGMA_RAD', 'UNKNOWN_SCALE_VARIANCE_M2', 'LoopConstraint', 'direction_only_covariance',
           'from_metric', 'from_verification', 'published', 'published_kind']
