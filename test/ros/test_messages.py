"""Output message layouts (docs/ros_interface.md) and the score -> covariance model."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vpr_ros.frames import Pose
from vpr_ros.mapdb.store import Match

pytest.importorskip('rclpy')

from vpr_ros.ros import messages  # noqa: E402


def test_candidates_layout_round_trip() -> None:
    matches = [Match(12, 0.91, 1700000000.25, None), Match(3, 0.5, 17.5, None)]
    msg = messages.candidates_msg(1700000123.456789, matches)
    assert msg.layout.data_offset == 1 and msg.data[0] == 1700000123.456789
    assert [(d.label, d.size, d.stride) for d in msg.layout.dim] == [
        ('candidates', 2, 6), ('place_id,score,map_stamp', 3, 3)]
    assert messages.parse_candidates(msg) == (1700000123.456789, [(12, 0.91, 1700000000.25), (3, 0.5, 17.5)])
    empty = messages.candidates_msg(5.0, [])
    assert list(empty.data) == [5.0] and messages.parse_candidates(empty) == (5.0, [])


def test_loop_closure_is_two_seconds_values() -> None:
    msg = messages.loop_closure_msg(250.5, 104.0)
    assert list(msg.data) == [250.5, 104.0] and not msg.layout.dim


def test_time_conversion_is_exact_to_the_nanosecond() -> None:
    t = messages.to_time(1700000000.123456789)
    assert (t.sec, abs(t.nanosec - 123456789) <= 256) == (1700000000, True)
    assert messages.to_sec(messages.to_time(12.5)) == 12.5


def test_covariance_grows_as_the_score_falls() -> None:
    model = messages.CovarianceModel(score_low=0.5, score_high=0.9, sigma_xy_min=1.0, sigma_xy_max=21.0,
                                     sigma_yaw_min=0.1, sigma_yaw_max=1.1)
    assert model.sigmas(0.95) == pytest.approx((1.0, 0.1))
    assert model.sigmas(0.7) == pytest.approx((11.0, 0.6))
    assert model.sigmas(0.2) == pytest.approx((21.0, 1.1))
    cov = model.covariance(0.7).reshape(6, 6)
    assert np.allclose(np.diag(cov), [121.0] * 3 + [0.36] * 3) and np.count_nonzero(cov) == 6
    header = messages.Header(frame_id='map')
    pose = messages.pose_msg(header, Match(1, 0.7, 0.0, Pose.from_xy_yaw(3.0, 4.0, 0.5)), model)
    assert (pose.pose.pose.position.x, pose.pose.pose.position.y) == (3.0, 4.0)
    assert len(pose.pose.covariance) == 36 and pose.pose.covariance[0] == pytest.approx(121.0)


def test_with_a_confidence_the_covariance_is_that_of_the_mixture() -> None:
    """Right with probability p (sigma_min), anywhere otherwise (sigma_max): variance p s_min^2 +
    (1 - p) s_max^2, whatever the score; NaN falls back to the score range."""
    model = messages.CovarianceModel(score_low=0.5, score_high=0.9, sigma_xy_min=1.0, sigma_xy_max=21.0,
                                     sigma_yaw_min=0.1, sigma_yaw_max=1.1)
    assert model.sigmas(0.1, confidence=1.0) == pytest.approx((1.0, 0.1))
    assert model.sigmas(0.99, confidence=0.0) == pytest.approx((21.0, 1.1))
    assert model.sigmas(0.6, confidence=0.9) == pytest.approx((math.sqrt(0.9 + 0.1 * 441), math.sqrt(
        0.9 * 0.01 + 0.1 * 1.21)))
    assert model.sigmas(0.7, confidence=math.nan) == pytest.approx((11.0, 0.6))
    header = messages.Header(frame_id='map')
    pose = messages.pose_msg(header, Match(1, 0.7, 0.0, Pose.from_xy_yaw(3.0, 4.0, 0.5)), model,
                             confidence=0.99)
    assert pose.pose.covariance[0] == pytest.approx(0.99 + 0.01 * 441)


def test_place_match_carries_the_confidence_of_the_best_candidate_only() -> None:
    if not messages.PLACE_MATCH_HAS_CONFIDENCE:
        pytest.skip('vpr_ros_interfaces with PlaceMatch.confidence is not built (make interfaces)')
    header = messages.Header(frame_id='map')
    matches = [Match(1, 0.7, 0.0, Pose.from_xy_yaw(3.0, 4.0, 0.5)), Match(2, 0.6, 1.0, None)]
    msg = messages.place_candidates_msg(header, matches, 0.8)
    assert msg.candidates[0].confidence == pytest.approx(0.8) and math.isnan(msg.candidates[1].confidence)


def test_markers() -> None:
    from vpr_ros.mapdb.store import Place

    header = messages.Header(frame_id='map')
    places = [Place(0, 1.0, Pose.from_xy_yaw(0, 0, 0)), Place(1, 2.0, None),
              Place(2, 3.0, Pose.from_xy_yaw(5, 0, 0))]
    array = messages.map_markers(places, header)
    assert [m.action for m in array.markers] == [messages.Marker.DELETEALL, messages.Marker.ADD]
    assert len(array.markers[1].points) == 2
    matches = [Match(2, 0.9, 3.0, places[2].pose), Match(1, 0.8, 2.0, None),
               Match(0, 0.6, 1.0, places[0].pose)]
    match = messages.match_markers(header, matches, messages.CovarianceModel())
    assert match.markers[1].text == 'place 2 (0.90)' and len(match.markers[2].points) == 1
    assert not messages.match_markers(header, matches[1:2], messages.CovarianceModel()).markers


def _solved_pose() -> 'messages.MetricPose':
    from vpr_ros.geometry.metric import METRIC, MetricPose
    from vpr_ros.geometry.transforms import CameraMount, pose_to_matrix

    mount = CameraMount()
    T_body = pose_to_matrix(Pose.from_xy_yaw(10.0, 2.0, 0.3))
    cov = np.diag([0.04, 0.09, 0.01, 1e-4, 2e-4, 3e-4])
    anchor = mount.camera_in_map(pose_to_matrix(Pose.from_xy_yaw(8.0, 0.0, 0.0)))
    return MetricPose(METRIC, 4, T_body, cov, mount.camera_in_map(T_body), cov, anchor, 300, 120, 80, 0.9)


def test_pose_is_metric_with_the_solve_covariance_when_the_solve_is_good() -> None:
    model = messages.CovarianceModel()
    header = messages.Header(frame_id='map')
    match = Match(4, 0.7, 0.0, Pose.from_xy_yaw(8.0, 0.0, 0.0))
    solved = _solved_pose()
    msg = messages.pose_msg(header, match, model, metric=solved)
    assert (msg.pose.pose.position.x, msg.pose.pose.position.y) == pytest.approx((10.0, 2.0))
    np.testing.assert_allclose(np.reshape(msg.pose.covariance, (6, 6)), solved.covariance)
    from vpr_ros.geometry.metric import MetricPose
    fallback = messages.pose_msg(header, match, model, metric=MetricPose('few_matches', 4))
    assert fallback.pose.pose.position.x == 8.0 and fallback.pose.covariance[0] == model.covariance(0.7)[0]
    assert model.score_level(0.95) == 1.0 and model.score_level(0.5) == 0.0


def test_metric_loop_constraint_has_a_scale_and_old_constraints_still_parse() -> None:
    solved = _solved_pose()
    R, t, cov = solved.constraint()
    # query camera 2 m left of and 2 m ahead of the place camera: optical x right, z forward
    np.testing.assert_allclose(t, [-2.0, 0.0, 2.0], atol=1e-9)
    msg = messages.loop_constraint_msg(100.0, 10.0, 4, R, t, 80, 0.66, cov)
    c = messages.parse_loop_constraint(msg)
    assert c['metric'] == 1.0 and np.linalg.norm([c['tx'], c['ty'], c['tz']]) == pytest.approx(np.sqrt(8))
    np.testing.assert_allclose(c['covariance'], cov)
    direction = messages.loop_constraint_msg(100.0, 10.0, 4, R, t / np.linalg.norm(t), 80, 0.66)
    assert messages.parse_loop_constraint(direction)['metric'] == 0.0
    old = list(direction.data)
    del old[len(messages.CONSTRAINT_FIELDS) - 1]  # a recording from before the metric field
    parsed = messages.parse_loop_constraint(type(direction)(data=old))
    assert parsed['metric'] == 0.0 and parsed['covariance'][0, 0] > 1e5


def test_a_position_only_pose_is_published_with_an_unknown_rotation() -> None:
    from std_msgs.msg import Header

    match = Match(place_id=0, score=0.9, stamp=1.0, pose=Pose((1.0, 2.0, 0.0), None))
    msg = messages.pose_msg(Header(), match, messages.CovarianceModel(0.5, 0.95, 1.0, 25.0, 0.2, np.pi))
    q = msg.pose.pose.orientation
    assert (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 1.0)
    cov = np.asarray(msg.pose.covariance).reshape(6, 6)
    assert np.all(np.diag(cov)[3:] == messages.UNKNOWN_VARIANCE) and np.diag(cov)[0] < 100
