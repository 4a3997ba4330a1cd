"""Relocalisation without ROS: when to trust a metric pose enough to announce it, and ``map -> odom``.

* :class:`AgreementGate` decides when a stream of metric poses is trustworthy enough to be announced
  once as an initial pose (what nav2/AMCL users otherwise click in RViz): ``frames`` consecutive
  confident solves whose transforms all lie within ``max_distance`` metres and ``max_angle`` radians
  of the newest. A frame without a confident solve breaks the streak. After it fires the gate stays
  quiet until :meth:`AgreementGate.rearm`.
* :func:`map_to_odom` composes the ``map -> odom`` transform a localisation system broadcasts on
  ``/tf`` (REP-105): ``T_map_odom = T_map_body @ inv(T_odom_body)``, from the metric pose of the body
  in the map and the odometry's pose of the same body at the same instant.

Transforms are 4x4 matrices named as in :mod:`vpr_ros.geometry.transforms` (``T_a_b`` maps points of
b into a).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vpr_ros.errors import ConfigError
from vpr_ros.frames import Pose
from vpr_ros.geometry.transforms import invert, pose_to_matrix, rotation_angle_deg
from vpr_ros.settings import setting


@dataclass(frozen=True)
class AgreementConfig:
    """When consecutive metric solves agree enough to announce a pose; the node's ``relocalization.*``."""

    SETTINGS_PREFIX = 'relocalization'

    frames: int = setting(
        3, 'Consecutive processed frames with a good metric solve whose transforms must agree (map -> odom '
        'with odometry, map -> body without).', low=1, high=1000, name='agreement_frames')
    max_distance: float = setting(
        0.5, "Largest distance [m] of each agreeing transform from the newest (0.5 m: AMCL's default "
        'initial-pose sigma).', low=0.0, high=1.0e4)
    max_angle: float = setting(
        math.pi / 12, "Largest rotation [rad] of each agreeing transform from the newest (pi/12: AMCL's "
        'default initial yaw sigma).', low=0.0, high=math.pi)
    min_confidence: float = setting(
        0.0, 'Minimum confidence of an agreeing frame: the calibrated confidence (P(top-1 right)); without a '
        "confidence model the score mapped by covariance.score_low/high to [0, 1]. 0 = the metric solve's "
        'own gates only.', low=0.0, high=1.0)

    def validate(self) -> None:
        if self.frames < 1:
            raise ConfigError(f'relocalization.agreement_frames must be >= 1, got {self.frames}')
        for name, value in (('max_distance', self.max_distance), ('max_angle', self.max_angle),
                            ('min_confidence', self.min_confidence)):
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f'relocalization.{name} must be a finite number >= 0, got {value}')


def transform_difference(T_a: np.ndarray, T_b: np.ndarray) -> tuple[float, float]:
    """(translation distance [m], rotation angle [rad]) between two transforms of the same frames."""
    distance = float(np.linalg.norm(T_a[:3, 3] - T_b[:3, 3]))
    return distance, math.radians(rotation_angle_deg(T_a[:3, :3], T_b[:3, :3]))


class AgreementGate:
    """Announce once after ``frames`` consecutive confident, mutually consistent transforms.

    :meth:`offer` takes one processed frame: its transform (None = no confident metric solve, which
    breaks the streak) and confidence. It returns True exactly once per arming, on the frame that
    completes the streak; the caller publishes that frame's pose.
    """

    def __init__(self, config: AgreementConfig) -> None:
        config.validate()
        self.config = config
        self.armed = True
        self._streak: list[np.ndarray] = []
        self.fired = 0

    def rearm(self) -> None:
        self.armed = True
        self._streak.clear()

    @property
    def streak(self) -> int:
        return len(self._streak)

    def offer(self, T: np.ndarray | None, confidence: float = 1.0) -> bool:
        if not self.armed:
            return False
        cfg = self.config
        if T is None or not confidence >= cfg.min_confidence or not np.all(np.isfinite(T)):
            self._streak.clear()
            return False
        if all(self._agrees(S, T) for S in self._streak):
            self._streak.append(T)
        else:  # a jump: a new streak starts at this frame
            self._streak = [T]
        if len(self._streak) < cfg.frames:
            return False
        self.armed = False
        self._streak.clear()
        self.fired += 1
        return True

    def _agrees(self, T_a: np.ndarray, T_b: np.ndarray) -> bool:
        distance, angle = transform_difference(T_a, T_b)
        return distance <= self.config.max_distance and angle <= self.config.max_angle


def map_to_odom(T_map_body: np.ndarray, T_odom_body: np.ndarray) -> np.ndarray:
    """``T_map_odom`` such that ``T_map_odom @ T_odom_body == T_map_body``."""
    return T_map_body @ invert(T_odom_body)


def odometry_at(stamps: Sequence[float], poses: Sequence[Pose], t: float,
                tolerance: float) -> np.ndarray | None:
    """``T_odom_body`` at ``t``: interpolated between the odometry samples around ``t`` when both lie
    within ``tolerance`` seconds of it, else the nearest sample within ``tolerance``; None when no
    sample is that close. Samples need not be sorted; position-only samples are ignored."""
    usable = [k for k, p in enumerate(poses) if p.orientation is not None]  # position-only: no transform
    stamps, poses = [stamps[k] for k in usable], [poses[k] for k in usable]
    if not stamps:
        return None
    order = np.argsort(np.asarray(stamps, np.float64), kind='stable')
    s = np.asarray(stamps, np.float64)[order]
    i = int(np.searchsorted(s, t))
    before, after = (int(order[i - 1]) if i > 0 else None), (int(order[i]) if i < len(s) else None)
    near = [(abs(stamps[k] - t), k) for k in (before, after)
            if k is not None and abs(stamps[k] - t) <= tolerance]
    if not near:
        return None
    if before is not None and after is not None and len(near) == 2 and stamps[after] > stamps[before]:
        a = (t - stamps[before]) / (stamps[after] - stamps[before])
        return _interpolate(pose_to_matrix(poses[before]), pose_to_matrix(poses[after]), a)
    return pose_to_matrix(poses[min(near)[1]])


def _interpolate(T0: np.ndarray, T1: np.ndarray, a: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation, Slerp

    T = np.eye(4)
    T[:3, 3] = (1 - a) * T0[:3, 3] + a * T1[:3, 3]
    T[:3, :3] = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([T0[:3, :3], T1[:3, :3]])))(a).as_matrix()
    return T


__all__ = ['AgreementConfig', 'AgreementGate', 'map_to_odom', 'odometry_at', 'transform_difference']
