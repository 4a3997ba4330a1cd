"""The node in a namespace as a ROS user runs it (subprocess, real DDS): relative inputs follow
``__ns``, ``-r image:=...`` / ``-r odom:=...`` remap them, outputs live under the namespace."""
from __future__ import annotations

import time

import pytest

from test.ros.conftest import QUERY_ORDER, Driver, NodeProcess, World, image_msg

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip('rclpy')
from rclpy.node import NodeNameNonExistentError  # noqa: E402

NS = '/robot1'
CAMERA = f'{NS}/cam/image_raw'  # what `-r image:=cam/image_raw` resolves to inside the namespace


def test_namespace_and_remapped_inputs(world: World, tmp_path) -> None:
    node = NodeProcess(['-r', f'__ns:={NS}', '-r', 'image:=cam/image_raw', '-r', 'odom:=/robot1/odometry',
                        '-p', f'map_path:={world.map_path}', '-p', 'threads:=1', '-p', 'use_odom:=true',
                        '-p', f'qos_overrides.{CAMERA}.subscription.reliability:=reliable'],
                       str(tmp_path / 'node.log'))
    driver = Driver(node_name=f'{NS}/vpr_localizer', image_topic=CAMERA)
    try:
        driver.wait_ready(node.check_alive)
        graph = driver.session.node
        deadline = time.monotonic() + 60
        while True:  # the node's subscriptions as the ROS graph shows them
            try:
                subs = {name for name, _ in graph.get_subscriber_names_and_types_by_node('vpr_localizer', NS)}
            except NodeNameNonExistentError:  # the graph has not discovered the node's name yet
                subs = set()
            if {CAMERA, '/robot1/odometry'} <= subs:
                break
            node.check_alive()
            assert time.monotonic() < deadline, subs
            time.sleep(0.1)
        assert '/camera/image_raw' not in subs and '/image' not in subs and '/odom' not in subs
        frame = world.queries[0]
        rows = driver.localize(image_msg(frame.rgb, frame.stamp), frame.stamp)
        assert rows[0][0] == QUERY_ORDER[0]
    finally:
        driver.close()
        code = node.stop()
    assert code == 0, node.log()
