"""The node in this process (private rclpy context, real DDS): parameters, start-up errors, compressed input."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest

from test.ros.conftest import QUERY_ORDER, Driver, World, child_env

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip('rclpy')

from rclpy.parameter import Parameter  # noqa: E402

from vpr_ros.errors import MapError  # noqa: E402
from vpr_ros.ros.localizer import LocalizerNode  # noqa: E402
from vpr_ros.ros.parameters import PARAMETERS, PARAMETER_NAMES  # noqa: E402


class InProcess:
    """A LocalizerNode on its own context, spun in a background thread."""

    def __init__(self, **overrides: Any) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context, args=[])
        try:
            self.node = LocalizerNode(context=self.context, parameter_overrides=[
                Parameter(k, value=v) for k, v in overrides.items()])
        except BaseException:
            self.context.try_shutdown()
            raise
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.context.try_shutdown()
        self.thread.join(timeout=2.0)


@pytest.fixture
def in_process() -> Iterator[Any]:
    made: list[InProcess] = []

    def make(**overrides: Any) -> InProcess:
        made.append(InProcess(**overrides))
        return made[-1]
    yield make
    for n in made:
        n.close()


def test_declares_exactly_the_parameter_table(world: World, in_process) -> None:
    node = in_process(map_path=world.map_path, threads=1).node
    rclpy_own = {'use_sim_time', 'start_type_description_service'}
    declared = {name for name in node._parameters
                if name not in rclpy_own and not name.startswith('qos_overrides.')}
    assert declared == PARAMETER_NAMES
    for spec in PARAMETERS:
        desc = node.describe_parameter(spec.name)
        assert desc.description and desc.read_only == spec.read_only, spec.name
        if spec.low is not None and not isinstance(spec.default, bool):
            assert desc.integer_range or desc.floating_point_range, spec.name
        if spec.name not in ('map_path', 'threads'):
            assert node.get_parameter(spec.name).value == spec.default, spec.name
    # the image subscription's QoS can be overridden the standard way
    assert any(n.startswith('qos_overrides./camera/image_raw.subscription.') for n in node._parameters)


def test_map_built_with_another_encoder_is_refused(world: World) -> None:
    with pytest.raises(MapError, match="built with encoder 'effnet_gem'"):
        InProcess(map_path=world.map_path, encoder='raw_pixels')


def test_corrupt_map_is_refused(world: World, tmp_path) -> None:
    broken = tmp_path / 'broken'
    shutil.copytree(world.map_path, broken)
    (broken / 'descriptors.npy').write_bytes(b'not numpy')
    with pytest.raises(MapError, match='corrupt'):
        InProcess(map_path=str(broken))


def test_missing_map_exits_non_zero_with_one_fatal_line(tmp_path) -> None:
    proc = subprocess.run([sys.executable, '-m', 'vpr_ros.ros.localizer', '--ros-args',
                           '-p', f'map_path:={tmp_path / "nowhere"}'],
                          env=child_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert 'FATAL' in out and 'cannot start' in out and 'map not found' in out
    assert 'Traceback' not in out


def test_compressed_input_and_undecodable_jpeg(world: World, in_process, driver_factory) -> None:
    from sensor_msgs.msg import CompressedImage

    from vpr_ros.ros.messages import to_time

    node = in_process(map_path=world.map_path, threads=1, image_transport='compressed',
                      image_topic='/cam/image', diagnostics_period=0.2)
    assert node.node._image_sub.topic_name == '/cam/image/compressed'
    driver = driver_factory(image_topic='/cam/image/compressed', image_type=CompressedImage)
    driver.wait_ready(lambda: None)

    def jpeg(data: bytes, t: float) -> CompressedImage:
        msg = CompressedImage(format='jpeg', data=data)
        msg.header.stamp = to_time(t)
        return msg

    frame = world.queries[0]
    ok, buf = cv2.imencode('.jpg', np.ascontiguousarray(frame.rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    driver.image_pub.publish(jpeg(buf.tobytes()[:200] + b'\x00' * 64, 300.0))  # truncated JPEG
    driver.wait_for(lambda o: (s := driver.latest_status()) is not None
                    and int(s.get('skipped_bad_frames', 0)) == 1)
    rows = driver.localize(jpeg(buf.tobytes(), 301.0), 301.0)
    assert rows[0][0] == QUERY_ORDER[0]
    driver.wait_for(lambda o: (s := driver.latest_status()) is not None and int(s['frames_processed']) == 1)
    status = driver.latest_status()
    assert status['skipped.undecodable compressed image'] == '1'
    assert os.environ['ROS_PYTHON_CHECK_FIELDS'] == '1'
