"""Frame conventions of metric poses (the one place where they are defined).

* Map poses (``vpr_ros.frames.Pose``, ``places.sqlite``) are poses of a **body-style** frame in the
  map frame (REP-103: x forward, y left, z up). For the sample world and for maps built from
  camera poses the body frame sits at the camera with x along the optical axis
  (``vpr_ros/sample``: "yaw = optical axis heading"); for maps built from a robot's odometry
  it is the odometry's child frame (``base_link``) and ``camera_to_body`` gives the camera mount.
* Cameras use the **optical** frame (REP-103 ``*_optical``: x right, y down, z forward), the
  frame OpenCV projects in.
* ``CameraMount`` is the pose of the camera optical frame in the body frame, ``T_body_optical``.
  The default is the pure REP-103 rotation (camera at the body origin, optical axis = body x).
* Transforms are 4x4 homogeneous matrices named ``T_a_b``: they map points of frame b into
  frame a (``X_a = T_a_b @ X_b``), i.e. ``T_a_b`` is the pose of b expressed in a.
* A 6x6 pose covariance is over ``(x, y, z, rot_x, rot_y, rot_z)`` (ROS PoseWithCovariance
  order): the position perturbation in the parent frame's axes and a rotation-vector
  perturbation applied on the left in the parent frame's axes, ``R = Exp(dtheta) @ R_hat``.
  :func:`covariance_to_local` converts it to the right (body-axes) perturbation
  ``T = T_hat @ Exp(xi)`` in GTSAM's ``(rot, trans)`` order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from vpr_ros.errors import ConfigError
from vpr_ros.frames import Pose

# Columns are the optical axes expressed in body axes: optical x = -body y, y = -body z, z = body x.
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def make_transform(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = np.asarray(R, np.float64)
    T[:3, 3] = np.asarray(t, np.float64).reshape(3)
    return T


def invert(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return make_transform(R.T, -R.T @ t)


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """``T_map_body`` of a map pose."""
    return make_transform(Rotation.from_quat(pose.orientation).as_matrix(), pose.position)


def matrix_to_pose(T: np.ndarray) -> Pose:
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    return Pose(tuple(float(v) for v in T[:3, 3]), tuple(float(v) for v in q))  # type: ignore[arg-type]


@dataclass(frozen=True)
class CameraMount:
    """``T_body_optical``: the camera optical frame in the body frame of the map poses."""

    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)   # metres, body axes
    rotation: tuple[float, float, float, float] | None = None    # body <- optical quaternion x, y, z, w

    @property
    def T_body_optical(self) -> np.ndarray:
        R = R_BODY_OPTICAL if self.rotation is None else Rotation.from_quat(self.rotation).as_matrix()
        return make_transform(R, self.translation)

    @classmethod
    def parse(cls, text: str) -> 'CameraMount':
        """``''`` (the default mount) or ``'x y z qx qy qz qw'``; ConfigError otherwise."""
        if not text.strip():
            return cls()
        try:
            values = [float(v) for v in text.replace(',', ' ').split()]
        except ValueError as exc:
            raise ConfigError(f"camera_to_body must be 'x y z qx qy qz qw', got {text!r}") from exc
        q = np.asarray(values[3:], np.float64)
        if len(values) != 7 or not np.all(np.isfinite(values)) or not 0.5 < np.linalg.norm(q) < 2.0:
            raise ConfigError(f"camera_to_body must be 7 finite numbers 'x y z qx qy qz qw' with a unit "
                              f'quaternion, got {text!r}')
        q = q / np.linalg.norm(q)
        return cls((values[0], values[1], values[2]), (float(q[0]), float(q[1]), float(q[2]), float(q[3])))

    def camera_in_map(self, T_map_body: np.ndarray) -> np.ndarray:
        """``T_map_optical`` of a camera on a body at ``T_map_body``."""
        return T_map_body @ self.T_body_optical

    def body_in_map(self, T_map_optical: np.ndarray) -> np.ndarray:
        return T_map_optical @ invert(self.T_body_optical)


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Angle of the rotation between two orientations (degrees)."""
    return float(np.degrees(np.linalg.norm(Rotation.from_matrix(R_a.T @ R_b).as_rotvec())))


def pose_error(T_est: np.ndarray, T_true: np.ndarray) -> np.ndarray:
    """``(dp, dtheta)``: position difference and left rotation-vector difference, both in the parent
    frame's axes (the parameterisation of the 6x6 covariances here). ``T_est`` may be a stack
    (n, 4, 4): then (n, 6), in one rotation conversion."""
    dp = T_est[..., :3, 3] - T_true[:3, 3]
    dtheta = Rotation.from_matrix(T_est[..., :3, :3] @ T_true[:3, :3].T).as_rotvec()
    return np.concatenate([dp, dtheta], axis=-1)


def covariance_in_body(cov: np.ndarray, R: np.ndarray) -> np.ndarray:
    """A ``(x, y, z, rot_x, rot_y, rot_z)`` parent-frame covariance of a pose with rotation ``R`` -> the
    same order in the pose's own axes, i.e. of the right perturbation ``T = T_hat * (Exp(omega), v)``
    (first order: ``v = R^T dp``, ``omega = R^T dtheta``); the convention of
    ``vpr_ros.slam.constraints.LoopConstraint``."""
    B = np.zeros((6, 6))
    B[:3, :3] = B[3:, 3:] = R.T
    return B @ cov @ B.T


def covariance_to_local(cov: np.ndarray, R: np.ndarray) -> np.ndarray:
    """As :func:`covariance_in_body`, reordered to GTSAM's local coordinates ``(omega, v)``."""
    body = covariance_in_body(cov, R)
    order = [3, 4, 5, 0, 1, 2]
    return body[np.ix_(order, order)]


def relative_covariance(cov_query: np.ndarray, R_reference: np.ndarray) -> np.ndarray:
    """Covariance of ``T_ref_query = T_map_ref^-1 T_map_query`` (reference pose taken as exact) from the
    map-frame covariance of the query: both blocks rotated into the reference frame's axes."""
    B = np.zeros((6, 6))
    B[:3, :3] = B[3:, 3:] = R_reference.T
    return B @ cov_query @ B.T


__all__ = ['CameraMount', 'R_BODY_OPTICAL', 'covariance_in_body', 'covariance_to_local', 'invert',
           'make_transform', 'matrix_to_pose', 'pose_error', 'pose_to_matrix', 'relative_covariance',
           'rotation_angle_deg']
