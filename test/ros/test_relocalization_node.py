"""Relocalisation over real DDS: one confident metric pose on the relative output `initialpose` after
agreeing frames, quiet afterwards, re-armed by ~/relocalize; a frame without a metric solve breaks the
agreement."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from test.ros.conftest import QUERY_ORDER, RELIABLE_IMAGES, image_msg

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip('rclpy')

from test.ros import test_node_inprocess  # noqa: E402

in_process = test_node_inprocess.in_process  # the fixture


def call(node, srv_type, name: str, request, timeout: float = 30.0, clients: dict | None = None):
    """One service call; ``clients`` keeps the client for the next call (a new client must match the
    server again, and a request sent before that is lost)."""
    client = clients.get(name) if clients is not None else None
    if client is None:
        client = node.create_client(srv_type, name)
        if clients is not None:
            clients[name] = client
    try:
        assert client.wait_for_service(timeout_sec=timeout), f'no service {name}'
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            assert time.monotonic() < deadline, f'no reply from {name}'
            time.sleep(0.02)
        return future.result()
    finally:
        if clients is None:
            node.destroy_client(client)


def test_relocalization_publishes_once_after_agreement_and_rearms(sample_map, in_process,
                                                                 driver_factory) -> None:
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from std_srvs.srv import Trigger

    from vpr_ros.ros.messages import to_sec

    path, frame, offline = sample_map
    node = in_process(map_path=path, threads=1, ros_args=('-r', 'initialpose:=/relocalized'),
                      diagnostics_period=0.2,
                      **{RELIABLE_IMAGES: 'reliable', 'relocalization.enabled': True,
                         'relocalization.agreement_frames': 3})
    driver = driver_factory()
    received: list = []
    driver.subs.append(driver.session.node.create_subscription(
        PoseWithCovarianceStamped, '/relocalized', received.append,
        QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL)))
    driver.wait_ready(lambda: None, node=node.node)
    blank = np.full_like(frame.rgb, 128)  # retrieval answers it, the metric solve cannot

    def send(t: float, rgb: np.ndarray = frame.rgb) -> None:
        driver.localize(image_msg(rgb, t), t)

    for t, rgb in ((1.0, frame.rgb), (2.0, frame.rgb), (3.0, blank), (4.0, frame.rgb), (5.0, frame.rgb),
                   (6.0, frame.rgb)):
        send(t, rgb)
    driver.wait_for(lambda o: len(received) >= 1, 30.0)
    first = received[0]
    assert to_sec(first.header.stamp) == 6.0  # frames 1-2 were broken off by the blank frame 3
    assert first.header.frame_id == 'map'
    p = first.pose.pose.position
    assert math.dist((p.x, p.y, p.z), offline.pose.position) < 0.05
    cov = np.reshape(first.pose.covariance, (6, 6))
    assert np.all(np.linalg.eigvalsh(cov) > 0) and math.sqrt(cov[0, 0]) < 1.0  # the solve's covariance
    with driver.out.lock:
        np.testing.assert_allclose(first.pose.covariance, driver.out.poses[6.0].pose.covariance)

    for t in (7.0, 8.0, 9.0, 10.0):  # quiet: each answered (candidates) but not announced
        send(t)
    driver.wait_for(lambda o: (s := driver.latest_status()) is not None and int(s['frames_processed']) >= 10)
    assert len(received) == 1 and driver.latest_status()['relocalization'] == 'published; quiet'

    reply = call(driver.session.node, Trigger, '/vpr_localizer/relocalize', Trigger.Request())
    assert reply.success and 'armed' in reply.message
    for t in (11.0, 12.0, 13.0):
        send(t)
    driver.wait_for(lambda o: len(received) >= 2, 30.0)
    assert [to_sec(m.header.stamp) for m in received] == [6.0, 13.0]
    assert int(driver.latest_status()['relocalizations_published']) >= 1
    assert node.node._relocalizations_published == 2


def test_relocalization_is_off_by_default(sample_map, in_process) -> None:
    node = in_process(map_path=sample_map[0], threads=1).node
    assert node._relocalization_state() == 'disabled' and node._pub_tf is None
    assert node._pub_initialpose.topic_name == '/initialpose'


def test_a_failing_relocalization_step_is_counted_and_the_node_keeps_answering(world, in_process,
                                                                              driver_factory) -> None:
    from std_srvs.srv import Trigger

    node = in_process(map_path=world.map_path, threads=1, diagnostics_period=0.2,
                      **{RELIABLE_IMAGES: 'reliable', 'relocalization.enabled': True})

    def broken(*args) -> bool:
        raise RuntimeError('injected')
    node.node._relocalization.offer = broken
    driver = driver_factory()
    driver.wait_ready(lambda: None, node=node.node)
    for k, t in enumerate((300.0, 301.0)):
        rows = driver.localize(image_msg(world.queries[k].rgb, t), t)
        assert rows[0][0] == QUERY_ORDER[k]
    driver.wait_for(lambda o: (s := driver.latest_status()) is not None
                    and s.get('skipped.relocalization error (RuntimeError)') == '2', 30.0)
    assert call(driver.session.node, Trigger, '/vpr_localizer/relocalize', Trigger.Request()).success


def test_with_odometry_the_map_to_odom_transforms_must_agree(sample_map, in_process, driver_factory) -> None:
    """The same view (same metric pose) while odometry says the robot moved 1 m per frame is not
    consistent: no announcement; once odometry stands still, three frames agree and one is published."""
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from nav_msgs.msg import Odometry
    from rclpy.qos import DurabilityPolicy, QoSProfile

    from vpr_ros.ros.messages import to_sec, to_time

    path, frame, _ = sample_map
    node = in_process(map_path=path, threads=1, use_odom=True, diagnostics_period=0.2,
                      **{RELIABLE_IMAGES: 'reliable', 'relocalization.enabled': True,
                         'qos_overrides./odom.subscription.reliability': 'reliable'})
    driver = driver_factory()
    received: list = []
    driver.subs.append(driver.session.node.create_subscription(
        PoseWithCovarianceStamped, '/initialpose', received.append,
        QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL)))
    pub_odom = driver.session.node.create_publisher(Odometry, '/odom', 10)
    driver.wait_ready(lambda: None, node=node.node)
    driver.wait_for(lambda o: pub_odom.get_subscription_count() > 0)

    def send(t: float, x: float) -> None:
        odom = Odometry()
        odom.header.stamp, odom.header.frame_id = to_time(t), 'odom'
        odom.pose.pose.position.x = x
        odom.pose.pose.orientation.w = 1.0
        pub_odom.publish(odom)
        time.sleep(0.1)  # the odometry callback runs before the frame is processed
        driver.localize(image_msg(frame.rgb, t), t)

    for k in range(4):  # moving: map -> odom jumps 1 m per frame
        send(80.0 + k, float(k))
    for k in range(3):  # standing
        send(90.0 + k, 10.0)
    driver.wait_for(lambda o: len(received) >= 1, 30.0)
    assert [to_sec(m.header.stamp) for m in received] == [92.0]
