"""Camera pose from 2-D/3-D correspondences: PnP + MAGSAC++, Levenberg-Marquardt, Gauss-Newton covariance.

1. ``cv2.solvePnPRansac(..., flags=cv2.USAC_MAGSAC)`` on undistorted pixel coordinates (the
   distortion is removed first, so the threshold and the residuals are plain pinhole pixels);
2. ``cv2.solvePnPRefineLM`` on the inliers, the inliers re-selected with the refined pose at the
   same threshold, and refined once more;
3. the covariance of the six pose parameters from the Gauss-Newton approximation of the Hessian,
   ``Sigma = s^2 (J^T J)^-1``, where ``J`` is the (2n x 6) Jacobian of the inlier reprojections
   (``cv2.projectPoints``) and ``s^2 = sum(r^2) / (2n - 6)`` the residual variance; it is then
   propagated (numerically, central differences) to the map-frame covariance of the requested
   pose parameterisation (:mod:`vpr_ros.geometry.transforms`). The landmarks are treated as
   exact, so this is the precision of the solve given the map, not the map's own error.

A solve is *good* when it has at least ``min_inliers`` inliers (RTAB-Map's ``Vis/MinInliers``
default for PnP registration is 20; ORB-SLAM's relocalisation keeps a PnP pose from 10-15
RANSAC inliers and accepts it after optimisation with 50 map-point inliers over a whole local
map), at least ``min_inlier_ratio`` of the correspondences are inliers, and the position
standard deviation from the covariance is at most ``max_position_sigma_m``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vpr_ros.errors import ConfigError
from vpr_ros.geometry.transforms import invert, make_transform, pose_error
from vpr_ros.settings import setting


@dataclass(frozen=True)
class PnPConfig:
    """The described fields are the node's ``metric.*`` parameters (its metric pose; docs/localization.md)."""

    min_inliers: int = setting(20, "PnP inliers of a good solve (RTAB-Map's Vis/MinInliers).",
                               low=6, high=100000)
    threshold_px: float = setting(  # sqrt(chi2_2dof(0.95)) at 1 px keypoint noise (ORB-SLAM's gate)
        2.45, 'PnP (MAGSAC++) and triangulation reprojection threshold [px]; 2.45 = the 95% chi-square '
        'gate of 1 px keypoint noise (ORB-SLAM).', low=0.1, high=100.0)
    confidence: float = 0.999
    max_iterations: int = 2000
    min_inlier_ratio: float = 0.2
    max_position_sigma_m: float = setting(
        1.0, 'A solve whose position standard deviation (largest axis of its covariance) exceeds this [m] is '
        'not used.', low=0.001, high=1.0e4, name='max_position_sigma')

    def validate(self) -> None:
        if self.threshold_px <= 0:
            raise ConfigError('pnp: threshold_px must be > 0')
        if not 0 < self.confidence < 1:
            raise ConfigError('pnp: confidence must be in (0, 1)')
        if self.max_iterations < 10:
            raise ConfigError('pnp: max_iterations must be >= 10')
        if self.min_inliers < 6:
            raise ConfigError('pnp: min_inliers must be >= 6 (the covariance needs 2n > 6 residuals)')
        if not 0 <= self.min_inlier_ratio <= 1:
            raise ConfigError('pnp: min_inlier_ratio must be in [0, 1]')
        if self.max_position_sigma_m <= 0:
            raise ConfigError('pnp: max_position_sigma_m must be > 0')


@dataclass(frozen=True)
class PnPSolution:
    """``T_cam_world`` (world -> optical camera) of a solve and its quality."""

    T_cam_world: np.ndarray          # (4, 4)
    inliers: np.ndarray              # (k,) int64 rows of the correspondences
    correspondences: int
    rms_px: float                    # inlier reprojection RMS after refinement
    param_covariance: np.ndarray     # (6, 6) over OpenCV's (rvec, tvec) of T_cam_world

    @property
    def inlier_ratio(self) -> float:
        return len(self.inliers) / self.correspondences if self.correspondences else 0.0


def _rt(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    rvec, _ = cv2.Rodrigues(np.ascontiguousarray(T[:3, :3]))
    return rvec.reshape(3), T[:3, 3].copy()


def _T(params: np.ndarray) -> np.ndarray:
    import cv2

    R, _ = cv2.Rodrigues(np.asarray(params[:3], np.float64).reshape(3, 1))
    return make_transform(R, params[3:6])


def _residuals(points: np.ndarray, pixels: np.ndarray, K: np.ndarray, rvec: np.ndarray,
               tvec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) reprojection errors [px] and the (2n, 6) Jacobian wrt (rvec, tvec)."""
    import cv2

    proj, jac = cv2.projectPoints(points, rvec, tvec, K, None)
    return np.linalg.norm(proj.reshape(-1, 2) - pixels, axis=1), jac[:, :6]


def solve_pnp(points: np.ndarray, pixels: np.ndarray, K: np.ndarray,
              config: PnPConfig = PnPConfig()) -> PnPSolution | None:
    """Pose of a pinhole camera ``K`` (no distortion: pass undistorted pixels) from (n, 3) world points
    and their (n, 2) pixels; None when no model is found or fewer than 6 inliers remain."""
    import cv2

    points = np.ascontiguousarray(points, np.float64).reshape(-1, 3)
    pixels = np.ascontiguousarray(pixels, np.float64).reshape(-1, 2)
    n = len(points)
    if n < max(6, config.min_inliers):
        return None
    try:
        ok, rvec, tvec, inl = cv2.solvePnPRansac(
            points, pixels, K, None, iterationsCount=config.max_iterations,
            reprojectionError=config.threshold_px, confidence=config.confidence, flags=cv2.USAC_MAGSAC)
    except cv2.error:  # USAC asserts on some degenerate sets: no model
        return None
    if not ok or inl is None or len(inl) < 6:
        return None
    inliers = np.asarray(inl, np.int64).reshape(-1)
    for _ in range(2):
        rvec, tvec = cv2.solvePnPRefineLM(points[inliers], pixels[inliers], K, None, rvec, tvec)
        err, _ = _residuals(points, pixels, K, rvec, tvec)
        depth = (points @ cv2.Rodrigues(rvec)[0].T + tvec.reshape(3))[:, 2]
        inliers = np.flatnonzero((err <= config.threshold_px) & (depth > 0))
        if len(inliers) < 6:
            return None
    rvec, tvec = cv2.solvePnPRefineLM(points[inliers], pixels[inliers], K, None, rvec, tvec)
    err, J = _residuals(points[inliers], pixels[inliers], K, rvec, tvec)
    dof = 2 * len(inliers) - 6
    s2 = float(np.sum(err ** 2)) / dof
    try:
        cov = s2 * np.linalg.inv(J.T @ J)
    except np.linalg.LinAlgError:
        return None
    T = _T(np.concatenate([rvec.reshape(3), tvec.reshape(3)]))
    return PnPSolution(T, inliers, n, float(np.sqrt(np.mean(err ** 2))), cov)


def propagate(solution: PnPSolution, pose_of: Callable[[np.ndarray], np.ndarray],
              step: float = 1e-6) -> np.ndarray:
    """The 6x6 covariance of ``pose_of(T_cam_world)`` (a 4x4 pose, e.g. the body in the map) in the
    ``(dp, dtheta)`` parameterisation of :func:`pose_error`, by central differences."""
    rvec, tvec = _rt(solution.T_cam_world)
    theta = np.concatenate([rvec, tvec])
    centre = pose_of(solution.T_cam_world)
    steps = np.eye(6) * step
    errors = pose_error(np.stack([pose_of(_T(theta + d)) for d in steps]
                                 + [pose_of(_T(theta - d)) for d in steps]), centre)
    G = (errors[:6] - errors[6:]).T / (2 * step)
    cov = G @ solution.param_covariance @ G.T
    return (cov + cov.T) / 2


def camera_in_world(T_cam_world: np.ndarray) -> np.ndarray:
    return invert(T_cam_world)


__all__ = ['PnPConfig', 'PnPSolution', 'camera_in_world', 'propagate', 'solve_pnp']
