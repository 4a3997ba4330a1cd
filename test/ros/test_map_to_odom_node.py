"""map -> odom on /tf over real DDS: the broadcast transform composes the frame's metric pose with the
odometry interpolated at the image stamp."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from test.ros.conftest import RELIABLE_IMAGES, image_msg

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip('rclpy')
tf2_msgs = pytest.importorskip('tf2_msgs.msg', reason='tf2_msgs is built by make interfaces')

from test.ros import test_node_inprocess  # noqa: E402

in_process = test_node_inprocess.in_process  # the fixture


def test_map_to_odom_is_the_metric_pose_composed_with_the_odometry(sample_map, in_process,
                                                                   driver_factory) -> None:
    from nav_msgs.msg import Odometry
    from scipy.spatial.transform import Rotation

    from vpr_ros.frames import Pose
    from vpr_ros.geometry.transforms import make_transform, pose_to_matrix
    from vpr_ros.relocalization import map_to_odom
    from vpr_ros.ros.messages import to_sec, to_time

    path, frame, _ = sample_map
    node = in_process(map_path=path, threads=1, use_odom=True, diagnostics_period=0.2,
                      **{RELIABLE_IMAGES: 'reliable', 'tf.publish_map_to_odom': True,
                         'tf.transform_tolerance': 0.5,
                         'qos_overrides./odom.subscription.reliability': 'reliable'})
    driver = driver_factory()
    tf_msgs: list = []
    driver.subs.append(driver.session.node.create_subscription(tf2_msgs.TFMessage, '/tf', tf_msgs.append,
                                                               100))
    pub_odom = driver.session.node.create_publisher(Odometry, '/odom', 10)
    driver.wait_ready(lambda: None, node=node.node)
    driver.wait_for(lambda o: pub_odom.get_subscription_count() > 0)

    def odom(t: float, x: float, yaw: float) -> None:
        msg = Odometry()
        msg.header.stamp, msg.header.frame_id, msg.child_frame_id = to_time(t), 'odom_test', 'base_link'
        msg.pose.pose.position.x, msg.pose.pose.position.y = x, 2.0
        q = Rotation.from_euler('z', yaw).as_quat()
        o = msg.pose.pose.orientation
        o.x, o.y, o.z, o.w = (float(v) for v in q)
        pub_odom.publish(msg)

    t = 40.0
    odom(t - 0.05, 1.0, 0.1)
    odom(t + 0.05, 2.0, 0.3)  # at t: x 1.5, yaw 0.2
    time.sleep(0.3)  # the odometry callbacks run before the frame is processed
    driver.localize(image_msg(frame.rgb, t), t)
    driver.wait_for(lambda o: t in o.poses and len(tf_msgs) >= 1, 30.0)
    (transform,) = tf_msgs[0].transforms
    assert transform.header.frame_id == 'map' and transform.child_frame_id == 'odom_test'
    assert to_sec(transform.header.stamp) == pytest.approx(t + 0.5, abs=1e-9)
    with driver.out.lock:
        pose = driver.out.poses[t].pose.pose
    T_map_body = pose_to_matrix(Pose((pose.position.x, pose.position.y, pose.position.z),
                                     (pose.orientation.x, pose.orientation.y, pose.orientation.z,
                                      pose.orientation.w)))
    T_odom_body = make_transform(Rotation.from_euler('z', 0.2).as_matrix(), [1.5, 2.0, 0.0])  # interpolated
    expected = map_to_odom(T_map_body, T_odom_body)
    tr, rot = transform.transform.translation, transform.transform.rotation
    np.testing.assert_allclose((tr.x, tr.y, tr.z), expected[:3, 3], atol=1e-6)
    got_R = Rotation.from_quat([rot.x, rot.y, rot.z, rot.w]).as_matrix()
    assert math.degrees(Rotation.from_matrix(got_R @ expected[:3, :3].T).magnitude()) < 1e-4
    # a frame with no odometry near its stamp: answered, no transform, counted
    driver.localize(image_msg(frame.rgb, 60.0), 60.0)
    driver.wait_for(lambda o: (s := driver.latest_status()) is not None
                    and s['tf.frames_without_odometry'] == '1', 30.0)
    assert len(tf_msgs) == 1 and driver.latest_status()['tf.map_to_odom_published'] == '1'
