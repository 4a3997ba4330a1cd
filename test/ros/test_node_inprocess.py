"""The node in this process (private rclpy context, real DDS): parameters, start-up errors, compressed
input."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest

from test.helpers import assert_same_ranking
from test.ros.conftest import QUERY_ORDER, RELIABLE_IMAGES, World, child_env

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip('rclpy')

from rclpy.parameter import Parameter  # noqa: E402

from vpr_ros.errors import MapError  # noqa: E402
from vpr_ros.ros.node import LocalizerNode  # noqa: E402
from vpr_ros.ros.parameters import PARAMETER_NAMES, PARAMETERS  # noqa: E402


class InProcess:
    """A LocalizerNode on its own context, spun in a background thread."""

    def __init__(self, ros_args: tuple[str, ...] = (), node_class: type = LocalizerNode,
                 **overrides: Any) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context, args=[])
        try:
            self.node = node_class(
                context=self.context, cli_args=['--ros-args', *ros_args] if ros_args else None,
                parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
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
    assert any(n.startswith('qos_overrides./image.subscription.') for n in node._parameters)
    assert node._image_sub.topic_name == '/image' and node._odom_topic == ''  # relative input, no odometry


def test_map_built_with_another_encoder_is_refused(world: World) -> None:
    with pytest.raises(MapError, match="map built with encoder 'effnet_gem', requested"):
        InProcess(map_path=world.map_path, encoder='raw_pixels')


def test_corrupt_map_is_refused(world: World, tmp_path) -> None:
    broken = tmp_path / 'broken'
    shutil.copytree(world.map_path, broken)
    (broken / 'descriptors.npy').write_bytes(b'not numpy')
    with pytest.raises(MapError, match='corrupt'):
        InProcess(map_path=str(broken))


def test_missing_map_exits_non_zero_with_one_fatal_line(tmp_path) -> None:
    proc = subprocess.run([sys.executable, '-m', 'vpr_ros.ros.node', '--ros-args',
                           '-p', f'map_path:={tmp_path / "nowhere"}'],
                          env=child_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert 'FATAL' in out and 'cannot start' in out and 'map not found' in out
    assert 'Traceback' not in out


def test_compressed_input_and_undecodable_jpeg(world: World, in_process, driver_factory) -> None:
    from sensor_msgs.msg import CompressedImage

    from vpr_ros.ros.messages import to_time

    # image_transport style: the remapped relative `image` is the base, `/compressed` is appended
    node = in_process(map_path=world.map_path, threads=1, image_transport='compressed',
                      ros_args=('-r', 'image:=/cam/image'), diagnostics_period=0.2)
    assert node.node._image_sub.topic_name == '/cam/image/compressed'
    driver = driver_factory(image_topic='/cam/image/compressed', image_type=CompressedImage)
    driver.wait_ready(lambda: None, node=node.node)

    def jpeg(data: bytes, t: float) -> CompressedImage:
        msg = CompressedImage(format='jpeg', data=data)
        msg.header.stamp = to_time(t)
        return msg

    frame = world.queries[0]
    ok, buf = cv2.imencode('.jpg', np.ascontiguousarray(frame.rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    # The default BEST_EFFORT reader may miss a frame sent while it is still matching: resend.
    broken = jpeg(buf.tobytes()[:200] + b'\x00' * 64, 300.0)  # truncated JPEG
    deadline = time.monotonic() + 20
    while (s := driver.latest_status()) is None or int(s['skipped_bad_frames']) == 0:
        assert time.monotonic() < deadline, 'the broken JPEG never arrived'
        driver.image_pub.publish(broken)
        time.sleep(0.3)
    rows = driver.localize(jpeg(buf.tobytes(), 301.0), 301.0, resend_every=1.0)
    assert rows[0][0] == QUERY_ORDER[0]
    driver.wait_for(lambda o: (s := driver.latest_status()) is not None and int(s['frames_processed']) >= 1)
    status = driver.latest_status()
    assert int(status['skipped.undecodable compressed image']) >= 1
    assert status['skipped_bad_frames'] == status['skipped.undecodable compressed image']
    assert os.environ['ROS_PYTHON_CHECK_FIELDS'] == '1'


def test_deprecated_topic_parameters_still_override_the_relative_inputs(world: World, in_process) -> None:
    node = in_process(map_path=world.map_path, threads=1, image_topic='/legacy/camera',
                      odom_topic='/legacy/odom', ros_args=('-r', 'image:=/ignored')).node
    assert {s.topic_name for s in node.subscriptions} >= {'/legacy/camera', '/legacy/odom'}
    assert '/ignored' not in {s.topic_name for s in node.subscriptions}


def test_incremental_mode_closes_loops_within_the_run(world: World, in_process, driver_factory,
                                                      tmp_path) -> None:
    """An empty map grows from the camera (poses from /odom, sim time from /clock); a revisit more
    than 30 s later closes a loop against the keyframes of the same run; ~/save_map keeps them."""
    from nav_msgs.msg import Odometry
    from rosgraph_msgs.msg import Clock
    from std_srvs.srv import Trigger

    from test.ros.conftest import ENCODER_CONFIG, image_msg
    from vpr_ros.mapdb.store import VprMap
    from vpr_ros.ros.messages import to_sec, to_time

    saved = str(tmp_path / 'grown')
    grown = in_process(map_path='', incremental=True, encoder='effnet_gem',
                       encoder_config=str(ENCODER_CONFIG), threads=1, use_odom=True, save_map_path=saved,
                       use_sim_time=True, diagnostics_period=0.5,
                       **{'loop_closure.consistency_frames': 2, 'loop_closure.min_score': 0.85,
                          # smooth synthetic textures have too few keypoints to verify; the verified
                          # incremental loop is test_verification_node.py
                          'verification.enabled': False, RELIABLE_IMAGES: 'reliable',
                          'qos_overrides./odom.subscription.reliability': 'reliable'})
    driver = driver_factory(loop_topic='/vpr_localizer/loop_closure')
    node = driver.session.node
    pub_odom = node.create_publisher(Odometry, '/odom', 10)
    pub_clock = node.create_publisher(Clock, '/clock', 10)
    driver.wait_ready(lambda: None, node=grown.node)
    driver.wait_for(lambda o: pub_odom.get_subscription_count() > 0
                    and pub_clock.get_subscription_count() > 0)

    def drive(place: int, t: float, rgb: np.ndarray) -> list:
        pub_clock.publish(Clock(clock=to_time(t)))
        odom = Odometry()
        odom.header.stamp = to_time(t)
        odom.header.frame_id, odom.child_frame_id = 'odom', 'base_link'
        odom.pose.pose.position.x = 30.0 * place
        odom.pose.pose.orientation.w = 1.0
        pub_odom.publish(odom)
        time.sleep(0.05)  # let the odometry callback run before the frame is processed
        return driver.localize(image_msg(rgb, t), t)

    first = [drive(i, 1000.0 + 2 * i, f.rgb) for i, f in enumerate(world.map_frames[:6])]
    assert first == [[]] * 6  # each earlier keyframe is too recent to be a candidate
    for k, query in enumerate(world.queries[:3]):  # revisits of places 2, 3, 4
        t, place = 1050.0 + 0.5 * k, QUERY_ORDER[k]
        rows = drive(place, t, query.rgb)
        assert rows[0][0] == place and rows[0][2] == 1000.0 + 2 * place  # the keyframe of the first pass
    driver.wait_for(lambda o: len(o.loops) == 2)
    # 2 agreeing frames, then every further one (no rate cap by default)
    assert [list(m.data) for m in driver.out.loops] == [[1050.5, 1006.0], [1051.0, 1008.0]]
    def clock_reached(o: Any) -> bool:  # /clock is read BEST_EFFORT by rclpy: resend until it arrives
        pub_clock.publish(Clock(clock=to_time(1060.0)))
        return bool(o.diagnostics) and to_sec(o.diagnostics[-1].header.stamp) >= 1060.0
    driver.wait_for(clock_reached)
    status = driver.latest_status()  # stamped in sim time, so it follows /clock
    assert status['places_added'] == '8'  # keyframe.min_interval 1 s: 1050.5 was not added
    assert status['loop_status.loop_detected'] == '2' and 'loop_status.rate_limited' not in status
    assert status['loop_funnel.published'] == '2' and status['loop_funnel.separated'] == '3'

    client = node.create_client(Trigger, '/vpr_localizer/save_map')
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(Trigger.Request())
    driver.wait_for(lambda o: future.done())
    assert future.result().success, future.result().message
    grown = VprMap.load(saved)
    assert len(grown) == 8
    assert [p.pose.position[0] for p in grown.places[:6]] == [30.0 * i for i in range(6)]
    # the empty map took the frame of the odometry that posed its keyframes, and so did the outputs
    assert (grown.meta.frame_id, grown.meta.child_frame_id) == ('odom', 'base_link')
    with driver.out.lock:
        assert driver.out.best[1050.0].header.frame_id == 'odom'


def test_node_runs_segvlad_multi_vector_maps(world: World, in_process, driver_factory, tmp_path) -> None:
    """A SegVLAD map (one vector per SuperSegment, voted retrieval) behind the node: the node's
    candidates equal the offline Localizer's for the same frames."""
    from test.ros.conftest import image_msg
    from vpr_ros.encoders import create_encoder
    from vpr_ros.localization import Localizer
    from vpr_ros.mapdb.store import VprMap

    encoder = create_encoder('segvlad', {'image_size': [96, 128], 'segments': 16, 'pca_dim': 32})
    encoder.fit([f.rgb for f in world.map_frames])
    vmap = VprMap.empty(encoder.identity(), encoder_state=encoder.get_state())
    for frame, vectors in zip(world.map_frames, encoder.describe([f.rgb for f in world.map_frames])):
        vmap.add(frame.stamp, frame.pose, vectors)
    assert vmap.meta.multi_vector and len(vmap.owners) > len(vmap)
    path = str(tmp_path / 'segvlad_map')
    vmap.save(path)
    offline = Localizer.from_map(path, top_k=3)
    served = in_process(map_path=path, threads=1, top_k=3, **{RELIABLE_IMAGES: 'reliable'})
    driver = driver_factory()
    driver.wait_ready(lambda: None, node=served.node)
    for k, query in enumerate(world.queries[:4]):
        # Resent until answered: in a full run the image publisher can count a reader of an earlier
        # test's killed node (its DDS lease has not expired yet) as this node's, and the first frame
        # then goes out before this node's reader is matched (seen twice, never in a file on its own).
        rows = driver.localize(image_msg(query.rgb, 400.0 + k), 400.0 + k, resend_every=5.0)
        expected = offline.localize(query.rgb, 400.0 + k).matches
        # The node runs 1 thread, the offline Localizer the default: a tolerance, near ties may swap.
        # Scores are vote sums over min-max normalised segment similarities (up to ~200 here), so
        # their rounding is relative: 1.7e-5 absolute on a vote of 4 was seen on a fresh clone.
        assert_same_ranking([(int(r[0]), r[1]) for r in rows], [(m.place_id, m.score) for m in expected],
                            rtol=1e-4)


def test_diagnostics_level_reflects_the_last_period(world: World, in_process, driver_factory) -> None:
    from test.ros.conftest import image_msg

    node = in_process(map_path=world.map_path, threads=1, diagnostics_period=0.2,
                      **{RELIABLE_IMAGES: 'reliable'}).node
    real_localize = node._localizer.localize
    calls = []

    def fail_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError('injected failure')
        return real_localize(*args, **kwargs)

    node._localizer.localize = fail_once
    driver = driver_factory()
    driver.wait_ready(lambda: None, node=node)

    def first_status_with(key: str) -> dict[str, Any]:
        driver.wait_for(lambda o: (s := driver.latest_status()) is not None and key in s)
        with driver.out.lock:
            for array in driver.out.diagnostics:
                for status in array.status:
                    values = {kv.key: kv.value for kv in status.values}
                    if key in values:
                        return {'level': ord(status.level), 'message': status.message, **values}
        raise AssertionError(key)

    good = world.queries[0].rgb
    driver.image_pub.publish(image_msg(good, 400.0))
    failed = first_status_with('skipped.processing error (RuntimeError)')
    assert failed['level'] == 2 and 'RuntimeError' in failed['message']
    odd = image_msg(np.zeros((16, 15, 3), np.uint8), 401.0)
    odd.encoding, odd.step, odd.data = 'yuv422', 30, bytes(16 * 30)
    driver.image_pub.publish(odd)
    bad = first_status_with('skipped.odd width yuv422')
    assert bad['level'] == 1 and 'odd width yuv422' in bad['message'] and 'processing' not in bad['message']
    driver.localize(image_msg(good, 402.0), 402.0)
    driver.wait_for(lambda o: (s := driver.latest_status()) is not None and s['level'] == 0)


def _corrupt_map_copy(world: World, tmp_path) -> str:
    import yaml

    broken = tmp_path / 'corrupt_map'
    shutil.copytree(world.map_path, broken)
    meta = yaml.safe_load((broken / 'map.yaml').read_text())
    meta['encoder']['config'] = [1, 2]
    (broken / 'map.yaml').write_text(yaml.safe_dump(meta))
    return str(broken)


@pytest.mark.parametrize('case', ['missing params file', 'broken params file', 'unquoted -p YAML',
                                  'threads abc', 'corrupt map.yaml'])
def test_start_up_errors_are_one_fatal_line(case, world: World, tmp_path) -> None:
    (tmp_path / 'broken.yaml').write_text('vpr_localizer:\n  ros__parameters:\n    top_k: [1, 2\n')
    ros_args = {
        'missing params file': ['--params-file', str(tmp_path / 'absent.yaml')],
        'broken params file': ['--params-file', str(tmp_path / 'broken.yaml')],
        'unquoted -p YAML': ['-p', 'encoder_config:={threads:'],
        'threads abc': ['-p', 'incremental:=true', '-p', 'encoder:=raw_pixels',
                        '-p', "encoder_config:='{threads: abc}'"],
        'corrupt map.yaml': ['-p', f'map_path:={_corrupt_map_copy(world, tmp_path)}'],
    }[case]
    proc = subprocess.run([sys.executable, '-m', 'vpr_ros.ros.node', '--ros-args', *ros_args],
                          env=child_env(), capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    fatal = [line for line in out.splitlines() if 'FATAL' in line]
    assert len(fatal) == 1 and 'cannot start' in fatal[0], out
    assert 'Traceback' not in out


def _call_save_map(driver: Any) -> Any:
    from std_srvs.srv import Trigger

    client = driver.session.node.create_client(Trigger, '/vpr_localizer/save_map')
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(Trigger.Request())
    driver.wait_for(lambda o: future.done(), timeout=30)
    driver.session.node.destroy_client(client)
    return future.result()


def test_save_map_never_replaces_a_foreign_folder_and_a_failed_save_leaves_the_node_answering(
        world: World, in_process, driver_factory, tmp_path, monkeypatch) -> None:
    """~/save_map onto a nav2 folder is refused (folder byte-identical); a save that fails in the
    middle (a full disk: sqlite3.OperationalError) is an error reply, and frames are still answered;
    save_map_path cannot be changed at run time (any peer on the graph could pick the target)."""
    import sqlite3

    from test.ros.conftest import image_msg
    from vpr_ros.mapdb.store import VprMap

    nav2 = tmp_path / 'nav2'
    nav2.mkdir()
    (nav2 / 'map.yaml').write_text('image: office.pgm\nresolution: 0.05\norigin: [0,0,0]\n')
    (nav2 / 'office.pgm').write_bytes(b'P5\n1 1\n255\n\x07')
    before = {p.name: p.read_bytes() for p in nav2.iterdir()}
    node = in_process(map_path=world.map_path, threads=1, save_map_path=str(nav2),
                      **{RELIABLE_IMAGES: 'reliable'}).node
    driver = driver_factory()
    driver.wait_ready(lambda: None, node=node)

    reply = _call_save_map(driver)
    assert not reply.success and "not a vpr_ros map's" in reply.message
    assert {p.name: p.read_bytes() for p in nav2.iterdir()} == before

    results = driver.set_parameters(Parameter('save_map_path', value=str(tmp_path / 'elsewhere')))
    assert not results[0].successful
    assert node.get_parameter('save_map_path').value == str(nav2)

    def disk_full(self: VprMap, directory: str) -> None:
        raise sqlite3.OperationalError('database or disk is full')

    node._values['save_map_path'] = str(tmp_path / 'new_map')  # a writable target; the write fails
    monkeypatch.setattr(VprMap, '_write_into', disk_full)
    reply = _call_save_map(driver)
    assert not reply.success and 'disk is full' in reply.message
    assert not (tmp_path / 'new_map').exists()
    rows = driver.localize(image_msg(world.queries[0].rgb, 500.0), 500.0)
    assert rows[0][0] == QUERY_ORDER[0]


def _status_dict(s: Any) -> dict[str, Any]:
    return {'level': ord(s.level), 'message': s.message, **{kv.key: kv.value for kv in s.values}}


def _status_after(driver: Any, condition: Any, timeout: float = 30.0,
                  seen: int | None = None) -> dict[str, Any]:
    """The first diagnostics status (received from now on, or after the first ``seen`` arrays) that
    satisfies ``condition``."""
    if seen is None:
        with driver.out.lock:
            seen = len(driver.out.diagnostics)

    def found(o: Any) -> bool:
        return any(condition(_status_dict(s)) for array in o.diagnostics[seen:] for s in array.status)
    driver.wait_for(found, timeout)
    with driver.out.lock:
        for array in driver.out.diagnostics[seen:]:
            for s in array.status:
                status = _status_dict(s)
                if condition(status):
                    return status
    raise AssertionError('unreachable')


CALLBACK_KINDS = ('image', 'odom', 'camera_info', 'clock', 'save_map service', 'parameter validation',
                  'parameter apply', 'diagnostics timer', 'loop-closure thread')


@pytest.mark.parametrize('kind', CALLBACK_KINDS)
def test_a_failing_callback_never_leaves_the_node_deaf(kind: str, world: World, in_process, driver_factory,
                                                       monkeypatch) -> None:
    """A failure injected into each kind of callback (subscriptions, the /clock subscription rclpy
    makes for use_sim_time, services, parameter callbacks, the diagnostics timer, the loop-closure
    thread) is counted in /diagnostics, and the node then still answers a frame and publishes
    diagnostics. Before the guard, the first failure killed the executor thread: nothing after it."""
    from nav_msgs.msg import Odometry
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo

    from test.ros.conftest import image_msg
    from vpr_ros import features as lf
    from vpr_ros.ros.messages import to_time

    sim_time = kind == 'clock'
    node = in_process(map_path=world.map_path, threads=1, diagnostics_period=0.2, use_odom=True,
                      use_sim_time=sim_time, **{RELIABLE_IMAGES: 'reliable',
                                                'qos_overrides./odom.subscription.reliability': 'reliable',
                                                'loop_closure.min_time_separation': 0.0,
                                                'verification.enabled': False}).node
    driver = driver_factory()
    pub_node = driver.session.node
    pub_clock = pub_node.create_publisher(Clock, '/clock', 10)
    pub_odom = pub_node.create_publisher(Odometry, '/odom', 10)
    pub_info = pub_node.create_publisher(CameraInfo, '/camera_info', 10)
    driver.wait_ready(lambda: None, node=node)
    with driver.out.lock:  # every status from here on: the failure's period must not be missed
        before_failure = len(driver.out.diagnostics)
    injected = RuntimeError('injected failure')

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise injected

    def tick(t: float) -> None:  # sim time: the diagnostics timer runs on /clock
        if sim_time:
            pub_clock.publish(Clock(clock=to_time(t)))

    if kind == 'image':
        monkeypatch.setattr(node._slot, 'put', fail)
        driver.image_pub.publish(image_msg(world.queries[0].rgb, 600.0))
        key = 'callback_errors.subscription /image'
    elif kind == 'odom':
        monkeypatch.setattr(node, '_check_odom_frame', fail)
        odom = Odometry()
        odom.header.frame_id = 'odom'
        odom.pose.pose.orientation.w = 1.0
        driver.wait_for(lambda o: pub_odom.get_subscription_count() > 0)
        pub_odom.publish(odom)
        key = 'callback_errors.subscription /odom'
    elif kind == 'camera_info':
        monkeypatch.setattr(lf, 'camera_from_msg_fields', fail)
        driver.wait_for(lambda o: pub_info.get_subscription_count() > 0)
        pub_info.publish(CameraInfo())
        key = 'callback_errors.subscription /camera_info'
    elif kind == 'clock':
        driver.wait_for(lambda o: pub_clock.get_subscription_count() > 0)
        bad = Clock()
        bad.clock.sec = -1  # rclpy's own TimeSource callback raises ValueError on it
        key = 'callback_errors.subscription /clock'
    elif kind == 'save_map service':
        class FailingValues(dict):
            def __getitem__(self, name: str) -> Any:
                if name == 'save_map_path':
                    raise injected
                return super().__getitem__(name)
        monkeypatch.setattr(node, '_values', FailingValues(node._values))
        reply = _call_save_map(driver)
        assert not reply.success and 'injected failure' in reply.message
        key = 'callback_errors.service /vpr_localizer/save_map'
    elif kind == 'parameter validation':
        monkeypatch.setattr(node, '_loop_config', fail)
        results = driver.set_parameters(Parameter('top_k', value=3))
        assert not results[0].successful and 'injected failure' in results[0].reason
        key = 'callback_errors.parameters (validation)'
    elif kind == 'parameter apply':
        monkeypatch.setattr(node, '_apply_settings', fail)
        driver.set_parameters(Parameter('top_k', value=3))
        key = 'callback_errors.parameters (apply)'
    elif kind == 'diagnostics timer':
        real = node._skips.as_dict
        calls: list[int] = []

        def fail_once() -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise injected
            return real()
        monkeypatch.setattr(node._skips, 'as_dict', fail_once)
        failed = _status_after(driver, lambda s: 'diagnostics failed' in s['message'])
        assert failed['level'] == 2 and 'injected failure' in failed['message']
        key = 'callback_errors.timer publish_diagnostics'
    else:  # the loop-closure thread
        monkeypatch.setattr(node._loop_filter, 'update', fail)
        driver.localize(image_msg(world.queries[1].rgb, 590.0), 590.0)
        key = 'skipped.loop-closure error (RuntimeError)'

    t = 610.0
    status = None
    deadline = time.monotonic() + 30
    while status is None:
        if kind == 'clock':  # read BEST_EFFORT by rclpy: resent until counted
            pub_clock.publish(bad)
            time.sleep(0.05)
        tick(t)
        t += 0.5
        try:
            status = _status_after(driver, lambda s: int(s.get(key, 0)) >= 1, timeout=1.0,
                                   seen=before_failure)
        except AssertionError:
            assert time.monotonic() < deadline, f'{key} never counted in /diagnostics'
    assert status['level'] == 2, status  # ERROR in the period of the failure
    monkeypatch.undo()
    if kind == 'save_map service':
        node._values = dict(node._values)
    rows = driver.localize(image_msg(world.queries[0].rgb, 700.0), 700.0)
    assert rows[0][0] == QUERY_ORDER[0]
    deadline = time.monotonic() + 30
    while True:  # and diagnostics keep coming, with the answered frame counted
        tick(t)
        t += 0.5
        try:
            after = _status_after(driver, lambda s: int(s.get('frames_processed', 0)) >= 1, timeout=1.0)
            break
        except AssertionError:
            assert time.monotonic() < deadline, 'no diagnostics after the failure'
    assert int(after[key]) >= 1


def test_non_finite_odometry_is_a_counted_skip_and_a_zero_quaternion_a_position_only_pose(
        world: World, in_process, driver_factory) -> None:
    """Incremental node: NaN odometry messages are skipped and counted (they reached the keyframe and
    failed the frame as a processing error); a zero quaternion gives a position-only keyframe pose."""
    from nav_msgs.msg import Odometry

    from test.ros.conftest import ENCODER_CONFIG, image_msg
    from vpr_ros.ros.messages import to_time

    grown = in_process(map_path='', incremental=True, encoder='effnet_gem',
                       encoder_config=str(ENCODER_CONFIG), threads=1, use_odom=True, diagnostics_period=0.2,
                       **{RELIABLE_IMAGES: 'reliable', 'verification.enabled': False,
                          'qos_overrides./odom.subscription.reliability': 'reliable'}).node
    driver = driver_factory()
    pub_odom = driver.session.node.create_publisher(Odometry, '/odom', 10)
    driver.wait_ready(lambda: None, node=grown)
    driver.wait_for(lambda o: pub_odom.get_subscription_count() > 0)

    def odom(t: float, x: float, w: float) -> Odometry:
        msg = Odometry()
        msg.header.stamp = to_time(t)
        msg.header.frame_id = 'odom'
        msg.pose.pose.position.x = x
        msg.pose.pose.orientation.w = w
        return msg

    for k, t in enumerate((100.0, 102.0)):
        pub_odom.publish(odom(t - 0.1, float('nan'), 1.0))   # NaN position
        pub_odom.publish(odom(t - 0.05, 5.0 * k, 0.0))       # zero quaternion: position only
        time.sleep(0.1)
        driver.localize(image_msg(world.map_frames[k].rgb, t), t)
    status = _status_after(driver, lambda s: int(s.get('places_added', 0)) == 2)
    assert int(status['skipped.non-finite odometry pose']) == 2
    assert not any(key.startswith('skipped.processing error') for key in status)
    with grown._map_lock:
        poses = [p.pose for p in grown._localizer.map.places]
    assert [p.position[0] for p in poses] == [0.0, 5.0]
    assert all(p.orientation is None for p in poses)


def test_a_silent_image_input_is_logged_with_the_topic_and_the_remap(world: World, in_process, driver_factory,
                                                                     capfd) -> None:
    """No image ever arrives (wrong topic, forgotten remap): the log says so within seconds, naming the
    resolved input, the image topics that do exist, and the -r image:= remap (it used to stay silent)."""
    from sensor_msgs.msg import Image

    in_process(map_path=world.map_path, threads=1, ros_args=('-r', 'image:=/cam/wrong'))
    driver = driver_factory()
    driver.session.node.create_publisher(Image, '/camera/image_raw', 10)  # the real camera, elsewhere
    deadline = time.monotonic() + 30
    log = ''
    while 'no image received' not in log:
        assert time.monotonic() < deadline, log
        time.sleep(0.5)
        log += capfd.readouterr().err
    line = next(line for line in log.splitlines() if 'no image received' in line)
    assert 'on /cam/wrong' in line and '/camera/image_raw' in line and '-r image:=' in line
