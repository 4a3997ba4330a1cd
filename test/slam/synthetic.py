"""A synthetic drive for the pose-graph tests: a rounded-rectangle loop driven 1.25 times, one node every
4 m, and the closures a verified revisit would give (true relative rotation and direction with noise)."""
from __future__ import annotations

import math

import numpy as np

from vpr_ros.slam.constraints import LoopConstraint, direction_only_covariance
from vpr_ros.slam.poses import make_pose, relative

STEP_M = 4.0
SPEED_MPS = 8.0


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def loop_drive(side_m: float = 120.0, laps: float = 1.25) -> tuple[np.ndarray, list[np.ndarray], int]:
    """(stamps, ground-truth poses, nodes per lap) of a square loop with quarter-circle corners (r 20 m)."""
    r = 20.0
    straight = side_m - 2 * r
    lap = 4 * (straight + math.pi * r / 2)
    s = np.arange(0.0, laps * lap, STEP_M)
    poses = []
    for d in s % lap:
        x, y, yaw = 0.0, -r, 0.0
        for side in range(4):
            heading = side * math.pi / 2
            if d <= straight:
                x, y = x + d * math.cos(heading), y + d * math.sin(heading)
                yaw = heading
                break
            x, y = x + straight * math.cos(heading), y + straight * math.sin(heading)
            d -= straight
            arc = math.pi * r / 2
            if d <= arc:
                a = d / r
                cx, cy = x - r * math.sin(heading), y + r * math.cos(heading)
                x, y = cx + r * math.sin(heading + a), cy - r * math.cos(heading + a)
                yaw = heading + a
                break
            c, s_ = math.cos(heading), math.sin(heading)
            x, y = x + r * (c - s_), y + r * (s_ + c)
            d -= arc
        poses.append(make_pose(rot_z(yaw), [x, y, 0.0]))
    return s / SPEED_MPS, poses, int(round(lap / STEP_M))


def scale_drifted(poses: list[np.ndarray], end_scale: float) -> list[np.ndarray]:
    """``poses`` re-chained with each step's length multiplied by a factor drifting linearly from 1 at the
    first step to ``end_scale`` at the last (a monocular scale drift, or a wheel wearing)."""
    out = [poses[0]]
    for k in range(len(poses) - 1):
        step = relative(poses[k], poses[k + 1]).copy()
        step[:3, 3] *= 1.0 + (end_scale - 1.0) * k / max(len(poses) - 2, 1)
        out.append(out[-1] @ step)
    return out


def revisit_closures(stamps: np.ndarray, gt: list[np.ndarray], per_lap: int, seed: int = 0,
                     rotation_noise_rad: float = 0.02, direction_noise_rad: float = 0.05,
                     every: int = 2) -> list[LoopConstraint]:
    """Direction-only closures from each second-lap node to a node near its first-lap twin (within one
    node), measured from the ground truth with Gaussian noise."""
    rng = np.random.default_rng(seed)
    out = []
    for j in range(per_lap, len(gt), every):
        i = j - per_lap + int(rng.integers(-1, 2))
        truth = relative(gt[i], gt[j])
        R = truth[:3, :3] @ rot_z(rng.normal(0.0, rotation_noise_rad))
        d = truth[:3, 3]
        if np.linalg.norm(d) < 1e-6:
            continue
        u = rot_z(rng.normal(0.0, direction_noise_rad)) @ (d / np.linalg.norm(d))
        out.append(LoopConstraint(float(stamps[j]), float(stamps[i]), R, u, direction_only_covariance(R, u)))
    return out


def metric_closures(stamps: np.ndarray, gt: list[np.ndarray], per_lap: int, seed: int = 0,
                    sigma_m: float = 0.2, sigma_rad: float = 0.02) -> list[LoopConstraint]:
    """Metric closures (translation with scale) from the ground truth with Gaussian noise."""
    rng = np.random.default_rng(seed)
    cov = np.diag([sigma_m ** 2] * 3 + [sigma_rad ** 2] * 3)
    out = []
    for j in range(per_lap, len(gt), 2):
        i = j - per_lap
        truth = relative(gt[i], gt[j])
        R = truth[:3, :3] @ rot_z(rng.normal(0.0, sigma_rad))
        t = truth[:3, 3] + rng.normal(0.0, sigma_m, 3)
        out.append(LoopConstraint(float(stamps[j]), float(stamps[i]), R, t, cov))
    return out
