"""The node with geometric verification in incremental mode on a sample-world loop, over real DDS."""
from __future__ import annotations

import math
import time
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from test.ros.conftest import RELIABLE_IMAGES, Driver, NodeProcess, image_msg

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip('rclpy')

SEPARATION_S = 15.0
DIST_M = 10.0


@pytest.fixture(scope='module')
def loop_frames():
    from vpr_ros.sample import render_traversal

    frames, _ = render_traversal('mapping', scale=0.15)
    return frames


def camera_info_msg(width: int, height: int):
    from sensor_msgs.msg import CameraInfo

    f = width / 2  # the sample world renders with a 90 degree horizontal field of view
    return CameraInfo(width=width, height=height, distortion_model='plumb_bob', d=[0.0] * 5,
                      k=[f, 0.0, (width - 1) / 2, 0.0, f, (height - 1) / 2, 0.0, 0.0, 1.0])


def offline_closures(frames: list, sequence_length: int, min_score: float, verified_frames: int,
                     statuses: dict | None = None, consistency_frames: int = 3) -> list:
    """``evaluate --loops``' verified closures for the node's settings of the test below (and, into
    ``statuses``, its per-frame decision counts)."""
    from vpr_ros.encoders import create_encoder
    from vpr_ros.evaluation.metrics import Thresholds
    from vpr_ros.features import CameraIntrinsics
    from vpr_ros.matching.loop_closure import LoopClosureConfig
    from vpr_ros.matching.sequence import SequenceConfig
    from vpr_ros.pipeline import LoopEvaluationSettings, evaluate_loops
    from vpr_ros.ros.messages import to_sec, to_time
    from vpr_ros.skips import SkipCounter

    source = SimpleNamespace(image_count=len(frames), skips=SkipCounter(), frames=lambda _: iter(frames))

    k = camera_info_msg(frames[0].rgb.shape[1], frames[0].rgb.shape[0])
    camera = CameraIntrinsics(tuple(k.k), tuple(k.d), k.distortion_model, k.width, k.height)
    settings = LoopEvaluationSettings(
        loop_closure=LoopClosureConfig(min_time_separation=SEPARATION_S, min_score=min_score,
                                       verified_frames=verified_frames,
                                       consistency_frames=consistency_frames),
        camera=camera, keyframe_min_interval=0.0, top_k=5,
        # the node below has no odometry: frame-spaced sequences, as evaluate --loops without poses
        sequence=SequenceConfig(length=sequence_length, spacing='frames'))
    result = evaluate_loops(create_encoder('raw_pixels', {'threads': 1}), source, None, settings,
                            Thresholds(DIST_M), progress=False)
    if statuses is not None:
        statuses.update(result['loops']['with_verification']['statuses'])
    return [(to_sec(to_time(e['t_query'])), to_sec(to_time(e['t_match'])))
            for e in result['loops']['with_verification']['events']]


@pytest.mark.parametrize('sequence_length', [0, 5])
def test_incremental_loop_closures_are_verified_and_carry_a_relative_pose(loop_frames, tmp_path,
                                                                          sequence_length) -> None:
    """Single-frame and sequence matching (whose scores are not cosines: a lower min_score, the
    precision then rests on verification). The node publishes exactly the closures of
    ``evaluate --loops`` with the same settings, which two agreeing verifications decide."""
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Float64MultiArray

    from vpr_ros.ros.messages import parse_loop_constraint, to_sec, to_time

    min_score = 0.5 if sequence_length else 0.8
    params = {'/**': {'ros__parameters': {
        'incremental': True, 'encoder': 'raw_pixels', 'threads': 1,
        'keyframe': {'min_interval': 0.0}, 'sequence': {'length': sequence_length},
        'loop_closure': {'min_time_separation': SEPARATION_S, 'min_score': min_score, 'verified_frames': 2}}}}
    params_file = tmp_path / 'params.yaml'
    params_file.write_text(yaml.safe_dump(params))
    node = NodeProcess(['--params-file', str(params_file), '-p', f'{RELIABLE_IMAGES}:=reliable'],
                       str(tmp_path / 'node.log'))
    driver = Driver()
    loops, constraints = [], []
    n = driver.session.node
    subs = [n.create_subscription(Float64MultiArray, '/vpr_localizer/loop_closure', loops.append,
                                  QoSProfile(depth=200)),
            n.create_subscription(Float64MultiArray, '/vpr_localizer/loop_closure_constraint',
                                  constraints.append, QoSProfile(depth=200))]
    info_pub = n.create_publisher(CameraInfo, '/camera_info', 10)
    h, w = loop_frames[0].rgb.shape[:2]
    try:
        driver.wait_ready(node.check_alive)
        deadline = time.monotonic() + 60
        while not all(s.get_publisher_count() for s in subs) or info_pub.get_subscription_count() == 0:
            node.check_alive()
            assert time.monotonic() < deadline, 'discovery timed out'
            time.sleep(0.05)
        for frame in loop_frames:
            info_pub.publish(camera_info_msg(w, h))  # as a camera driver does, beside every image
            t = to_sec(to_time(frame.stamp))  # what the node reads back from the header
            driver.localize(image_msg(frame.rgb, t), t, timeout=60.0)

        def settled(_: object) -> bool:  # a diagnostics message counting every frame and closure received
            st = driver.latest_status()  # (diagnostics come at 1 Hz: the latest may predate the last frames)
            return (st is not None and st.get('verification') == 'essential matrix'
                    and int(st['frames_processed']) == len(loop_frames)
                    and st['loop_closure.frames_pending'] == '0'
                    and int(st['loop_closures_published']) == len(loops))

        driver.wait_for(settled, 30.0)
        status = driver.latest_status()
        node.check_alive()
    finally:
        driver.close()
        code = node.stop()
    assert code == 0, node.log()
    by_stamp = {to_sec(to_time(f.stamp)): f for f in loop_frames}
    pairs = [(m.data[0], m.data[1]) for m in loops]
    assert pairs, node.log()
    for t_q, t_m in pairs:  # every published closure is correct: precision 1.0
        assert abs(t_q - t_m) >= SEPARATION_S
        assert math.dist(by_stamp[t_q].pose.position[:2], by_stamp[t_m].pose.position[:2]) <= DIST_M
    assert int(status['loop_closures_published']) == len(pairs)
    # a frame the node's loop queue dropped (the loop stage fell 10 frames behind) has no decision
    assert status['loop_closure.frames_dropped'] == '0', node.log()
    offline_statuses: dict = {}
    expected = offline_closures(loop_frames, sequence_length, min_score, verified_frames=2,
                                statuses=offline_statuses)
    assert len(pairs) == len(expected), (pairs, expected)
    np.testing.assert_allclose(np.asarray(pairs), np.asarray(expected), atol=1e-6)
    # every frame's decision, not only the published ones: the funnel of the node is that of evaluate
    node_statuses = {k.split('.', 1)[1]: int(v) for k, v in status.items() if k.startswith('loop_status.')}
    assert node_statuses == offline_statuses, (status, node.log())
    assert int(status['loop_funnel.published']) == len(pairs)
    assert int(status['loop_funnel.verified']) >= int(status['loop_funnel.agreed']) >= len(pairs)
    assert int(status['loop_funnel.separated']) == sum(n for k, n in offline_statuses.items() if k not in (
        'no_matches', 'too_recent', 'low_score'))
    # the temporal checks matter here: frames wait for them (held frames are published later, with the
    # frame that completes their chain's retrieval streak: fewer decisions than closures are detections)
    permissive: dict = {}
    offline_closures(loop_frames, sequence_length, min_score, verified_frames=1, consistency_frames=1,
                     statuses=permissive)
    assert offline_statuses.get('failed_temporal_consistency', 0) > 0 and permissive != offline_statuses
    assert status['camera_intrinsics'] == 'known'
    assert constraints and len(constraints) <= len(pairs)
    for msg in constraints:
        c = parse_loop_constraint(msg)
        assert (c['t_query'], c['t_match']) in pairs and c['inliers'] >= 20
        assert np.linalg.norm([c['tx'], c['ty'], c['tz']]) == pytest.approx(1.0, abs=1e-6)
        assert np.linalg.norm([c['qx'], c['qy'], c['qz'], c['qw']]) == pytest.approx(1.0, abs=1e-6)
        # the revisit drives the same way: the relative rotation is small (yaw wobble, no turn)
        assert 2 * math.degrees(math.acos(min(1.0, abs(c['qw'])))) < 30.0
        assert c['covariance'][0, 0] > 1e5  # translation scale unknown
