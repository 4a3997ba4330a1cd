"""Loop constraints: frames of a verified closure, direction-only vs metric, validation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from test.matching.test_verification import CAMERA, synthetic_pair
from test.slam.synthetic import rot_z
from vpr_ros.errors import ConfigError
from vpr_ros.geometry.metric import METRIC, MetricPose
from vpr_ros.matching.loop_closure import LoopDecision, LoopStatus
from vpr_ros.matching.verification import Verification, VerificationConfig, verify_pair
from vpr_ros.slam.constraints import (
    BEARING_SIGMA_RAD,
    DIRECTION_KIND,
    METRIC_KIND,
    UNKNOWN_SCALE_VARIANCE_M2,
    LoopConstraint,
    direction_only_covariance,
    from_verification,
    published,
    published_kind,
)
from vpr_ros.slam.poses import BODY_FROM_OPTICAL, make_pose, rotation_angle


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return math.degrees(math.acos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0)))


def test_a_verified_pair_becomes_the_body_frame_relative_pose() -> None:
    """The query stands 1.5 m ahead of the place, 0.6 m to its left, turned 8 deg left (body frames); the
    essential matrix of the two views, through from_verification, gives that rotation and direction."""
    body = make_pose(rot_z(math.radians(8.0)), [1.5, 0.6, 0.0])
    B = BODY_FROM_OPTICAL
    R_opt, t_opt = B.T @ body[:3, :3] @ B, B.T @ body[:3, 3]
    query, place = synthetic_pair(R_opt, t_opt)
    v = verify_pair(query, place, 4, VerificationConfig(), CAMERA, CAMERA)
    assert v.verified and v.rotation is not None
    c = from_verification(20.0, 5.0, v)
    assert math.degrees(rotation_angle(c.rotation.T @ body[:3, :3])) < 0.5
    assert angle_deg(c.translation, body[:3, 3]) < 3.0
    assert np.linalg.norm(c.translation) == pytest.approx(1.0)
    assert c.direction_only and c.place_id == 4 and c.inliers == v.inliers
    assert c.bearing_sigma_rad == pytest.approx(BEARING_SIGMA_RAD)


def test_the_direction_only_covariance_frees_the_translation_along_the_direction_in_the_query_frame() -> None:
    R, u = rot_z(math.radians(90.0)), np.array([1.0, 0.0, 0.0])
    cov = direction_only_covariance(R, u, rotation_sigma=0.05, bearing_sigma=0.1)
    a = R.T @ u  # the direction seen from the query body: (0, -1, 0)
    assert a @ cov[:3, :3] @ a == pytest.approx(UNKNOWN_SCALE_VARIANCE_M2)
    assert u @ cov[:3, :3] @ u == pytest.approx(0.01)
    assert np.allclose(cov[3:, 3:], 0.0025 * np.eye(3)) and not cov[:3, 3:].any()


def test_a_metric_constraint_is_not_direction_only() -> None:
    c = LoopConstraint(1.0, 0.0, np.eye(3), np.array([2.0, 0.0, 0.0]), np.diag([0.25] * 3 + [0.01] * 3))
    assert not c.direction_only
    assert np.allclose(c.pose[:3, 3], [2.0, 0.0, 0.0])


def test_malformed_constraints_and_closures_without_a_pose_are_refused() -> None:
    good = np.diag([1.0] * 6)
    with pytest.raises(ConfigError, match='rotation'):
        LoopConstraint(1.0, 0.0, 2 * np.eye(3), np.zeros(3), good)
    with pytest.raises(ConfigError, match='translation'):
        LoopConstraint(1.0, 0.0, np.eye(3), np.array([np.nan, 0.0, 0.0]), good)
    with pytest.raises(ConfigError, match='positive definite'):
        LoopConstraint(1.0, 0.0, np.eye(3), np.zeros(3), np.zeros((6, 6)))
    fundamental = Verification(3, True, 80, 60, 'fundamental', 1.0)
    with pytest.raises(ConfigError, match='--camera-info'):
        from_verification(1.0, 0.0, fundamental)


def test_a_closure_is_published_metric_when_its_solve_is_good_and_direction_only_otherwise() -> None:
    """The one choice the node (~/loop_closure_constraint) and the pose graph share: the metric constraint
    is the query body in the place body, in metres, with the solve's covariance turned into the query body
    (the query heading 90 deg swaps its x and y variances); a failed solve falls back to the verification's
    direction."""
    B = BODY_FROM_OPTICAL
    T_place = make_pose(rot_z(math.radians(30.0)), [10.0, 5.0, 0.0])
    T_query = make_pose(rot_z(math.radians(90.0)), [12.0, 6.0, 0.0])
    truth = np.linalg.inv(T_place) @ T_query
    v = Verification(4, True, 100, 60, 'essential', 1.0, B.T @ truth[:3, :3] @ B,
                     B.T @ truth[:3, 3] / np.linalg.norm(truth[:3, 3]))
    decision = LoopDecision(LoopStatus.LOOP_DETECTED, 50.0, 10.0, 4, 0.8, 3, v)
    cov_map = np.diag([0.04, 0.01, 0.01, 1e-4, 1e-4, 1e-4])  # map frame: 0.2 m along map x
    good = MetricPose(METRIC, 4, T_query, cov_map, inliers=75)
    assert published_kind(v, good) == METRIC_KIND
    c = published(decision, good, T_place)
    assert not c.direction_only and c.inliers == 75 and c.place_id == 4
    assert np.allclose(c.pose, truth, atol=1e-9)
    assert np.allclose(np.diag(c.covariance)[:2], [0.01, 0.04])  # query body x (yaw 90 deg) = map y
    failed = MetricPose('few_matches', 4)
    assert published_kind(v, failed) == published_kind(v, None) == DIRECTION_KIND
    fallback = published(decision, failed, T_place)
    assert fallback.direction_only and angle_deg(fallback.translation, truth[:3, 3]) < 1e-6
    assert published_kind(None, failed) is None
    with pytest.raises(ConfigError, match='not verified'):
        published(LoopDecision(LoopStatus.LOOP_DETECTED, 50.0, 10.0, 4), None, T_place)
