"""Synthetic street scenes with known geometry for the geometry tests."""
from __future__ import annotations

import math

import numpy as np

from vpr_ros.features import CameraIntrinsics, LocalFeatures
from vpr_ros.frames import Pose
from vpr_ros.geometry.transforms import CameraMount, invert, pose_to_matrix

SIZE = (480, 640)  # height, width
CAMERA = CameraIntrinsics((320.0, 0.0, 319.5, 0.0, 320.0, 239.5, 0.0, 0.0, 1.0), (), 'plumb_bob', 640, 480)


def facade_points(rng: np.random.Generator, n: int = 1500) -> np.ndarray:
    """Points on two facades 6-9 m either side of a street along +x (body/map frame: z up)."""
    x = rng.uniform(-10, 60, n)
    side = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    y = side * rng.uniform(6, 9, n)
    z = rng.uniform(-1.5, 8, n)
    return np.column_stack([x, y, z])


def pose_at(x: float, y: float = 0.0, yaw_deg: float = 0.0, z: float = 0.0) -> Pose:
    return Pose.from_xy_yaw(x, y, math.radians(yaw_deg), z)


def observe(points: np.ndarray, descriptors: np.ndarray, pose: Pose, rng: np.random.Generator,
            noise_px: float = 0.5, mount: CameraMount = CameraMount()) -> tuple[LocalFeatures, np.ndarray]:
    """Features of the visible points seen from ``pose`` (pixel noise), and the ids of those points."""
    T_cam_map = invert(mount.camera_in_map(pose_to_matrix(pose)))
    Xc = points @ T_cam_map[:3, :3].T + T_cam_map[:3, 3]
    K = CAMERA.matrix_for(SIZE)
    with np.errstate(divide='ignore', invalid='ignore'):
        uv = (Xc / Xc[:, 2:]) @ K.T
    h, w = SIZE
    vis = (Xc[:, 2] > 0.5) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    ids = np.flatnonzero(vis)
    kp = uv[ids, :2] + rng.normal(0, noise_px, (len(ids), 2))
    return LocalFeatures(kp.astype(np.float32), descriptors[ids], SIZE), ids


def descriptors_for(n: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct 32-byte binary descriptors (ORB-sized), one per point."""
    return rng.integers(0, 256, (n, 32), dtype=np.uint8)
