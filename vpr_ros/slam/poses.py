"""Rigid transforms as 4x4 numpy arrays, and the one camera convention the back end assumes.

A trajectory pose ``T_world_body`` maps body coordinates to world (map) coordinates. The body
follows REP-103 (x forward, y left, z up); the camera's optical frame REP-103's optical convention
(x right, y down, z forward). vpr_ros poses are *camera* poses (the sample world's and, by
convention, a bag's pose topic: yaw is the optical axis heading), so body and camera share their
origin and differ by :data:`BODY_FROM_OPTICAL` only.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vpr_ros.frames import Pose

# Columns: the optical x (right), y (down) and z (forward) axes in body coordinates.
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0],
                              [-1.0, 0.0, 0.0],
                              [0.0, -1.0, 0.0]])


def make_pose(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = np.asarray(rotation, np.float64)
    T[:3, 3] = np.asarray(translation, np.float64).reshape(3)
    return T


def pose_matrix(pose: Pose) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return make_pose(Rotation.from_quat(pose.orientation).as_matrix(), pose.position)


def inverse(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return make_pose(R.T, -R.T @ t)


def relative(T_a: np.ndarray, T_b: np.ndarray) -> np.ndarray:
    """``T_a^-1 T_b``: pose b in the frame of pose a."""
    return inverse(T_a) @ T_b


def yaw_of(T: np.ndarray) -> float:
    return float(np.arctan2(T[1, 0], T[0, 0]))


def rotation_angle(R: np.ndarray) -> float:
    """Angle [rad] of a rotation matrix."""
    return float(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)))


def positions(poses: Sequence[np.ndarray]) -> np.ndarray:
    return np.array([T[:3, 3] for T in poses], np.float64).reshape(-1, 3)


__all__ = ['BODY_FROM_OPTICAL', 'inverse', 'make_pose', 'pose_matrix', 'positions', 'relative',
           'rotation_angle', 'yaw_of']
