"""The relocalisation gate (agreement over consecutive frames, one announcement per arming) and the
map -> odom composition, without ROS."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vpr_ros.errors import ConfigError
from vpr_ros.frames import Pose
from vpr_ros.geometry.transforms import make_transform, matrix_to_pose
from vpr_ros.relocalization import (
    AgreementConfig,
    AgreementGate,
    map_to_odom,
    odometry_at,
    transform_difference,
)


def pose_T(x: float, y: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    return make_transform(Rotation.from_euler('z', yaw).as_matrix(), [x, y, 0.0])


def test_fires_once_after_n_agreeing_frames_then_stays_quiet_until_rearmed() -> None:
    gate = AgreementGate(AgreementConfig(frames=3, max_distance=0.5, max_angle=0.2))
    assert [gate.offer(pose_T(10.0 + 0.1 * k)) for k in range(3)] == [False, False, True]
    assert not gate.armed
    assert not any(gate.offer(pose_T(10.0)) for _ in range(5))  # quiet
    gate.rearm()
    assert [gate.offer(pose_T(20.0)) for _ in range(3)] == [False, False, True]
    assert gate.fired == 2


def test_a_frame_without_a_confident_solve_breaks_the_streak() -> None:
    gate = AgreementGate(AgreementConfig(frames=3, min_confidence=0.5))
    assert not gate.offer(pose_T(0.0)) and not gate.offer(pose_T(0.0))
    assert not gate.offer(None)                           # no metric solve
    assert not gate.offer(pose_T(0.0)) and not gate.offer(pose_T(0.0))
    assert not gate.offer(pose_T(0.0), confidence=0.4)    # below min_confidence
    assert gate.streak == 0
    assert not gate.offer(pose_T(0.0), 0.6) and not gate.offer(pose_T(0.0), 0.6)
    assert gate.offer(pose_T(0.0), 0.6)
    assert not AgreementGate(AgreementConfig(frames=1)).offer(pose_T(math.nan))


@pytest.mark.parametrize('jump', [pose_T(0.6), pose_T(0.0, yaw=0.25)])
def test_a_jump_beyond_distance_or_angle_restarts_the_streak(jump: np.ndarray) -> None:
    gate = AgreementGate(AgreementConfig(frames=3, max_distance=0.5, max_angle=0.2))
    assert not gate.offer(pose_T(0.0)) and not gate.offer(pose_T(0.0))
    assert not gate.offer(jump) and gate.streak == 1      # disagrees with the first two
    assert not gate.offer(jump) and gate.offer(jump)


def test_every_frame_of_the_streak_must_agree_with_the_newest() -> None:
    gate = AgreementGate(AgreementConfig(frames=3, max_distance=0.5, max_angle=1.0))
    gate.offer(pose_T(0.0))
    gate.offer(pose_T(0.4))            # agrees with 0.0
    assert not gate.offer(pose_T(0.8))  # agrees with 0.4 but not with 0.0: restart
    assert gate.streak == 1


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match='agreement_frames'):
        AgreementGate(AgreementConfig(frames=0))
    with pytest.raises(ConfigError, match='max_distance'):
        AgreementConfig(max_distance=math.inf).validate()


def test_transform_difference() -> None:
    d, a = transform_difference(pose_T(1.0, 2.0, 0.1), pose_T(4.0, 6.0, -0.2))
    assert d == pytest.approx(5.0) and a == pytest.approx(0.3)


def random_T(rng: np.random.Generator) -> np.ndarray:
    return make_transform(Rotation.random(random_state=rng).as_matrix(), rng.normal(0, 10, 3))


def test_map_to_odom_composes_back_to_the_map_pose() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        T_map_odom, T_odom_body = random_T(rng), random_T(rng)
        T_map_body = T_map_odom @ T_odom_body
        np.testing.assert_allclose(map_to_odom(T_map_body, T_odom_body), T_map_odom, atol=1e-9)
    # a worked planar case: the robot drove 2 m along odom x, the map says it is at (10, 5) facing +y
    T = map_to_odom(pose_T(10.0, 5.0, math.pi / 2), pose_T(2.0))
    np.testing.assert_allclose(T, pose_T(10.0, 3.0, math.pi / 2), atol=1e-12)


def test_odometry_is_interpolated_or_nearest_within_the_tolerance() -> None:
    poses = [matrix_to_pose(pose_T(0.0)), matrix_to_pose(pose_T(1.0, yaw=0.2)), matrix_to_pose(pose_T(3.0))]
    stamps = [10.0, 10.1, 10.5]
    mid = odometry_at(stamps, poses, 10.05, tolerance=0.1)
    np.testing.assert_allclose(mid, pose_T(0.5, yaw=0.1), atol=1e-9)
    np.testing.assert_allclose(odometry_at(stamps, poses, 10.1, 0.1), pose_T(1.0, yaw=0.2), atol=1e-9)
    # 10.3 is 0.2 s from both neighbours: nothing within 0.1 s
    assert odometry_at(stamps, poses, 10.3, 0.1) is None
    # one neighbour close enough: the nearest sample, not an interpolation with a far one
    np.testing.assert_allclose(odometry_at(stamps, poses, 10.45, 0.1), pose_T(3.0), atol=1e-9)
    np.testing.assert_allclose(odometry_at(stamps, poses, 10.55, 0.1), pose_T(3.0), atol=1e-9)
    assert odometry_at(stamps, poses, 9.0, 0.1) is None and odometry_at([], [], 1.0, 1.0) is None
    # unsorted input (odometry can arrive out of order)
    order = [2, 0, 1]
    np.testing.assert_allclose(odometry_at([stamps[i] for i in order], [poses[i] for i in order], 10.05, 0.1),
                               mid, atol=1e-12)
    assert isinstance(poses[0], Pose)
