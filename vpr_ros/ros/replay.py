"""Live replay evaluation: play a bag to the localizer node over DDS and evaluate what it publishes.

``vpr-ros replay --bag QUERY_BAG --map MAP [--rate 1.0] [--out DIR] [--params-file F] [--connect]``; the
command line (vpr_ros.cli) and the demo hand :func:`run` a :class:`ReplayConfig`.

1. Start the node as a subprocess (``sys.executable -m vpr_ros.ros.node --ros-args ...`` with
   ``use_sim_time``) or, with ``--connect``, use one that is already running.
2. Wait for discovery (the node's image subscription, its output publishers).
3. Play the bag's images and /clock (synthesised from image stamps when the bag has none) at
   ``--rate`` times real time, publishing the serialized bytes unchanged, as ``ros2 bag play``
   would; record every output with its wall-clock receipt time.
4. Write the same results.json + plots as ``vpr-ros evaluate`` (Recall@N, PR curve, trajectory,
   query/match pairs), plus a ``live`` section: end-to-end latency (image publish -> candidates
   receipt, wall time), frames dropped by the node, and loop-closure precision/recall.
"""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from rcl_interfaces.srv import GetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import parameter_value_to_python
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64MultiArray

from vpr_ros.errors import VprError
from vpr_ros.evaluation.metrics import (
    QueryRecord,
    Thresholds,
    evaluate_retrieval,
    loop_closure_metrics,
    precision_recall_curve,
    recall_text,
    timing_stats,
)
from vpr_ros.evaluation.report import plot_latency, plot_loop_closures, query_match_pairs, write_report
from vpr_ros.mapdb.store import VprMap
from vpr_ros.matching.loop_closure import LoopClosureConfig
from vpr_ros.matching.sequence import SequenceConfig
from vpr_ros.ros import messages
from vpr_ros.ros.parameters import NODE_NAME, image_subscription_topic
from vpr_ros.ros.replay_config import LOCKSTEP_TIMEOUT_S, ReplayConfig
from vpr_ros.settings import config_from_flat, settings_of
from vpr_ros.sources.bag import BagSource

RECORD_QOS = QoSProfile(depth=1000)  # outputs are small; never lose one to a slow recorder
PLAY_QOS = QoSProfile(depth=10)


# Read back from the node for the report: what it actually ran with (a params file or a running node
# may differ from the replay's own settings).
SEQUENCE_PARAMS = tuple(s.name for s in settings_of(SequenceConfig))
LOOP_PARAMS = (*(s.name for s in settings_of(LoopClosureConfig)), 'verification.enabled')


def _header_stamp(raw: bytes) -> float:
    """Header stamp of a serialized message whose first field is std_msgs/Header (CDR)."""
    endian = '<' if raw[1] == 1 else '>'
    sec, nanosec = struct.unpack_from(endian + 'iI', raw, 4)
    return sec + nanosec * 1e-9


@dataclass
class Recording:
    """What the recorder saw, with wall-clock (monotonic) receipt times."""

    candidates: dict[float, tuple[float, list[tuple[int, float, float]]]] = field(default_factory=dict)
    poses: dict[float, PoseWithCovarianceStamped] = field(default_factory=dict)
    loop_closures: list[tuple[float, float]] = field(default_factory=list)
    diagnostics: dict[str, str] = field(default_factory=dict)
    last_output: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_candidates(self, msg: Float64MultiArray) -> None:
        now = time.monotonic()
        t, rows = messages.parse_candidates(msg)
        with self.lock:
            self.candidates[t] = (now, rows)
            self.last_output = now

    def on_pose(self, msg: PoseWithCovarianceStamped) -> None:
        with self.lock:
            self.poses[messages.to_sec(msg.header.stamp)] = msg

    def on_loop_closure(self, msg: Float64MultiArray) -> None:
        if len(msg.data) == 2:
            with self.lock:
                self.loop_closures.append((float(msg.data[0]), float(msg.data[1])))

    def diagnostics_callback(self, node_name: str) -> Callable[[DiagnosticArray], None]:
        prefix = node_name.lstrip('/').split('/')[-1] + ':'

        def callback(msg: DiagnosticArray) -> None:
            for status in msg.status:
                if status.name.startswith(prefix):
                    with self.lock:
                        self.diagnostics = {kv.key: kv.value for kv in status.values}
        return callback


class Session:
    """A private rclpy context with the player/recorder node spinning in a background thread."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, args=[])
        self.node = Node('vpr_replay', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # the context was shut down under the executor
            pass

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.context.try_shutdown()
        self._thread.join(timeout=2.0)


def _wait(condition: Callable[[], bool], timeout: float, what: str, alive: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        alive()
        if time.monotonic() > deadline:
            raise VprError(f'replay: timed out after {timeout:.0f} s waiting for {what}')
        time.sleep(0.05)


def start_node(map_path: str, log_path: str, *, node: str = '/' + NODE_NAME, params_file: str | None = None,
               params: Sequence[str] = (), sim_time: bool = True,
               remaps: Sequence[str] = ()) -> subprocess.Popen:
    """The localizer as a subprocess: ``sys.executable -m vpr_ros.localizer --ros-args ...``.

    ``params``: extra ``name:=value`` items, applied after ``params_file``; ``remaps``: ``from:=to``
    remapping rules, e.g. ``image:=/camera/image_raw`` for the node's relative camera input.
    """
    namespace, _, name = node.rpartition('/')
    cmd = [sys.executable, '-m', 'vpr_ros.localizer', '--ros-args', '-r', f'__node:={name}']
    if namespace:
        cmd += ['-r', f'__ns:={namespace}']
    for rule in remaps:
        cmd += ['-r', rule]
    if params_file:
        cmd += ['--params-file', params_file]
    for item in [f'map_path:={os.path.abspath(map_path)}', f'use_sim_time:={str(sim_time).lower()}', *params]:
        cmd += ['-p', item]
    env = dict(os.environ)
    env.pop('_ROS_WHEELS_BOOTSTRAP_COMPLETE', None)  # let the child set up its own library path
    with open(log_path, 'wb') as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def stop_node(proc: subprocess.Popen) -> int:
    """SIGINT (a clean shutdown), then SIGKILL after 15 s; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _node_parameters(session: Session, node_name: str, names: list[str],
                     timeout: float = 10.0) -> dict[str, Any]:
    client = session.node.create_client(GetParameters, f'{node_name}/get_parameters')
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            raise VprError(f'replay: {node_name}/get_parameters is not available')
        future = client.call_async(GetParameters.Request(names=names))
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise VprError(f'replay: no answer from {node_name}/get_parameters')
            time.sleep(0.02)
        return {n: parameter_value_to_python(v) for n, v in zip(names, future.result().values)}
    finally:
        session.node.destroy_client(client)


def _play(bag: BagSource, pub_image: Publisher, pub_clock: Publisher, rate: float,
          alive: Callable[[], None], answered: Callable[[float], bool] | None = None) -> dict[float, float]:
    """Publish images and /clock in bag order at ``rate``; returns {image stamp: wall publish time}.

    ``answered``: lockstep, each image waits until the previous one is answered (or a timeout)."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore
    from tqdm import tqdm

    store = get_typestore(Stores.LATEST)
    published: dict[float, float] = {}
    bar = tqdm(total=bag.image_count, desc='replay (images played)', unit='img')
    with bar, AnyReader([Path(bag.path)], default_typestore=store) as reader:
        conns = [c for c in reader.connections if c.topic in (bag.image_topic, '/clock')]
        has_clock = any(c.topic == '/clock' for c in conns)
        _wait(lambda: pub_image.get_subscription_count() > 0, 30.0, f'a subscriber on {pub_image.topic_name}',
              alive)
        start_wall, start_ns = time.monotonic(), None
        for conn, t_ns, raw in reader.messages(connections=conns):
            start_ns = t_ns if start_ns is None else start_ns
            if answered is not None and published and conn.topic != '/clock':
                last, deadline = next(reversed(published)), time.monotonic() + LOCKSTEP_TIMEOUT_S
                while not answered(last) and time.monotonic() < deadline:
                    alive()
                    time.sleep(0.01)
                start_wall, start_ns = time.monotonic(), t_ns  # the bag's pace resumes from the answer
            delay = start_wall + (t_ns - start_ns) * 1e-9 / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            alive()
            if not reader.is2:  # rosbag1: re-serialize as CDR
                raw = store.serialize_cdr(reader.deserialize(raw, conn.msgtype), conn.msgtype)
            if conn.topic == '/clock':
                pub_clock.publish(bytes(raw))
                continue
            stamp = _header_stamp(raw)
            if not has_clock:
                pub_clock.publish(Clock(clock=messages.to_time(stamp)))
            pub_image.publish(bytes(raw))
            published[stamp] = time.monotonic()
            bar.update()
    return published


def _is_compressed(bag: BagSource) -> bool:
    from rosbags.highlevel import AnyReader

    with AnyReader([Path(bag.path)]) as reader:
        msgtype = next(c.msgtype for c in reader.connections if c.topic == bag.image_topic)
    return msgtype == 'sensor_msgs/msg/CompressedImage'


def _drain(pub_clock: Publisher, recording: Recording, published: dict[float, float], idle: float,
           alive: Callable[[], None]) -> None:
    """Keep sim time moving (diagnostics run on it) until the node has been quiet for ``idle`` s."""
    t_sim = max(published) if published else 0.0
    last_wall = time.monotonic()
    while True:
        now = time.monotonic()
        t_sim += now - last_wall
        last_wall = now
        pub_clock.publish(Clock(clock=messages.to_time(t_sim)))
        with recording.lock:
            done = set(recording.candidates) >= set(published)
            quiet = now - max(recording.last_output, max(published.values(), default=now)) > idle
        if (done and now - recording.last_output > 1.2) or quiet:  # > one diagnostics period
            return
        alive()
        time.sleep(0.1)


def check_place_ids(records: list[QueryRecord], n_places: int) -> None:
    """Refuse answers naming places the map lacks: they are another node's, not this replay's."""
    foreign = sorted({pid for r in records for pid in r.place_ids if not 0 <= pid < n_places})
    if foreign:
        raise VprError(f'replay: the node answered with place ids {foreign[:5]} that the {n_places}-place '
                       'map does not have: another node publishes on the same topics (use your own '
                       'ROS_DOMAIN_ID) or the node serves another map')


def run(config: ReplayConfig) -> int:
    """Play ``config.bag`` to the node, record its outputs, write the report; 0 when done."""
    t_start = time.perf_counter()
    if config.rate <= 0:
        raise VprError('replay: --rate must be > 0')
    bag = BagSource(config.bag, config.image_topic, config.pose_topic)
    track = bag.pose_track()
    vmap = VprMap.load(config.map)
    os.makedirs(config.out, exist_ok=True)
    compressed = _is_compressed(bag)
    transport = 'compressed' if compressed else 'raw'
    topic = image_subscription_topic(config.publish_topic or bag.image_topic, transport)
    # The node's camera input is the relative `image` (+ '/compressed' for compressed transport).
    image_base = topic[:-len('/compressed')] if compressed else topic
    # The player publishes RELIABLE, like `ros2 bag play`; a matching reliable subscription keeps
    # large frames from losing UDP fragments (a best-effort reader drops the whole sample).
    node_params = [f'image_transport:={transport}',
                   f'qos_overrides.{topic}.subscription.reliability:=reliable', *config.sequence_parameters(),
                   *config.params]
    log_path = os.path.join(config.out, 'node.log')
    proc = None if config.connect else start_node(config.map, log_path, node=config.node,
                                                  params_file=config.params_file, params=node_params,
                                                  remaps=[f'image:={image_base}'])

    def alive() -> None:
        if proc is not None and proc.poll() is not None:
            with open(log_path, encoding='utf-8', errors='replace') as fh:
                tail = ''.join(fh.readlines()[-5:]).strip()
            raise VprError(f'replay: the localizer node exited with code {proc.returncode}: {tail}')

    session = Session()
    recording = Recording()
    try:
        node = session.node
        base = config.node.rstrip('/')
        subs = [node.create_subscription(Float64MultiArray, f'{base}/candidates', recording.on_candidates,
                                         RECORD_QOS),
                node.create_subscription(PoseWithCovarianceStamped, f'{base}/pose', recording.on_pose,
                                         RECORD_QOS),
                node.create_subscription(Float64MultiArray, f'{base}/loop_closure', recording.on_loop_closure,
                                         RECORD_QOS),
                node.create_subscription(DiagnosticArray, '/diagnostics',
                                         recording.diagnostics_callback(base), RECORD_QOS)]
        _wait(lambda: subs[0].get_publisher_count() > 0, config.startup_timeout, f'{base}/candidates', alive)
        params = _node_parameters(session, base, ['top_k', 'incremental', *LOOP_PARAMS, *SEQUENCE_PARAMS])
        pub_image = node.create_publisher(CompressedImage if compressed else Image, topic, PLAY_QOS)
        pub_clock = node.create_publisher(Clock, '/clock', PLAY_QOS)
        if proc is not None:  # the started node runs on sim time
            _wait(lambda: pub_clock.get_subscription_count() > 0, 30.0, 'a /clock subscriber', alive)
        def answered(stamp: float) -> bool:
            with recording.lock:
                return stamp in recording.candidates

        published = _play(bag, pub_image, pub_clock, config.rate, alive,
                          answered if config.lockstep else None)
        _drain(pub_clock, recording, published, config.idle_timeout, alive)
    finally:
        session.close()
        if proc is not None:
            code = stop_node(proc)
            if code not in (0, -signal.SIGINT):
                print(f'replay: the node exited with code {code} (see {log_path})', file=sys.stderr)

    with recording.lock:  # only frames this replay sent (a running node may see other cameras too)
        outputs = sorted((t, out) for t, out in recording.candidates.items() if t in published)
        loop_events = list(recording.loop_closures)
        diagnostics = dict(recording.diagnostics)
    records, latencies = [], []
    for stamp, (received, rows) in outputs:
        latencies.append((received - published[stamp]) * 1e3)
        records.append(QueryRecord(stamp, track.at(stamp), [r[0] for r in rows], [r[1] for r in rows],
                                   extra={'latency_ms': round(latencies[-1], 2)}))
    if not records:
        raise VprError('replay: the node published no candidates (see node.log and its /diagnostics)')
    check_place_ids(records, len(vmap))
    thresholds = Thresholds(config.dist, config.yaw)
    top_k = int(params['top_k'])
    retrieval = evaluate_retrieval(records, vmap.places, thresholds,
                                   ns=[n for n in (1, 5, 10) if n <= top_k] or [1])
    retrieval['timing_ms'] = {'end_to_end_latency': timing_stats(latencies),
                              'node_processing': {'p50': diagnostics.get('processing_p50_ms'),
                                                  'p95': diagnostics.get('processing_p95_ms')}}
    processed = {t for t, _ in outputs}
    results = {
        'encoder': vmap.meta.encoder, 'map_places': len(vmap), 'top_k': top_k, 'retrieval': retrieval,
        'precision_recall': precision_recall_curve(records, vmap.places, thresholds),
        'sequence': {'settings': {name.split('.', 1)[1]: params[name] for name in SEQUENCE_PARAMS},
                     'enabled': int(params['sequence.length']) > 0,
                     'frames_matched_by_sequence': _int_or_none(diagnostics.get('sequence.frames_matched')),
                     'frames_single_frame': _int_or_none(
                         diagnostics.get('sequence.frames_single_frame_fallback'))},
        'skipped': {k.split('.', 1)[1]: int(v) for k, v in diagnostics.items() if k.startswith('skipped.')},
        'wall_time_s': round(time.perf_counter() - t_start, 2),
        'live': {
            'bag': os.path.abspath(config.bag), 'rate': config.rate, 'lockstep': config.lockstep,
            'image_topic': topic,
            'frames_published': len(published), 'frames_with_output': len(processed),
            'frames_without_output': len(set(published) - processed),
            'node': {k: _number(diagnostics.get(k)) for k in (
                'frames_received', 'frames_processed', 'frames_dropped', 'frames_rate_limited',
                'skipped_bad_frames', 'latency_p50_ms', 'latency_p95_ms')},
            'poses_published': len(recording.poses),
        },
        'loop_closure': loop_closure_metrics(loop_events, track, vmap.places, [r.stamp for r in records],
                                             float(params['loop_closure.min_time_separation']), thresholds),
    }
    if params['incremental']:
        results['loop_closure']['note'] = ('the node grew its map online: closures to places it added are '
                                           'judged against the nearest place of the loaded map by stamp; '
                                           'comparison judges them by the query poses instead')
    results['loop_closure']['comparison'] = _closure_comparison(loop_events, outputs, track, vmap, params,
                                                                thresholds.dist_m)
    pairs = query_match_pairs(retrieval['per_query'], bag.frames(require_pose=False), vmap.thumbnail)
    results['files'] = write_report(config.out, results, vmap.places, pairs,
                                    f"{vmap.meta.encoder['name']} (live)")
    for name, plot in (('loop_closures.png', lambda p: plot_loop_closures(
            vmap.places, results['loop_closure']['judged'], track, p,
            f"Loop closures published by the node ({thresholds.dist_m:g} m)")),
                       ('latency.png', lambda p: plot_latency(latencies, p, 'End-to-end latency (live)'))):
        plot(os.path.join(config.out, name))
        results['files'].append(os.path.join(config.out, name))
    _print_summary(results)
    return 0


def _int_or_none(value: str | None) -> int | None:
    return None if value is None else int(value)


def _number(value: str | None) -> int | float | str | None:
    """A diagnostics value (always a string on the wire) as the number it holds."""
    if value is None:
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _closure_comparison(events: list[tuple[float, float]], outputs: list, track: Any, vmap: VprMap,
                        params: dict[str, Any], dist_m: float) -> dict[str, Any]:
    """What the node published against the unverified filter replayed on the same candidates."""
    from vpr_ros.evaluation.metrics import loop_closure_comparison

    config = config_from_flat(LoopClosureConfig, params)
    by_stamp = {round(p.stamp, 6): p.pose for p in vmap.places}
    incremental = bool(params['incremental'])

    def match_pose(t: float) -> Any:
        pose = by_stamp.get(round(t, 6))
        return pose if pose is not None or not incremental else track.at(t)

    frames = [(t, rows) for t, (_, rows) in outputs]
    pool = [(p.stamp, p.pose) for p in vmap.places]
    if incremental:
        pool += [(t, track.at(t)) for t, _ in frames]
    out = loop_closure_comparison(events, frames, track.at, match_pose, pool, config, dist_m)
    out['node_verification'] = bool(params['verification.enabled'])
    return out


def _print_summary(results: dict[str, Any]) -> None:
    r, rp, lc = results['retrieval'], results['live'], results['loop_closure']
    lat = r['timing_ms']['end_to_end_latency']
    print(f"live replay: {recall_text(r['recall'])}  ({r['answerable_queries']}/{r['queries']} answerable, "
          f"{r['thresholds']['dist_m']:g} m)")
    print(f"  frames: {rp['frames_published']} played, {rp['frames_with_output']} answered, "
          f"{rp['frames_without_output']} dropped; latency p50 {lat.get('p50', float('nan'))} ms, "
          f"p95 {lat.get('p95', float('nan'))} ms")
    print(f"  loop closures: {lc['events']} published, precision {lc['precision']}, recall {lc['recall']} "
          f"({lc['closable_queries']} closable queries)")
    cmp = lc.get('comparison')
    if cmp:
        for key in ('published_by_node', 'without_verification'):
            r = cmp[key]
            print(f"  {key.replace('_', ' ')}: {r['published']} closures, {r['correct']} correct "
                  f"(precision {r['precision']}), {r['loop_frames_closed']}/{cmp['loop_frames']} loop frames "
                  f"closed ({cmp['dist_m']:g} m)")
        th = cmp['score_threshold']
        print(f"  min_score for 100% precision (top eligible candidate per frame, unverified): "
              f"{th['min_score']} (recall there {th['recall_at_100_precision']})")


__all__ = ['ReplayConfig', 'Recording', 'Session', 'run', 'start_node', 'stop_node']
