"""Shared pieces of the ROS tests: a tiny map + query bag, the node as a subprocess, a test-side driver.

DDS isolation (unique ROS_DOMAIN_ID, localhost discovery, field checks) comes from test/conftest.py;
subprocesses get that environment explicitly. Most tests switch the node's image subscription to
RELIABLE through the standard QoS override parameter (as `vpr-ros replay` does): with the default
BEST_EFFORT reader a frame sent right after discovery can be lost, which would make them flaky.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from test.helpers import textured_frames
from vpr_ros.frames import Frame, Pose

MAP_PLACES = 8
QUERY_ORDER = (2, 3, 4, 5, 6, 1, 0, 7)
QUERY_T0 = 200.0
ENCODER_CONFIG = {'image_size': [96, 128]}
RELIABLE_IMAGES = 'qos_overrides./image.subscription.reliability'  # the node's relative input `image`


def perturb(rgb: np.ndarray, seed: int) -> np.ndarray:
    """A revisit of a place: shifted a few pixels, brighter or darker."""
    rng = np.random.default_rng(seed)
    out = np.roll(rgb, int(rng.integers(-3, 4)), axis=1).astype(np.float32) * rng.uniform(0.9, 1.1)
    return np.clip(out, 0, 255).astype(np.uint8)


@dataclass
class World:
    map_path: str
    bag_path: str
    map_frames: list[Frame]
    queries: list[Frame]          # in bag order; queries[i] revisits place QUERY_ORDER[i]
    tmp: str


@pytest.fixture(scope='session')
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    from vpr_ros.encoders import create_encoder
    from vpr_ros.mapdb.store import VprMap
    from vpr_ros.sources.bag import write_bag

    tmp = tmp_path_factory.mktemp('ros_world')
    encoder = create_encoder('effnet_gem', ENCODER_CONFIG)
    map_frames = textured_frames(MAP_PLACES, size=(120, 160))
    vmap = VprMap.empty(encoder.identity())
    for frame, vectors in zip(map_frames, encoder.describe([f.rgb for f in map_frames])):
        vmap.add(frame.stamp, frame.pose, vectors, 'test', frame.rgb)
    vmap.save(str(tmp / 'map'))
    queries = []
    for k, place in enumerate(QUERY_ORDER):
        x, y, _ = map_frames[place].pose.position
        queries.append(Frame(QUERY_T0 + 0.25 * k, perturb(map_frames[place].rgb, k),
                             Pose.from_xy_yaw(x + 1.0, y, 0.0)))
    write_bag(str(tmp / 'query'), queries)
    return World(str(tmp / 'map'), str(tmp / 'query'), map_frames, queries, str(tmp))


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop('_ROS_WHEELS_BOOTSTRAP_COMPLETE', None)  # the child sets up its own library path
    env.setdefault('PYTHONFAULTHANDLER', '1')  # a crash (one exit -11 at shutdown seen) logs its stacks
    return env


class NodeProcess:
    """``python -m vpr_ros.localizer --ros-args ...`` with its log captured to a file."""

    def __init__(self, ros_args: list[str], log_path: str, module: str = 'vpr_ros.localizer') -> None:
        self.log_path = log_path
        with open(log_path, 'wb') as log:
            self.proc = subprocess.Popen([sys.executable, '-m', module, '--ros-args', *ros_args],
                                         stdout=log, stderr=subprocess.STDOUT, env=child_env())

    def log(self) -> str:
        with open(self.log_path, encoding='utf-8', errors='replace') as fh:
            return fh.read()

    def check_alive(self) -> None:
        assert self.proc.poll() is None, f'node exited with {self.proc.returncode}:\n{self.log()}'

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def image_msg(rgb: np.ndarray, t: float, encoding: str = 'rgb8', pad: int = 0):
    """sensor_msgs/Image of an RGB array in ``rgb8``/``bgr8``/``mono8``, rows padded by ``pad`` bytes."""
    from sensor_msgs.msg import Image

    from vpr_ros.ros.messages import to_time

    arr = {'rgb8': rgb, 'bgr8': rgb[..., ::-1],
           'mono8': rgb.mean(axis=2, keepdims=True).astype(np.uint8)}[encoding]
    h, w, c = arr.shape
    rows = np.zeros((h, w * c + pad), np.uint8)
    rows[:, :w * c] = arr.reshape(h, w * c)
    msg = Image(height=h, width=w, encoding=encoding, step=w * c + pad, is_bigendian=0)
    msg.header.stamp = to_time(t)
    msg.data = rows.tobytes()
    return msg


@dataclass
class Outputs:
    candidates: dict[float, list[tuple[int, float, float]]] = field(default_factory=dict)
    best: dict[float, Any] = field(default_factory=dict)
    poses: dict[float, Any] = field(default_factory=dict)
    loops: list[Any] = field(default_factory=list)
    diagnostics: list[Any] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)  # wait_for conditions may re-enter


class Driver:
    """Test-side node: publishes images, records the localizer's outputs (private rclpy context)."""

    def __init__(self, node_name: str = '/vpr_localizer', image_topic: str = '/image',
                 image_type: Any = None, loop_topic: str | None = None) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped, Vector3Stamped
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import Float64MultiArray

        from vpr_ros.ros.messages import parse_candidates, to_sec
        from vpr_ros.ros.replay import Session

        self.session = Session()
        node = self.session.node
        self.out = Outputs()
        self.image_pub = node.create_publisher(image_type or Image, image_topic, 10)

        def keep(table: str, key: Callable[[Any], float]) -> Callable[[Any], None]:
            def callback(msg: Any) -> None:
                with self.out.lock:
                    getattr(self.out, table)[key(msg)] = msg
            return callback

        def on_candidates(msg: Any) -> None:
            t, rows = parse_candidates(msg)
            with self.out.lock:
                self.out.candidates[t] = rows

        def append(table: str) -> Callable[[Any], None]:
            def callback(msg: Any) -> None:
                with self.out.lock:
                    getattr(self.out, table).append(msg)
            return callback

        self.subs = [
            node.create_subscription(Float64MultiArray, f'{node_name}/candidates', on_candidates, 100),
            node.create_subscription(Vector3Stamped, f'{node_name}/best_match',
                                     keep('best', lambda m: to_sec(m.header.stamp)), 100),
            node.create_subscription(PoseWithCovarianceStamped, f'{node_name}/pose',
                                     keep('poses', lambda m: to_sec(m.header.stamp)), 100),
            node.create_subscription(DiagnosticArray, '/diagnostics', append('diagnostics'), 100),
        ]
        if loop_topic:  # subscribed exactly as LIO-SAM does: BEST_EFFORT, KEEP_LAST 1
            self.subs.append(node.create_subscription(
                Float64MultiArray, loop_topic, append('loops'),
                QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)))

    def wait_ready(self, alive: Callable[[], None], timeout: float = 90.0, node: Any = None) -> None:
        """Discovery both ways: the node subscribes our images, we receive its outputs.

        DDS matches each side of a topic on its own: our readers counting the node's writers does not
        mean the node's writers have matched our readers yet, and a RELIABLE VOLATILE answer sent
        before that is lost (seen: the first frame of an in-process node answered but never
        received). So this also waits, given the in-process ``node`` (a LocalizerNode), for its
        output writers to count our readers; for a node in another process, for one diagnostics
        message of it (its writers have then matched ours).
        """
        deadline = time.monotonic() + timeout

        def writers_matched() -> bool:
            if node is None:
                return self.latest_status() is not None
            return all(p.get_subscription_count() > 0 for p in (
                node._pub_candidates, node._pub_best, node._pub_pose, node._pub_diag))

        while not (self.image_pub.get_subscription_count() > 0
                   and all(s.get_publisher_count() > 0 for s in self.subs[:3]) and writers_matched()):
            alive()
            assert time.monotonic() < deadline, 'discovery timed out'
            time.sleep(0.05)

    def set_parameters(self, *params: Any, node_name: str = '/vpr_localizer') -> list:
        """Set the node's parameters through its SetParameters service; the per-parameter results."""
        from rcl_interfaces.srv import SetParameters

        client = self.session.node.create_client(SetParameters, f'{node_name}/set_parameters')
        assert client.wait_for_service(timeout_sec=10)
        future = client.call_async(SetParameters.Request(parameters=[p.to_parameter_msg() for p in params]))
        deadline = time.monotonic() + 10
        while not future.done():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        self.session.node.destroy_client(client)
        return future.result().results

    def wait_for(self, condition: Callable[[Outputs], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self.out.lock:
                if condition(self.out):
                    return
            assert time.monotonic() < deadline, 'timed out waiting for node outputs'
            time.sleep(0.02)

    def localize(self, msg: Any, t: float, timeout: float = 60.0,
                 resend_every: float | None = None) -> list[tuple[int, float, float]]:
        """Publish one frame and wait for its candidates.

        ``resend_every``: for a BEST_EFFORT node subscription, where a frame sent while the reader
        is still matching the writer can be lost; the node may then answer the frame twice.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.image_pub.publish(msg)
            try:
                self.wait_for(lambda o: t in o.candidates,
                              min(resend_every or timeout, deadline - time.monotonic()))
                break
            except AssertionError:
                if resend_every is None or time.monotonic() >= deadline:
                    raise
        with self.out.lock:
            return self.out.candidates[t]

    def latest_status(self, name: str = 'vpr_localizer: localization') -> dict[str, str] | None:
        with self.out.lock:
            for array in reversed(self.out.diagnostics):
                for status in array.status:
                    if status.name == name:
                        return {'level': ord(status.level), 'message': status.message,
                                **{kv.key: kv.value for kv in status.values}}
        return None

    def close(self) -> None:
        self.session.close()


@pytest.fixture
def driver_factory() -> Iterator[Callable[..., Driver]]:
    pytest.importorskip('rclpy')
    made: list[Driver] = []

    def make(**kwargs: Any) -> Driver:
        made.append(Driver(**kwargs))
        return made[-1]
    yield make
    for d in made:
        d.close()


METRIC_IMAGE_SIZE = (480, 640)  # SIFT at 320x240 finds too few matches between keyframes 8 m apart


@pytest.fixture(scope='module')
def sample_map(tmp_path_factory):
    """A map of every other sample-world mapping frame (raw_pixels retrieval, RootSIFT, the sample camera)
    and a frame between two of its keyframes whose offline metric solve is good, with that solve. (The
    query traversal's appearance change is the benchmark's business: bench_metric_pose.py.)"""
    from vpr_ros.encoders import create_encoder
    from vpr_ros.features import LocalFeatureConfig, extract
    from vpr_ros.geometry import metric
    from vpr_ros.mapdb.local_features import LocalFeatureStore
    from vpr_ros.mapdb.store import VprMap
    from vpr_ros.sample import render_traversal, sample_camera

    frames, _ = render_traversal('mapping', scale=0.15, image_size=METRIC_IMAGE_SIZE)
    mapping, query = frames[::2], frames[1::2]
    encoder = create_encoder('raw_pixels', {'threads': 1})
    camera = sample_camera(METRIC_IMAGE_SIZE)
    vmap = VprMap.empty(encoder.identity(), encoder_state=encoder.get_state())
    vmap.local_features = LocalFeatureStore(LocalFeatureConfig(), camera)
    for frame in mapping:
        vectors = encoder.describe([frame.rgb])[0]
        vmap.add(frame.stamp, frame.pose, vectors, 'sample', None, extract(frame.rgb))
    path = str(tmp_path_factory.mktemp('metric') / 'map')
    vmap.save(path)
    solver = metric.for_map(vmap)
    for frame in query:
        matches = vmap.search(encoder.describe([frame.rgb])[0], 5)
        solved = solver.localize(extract(frame.rgb), [m.place_id for m in matches], None)
        if solved.good and math.dist(solved.pose.position[:2], frame.pose.position[:2]) < 1.0:
            return path, frame, solved
    pytest.fail('no query frame of the sample world has a good offline metric solve')
