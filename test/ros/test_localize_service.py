"""~/localize over real DDS: a sample-world map with local features and intrinsics, one query image in,
place + metric pose + covariance + map identity out; a bad request is an error reply, not a deaf node."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import yaml

from test.ros.conftest import METRIC_IMAGE_SIZE as SIZE
from test.ros.conftest import RELIABLE_IMAGES, Driver, NodeProcess, image_msg

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip('rclpy')
srv = pytest.importorskip('vpr_ros_interfaces.srv')
if not hasattr(srv, 'Localize'):
    pytest.skip('vpr_ros_interfaces was built before the Localize service (make interfaces)',
                allow_module_level=True)

def _call(client, request, timeout: float = 60.0):
    future = client.call_async(request)
    deadline = time.monotonic() + timeout
    while not future.done():
        assert time.monotonic() < deadline, 'no ~/localize reply'
        time.sleep(0.02)
    return future.result()


def test_localize_answers_a_metric_pose_and_survives_bad_requests(sample_map, tmp_path) -> None:
    from sensor_msgs.msg import CameraInfo

    from vpr_ros.mapdb.integrity import map_checksum
    from vpr_ros.sample import sample_camera

    path, frame, offline = sample_map
    params = {'/**': {'ros__parameters': {'map_path': path, 'threads': 1}}}
    params_file = tmp_path / 'params.yaml'
    params_file.write_text(yaml.safe_dump(params))
    node = NodeProcess(['--params-file', str(params_file), '-p', f'{RELIABLE_IMAGES}:=reliable'],
                       str(tmp_path / 'node.log'))
    driver = Driver()
    client = driver.session.node.create_client(srv.Localize, '/vpr_localizer/localize')
    try:
        driver.wait_ready(node.check_alive)
        assert client.wait_for_service(timeout_sec=60)
        request = srv.Localize.Request(image=image_msg(frame.rgb, 12.5))  # no camera_info: the map's
        good = _call(client, request)
        bad_image = image_msg(frame.rgb, 13.0)
        bad_image.encoding = 'not_an_encoding'
        bad = _call(client, srv.Localize.Request(image=bad_image))
        truncated = image_msg(frame.rgb, 13.5)
        truncated.data = truncated.data[:100]
        short = _call(client, srv.Localize.Request(image=truncated))
        # the caller's own intrinsics (here the true ones, explicitly)
        info = CameraInfo(width=SIZE[1], height=SIZE[0], distortion_model='plumb_bob', d=[0.0] * 5,
                          k=list(sample_camera(SIZE).K))
        again = _call(client, srv.Localize.Request(image=image_msg(frame.rgb, 14.0), camera_info=info))
        # the topic stream still answers after the failed requests
        candidates = driver.localize(image_msg(frame.rgb, 15.0), 15.0, timeout=60.0)
        driver.wait_for(lambda o: 15.0 in o.poses, 30.0)
        with driver.out.lock:
            stream_pose = driver.out.poses[15.0]
        driver.wait_for(lambda o: (driver.latest_status() or {}).get('localize_failures') == '2', 30.0)
        node.check_alive()
    finally:
        driver.session.node.destroy_client(client)
        driver.close()
        code = node.stop()
    assert code == 0, node.log()
    assert good.success and good.metric and good.status == 'metric', good.message
    assert good.place_id == offline.place_id and good.inliers >= 20
    p = good.pose.pose.pose.position
    assert math.dist((p.x, p.y), frame.pose.position[:2]) < 1.0
    np.testing.assert_allclose((p.x, p.y, p.z), offline.pose.position, atol=0.05)
    cov = np.reshape(good.pose.pose.covariance, (6, 6))
    assert np.all(np.linalg.eigvalsh(cov) > 0) and np.sqrt(cov[0, 0]) < 1.0
    assert good.pose.header.frame_id == 'map' and good.pose.header.stamp.sec == 12
    assert 0.0 <= good.confidence <= 1.0
    assert good.map_path == path and good.map_checksum == map_checksum(path) and len(good.map_checksum) == 64
    assert not bad.success and 'unknown encoding' in bad.message
    assert not short.success and 'truncated' in short.message
    assert again.success and again.metric
    assert candidates and candidates[0][0] == good.place_id
    sp = stream_pose.pose.pose.position
    assert math.dist((sp.x, sp.y), (p.x, p.y)) < 0.05  # the stream's ~/pose is the same metric solve


def test_loop_closures_carry_a_metric_constraint(sample_map, tmp_path) -> None:
    """Frames revisiting the map long after it was recorded close loops; the map's poses, features and
    intrinsics make the constraint metric (translation in metres, the solve's covariance)."""
    from rclpy.qos import QoSProfile
    from std_msgs.msg import Float64MultiArray

    from vpr_ros.geometry.transforms import CameraMount, invert, pose_to_matrix
    from vpr_ros.mapdb.store import VprMap
    from vpr_ros.ros.messages import parse_loop_constraint
    from vpr_ros.sample import render_traversal

    path, _, _ = sample_map
    frames, _ = render_traversal('mapping', scale=0.15, image_size=SIZE)
    revisits = frames[1::2][4:12]  # between the map's keyframes, in driving order
    params = {'/**': {'ros__parameters': {'map_path': path, 'threads': 1,
                                          'loop_closure': {'min_time_separation': 30.0}}}}
    params_file = tmp_path / 'params.yaml'
    params_file.write_text(yaml.safe_dump(params))
    node = NodeProcess(['--params-file', str(params_file), '-p', f'{RELIABLE_IMAGES}:=reliable'],
                       str(tmp_path / 'node.log'))
    driver = Driver()
    constraints: list = []
    sub = driver.session.node.create_subscription(Float64MultiArray, '/vpr_localizer/loop_closure_constraint',
                                                  constraints.append, QoSProfile(depth=100))
    t0 = 50_000.0  # long after the map's stamps
    try:
        driver.wait_ready(node.check_alive)
        while sub.get_publisher_count() == 0:
            node.check_alive()
            time.sleep(0.05)
        for k, frame in enumerate(revisits):
            driver.localize(image_msg(frame.rgb, t0 + k), t0 + k, timeout=60.0)
        driver.wait_for(lambda _: bool(constraints) and (driver.latest_status() or {}).get(
            'loop_closure.frames_pending') == '0', 60.0)
        node.check_alive()
    finally:
        driver.close()
        code = node.stop()
    assert code == 0, node.log()
    vmap = VprMap.load(path)
    mount = CameraMount()
    metric_ones = [parse_loop_constraint(m) for m in constraints]
    metric_ones = [c for c in metric_ones if c['metric'] == 1.0]
    assert metric_ones, node.log()
    for c in metric_ones:
        frame = revisits[int(round(c['t_query'] - t0))]
        place = vmap.place(int(c['place_id']))
        T_rel = (invert(mount.camera_in_map(pose_to_matrix(place.pose)))
                 @ mount.camera_in_map(pose_to_matrix(frame.pose)))
        t = np.array([c['tx'], c['ty'], c['tz']])
        assert np.linalg.norm(t - T_rel[:3, 3]) < 1.0  # metres, against the ground truth
        cov = c['covariance']
        assert np.all(np.linalg.eigvalsh(cov) > 0) and cov[0, 0] < 1.0 and c['inliers'] >= 20
