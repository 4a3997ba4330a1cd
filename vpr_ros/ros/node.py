"""The localizer node: camera frames -> place ids, matched poses, loop closures for SLAM, diagnostics.

A thin shell around :class:`vpr_ros.session.IncrementalSession`: the per-frame flow (encode + search
with :class:`vpr_ros.localization.Localizer` as the offline ``vpr-ros evaluate`` does, keyframes, the
vocabulary bootstrap, verified loop decisions) that ``vpr-ros evaluate --loops`` runs too; the node
turns messages into its calls and its results into messages and diagnostics.
The image callback only drops the message into a keep-latest slot; the main thread (``main``; a
worker thread when the node is built in-process) processes the newest frame whenever it is free,
so no backlog ever builds and replaced frames are counted as dropped.
Loop-closure decisions (with geometric verification, the costly part) run in a second thread fed
in frame order, as SLAM systems run loop closing beside tracking: a verifying frame delays its
closure, not the place answers of the frames after it.
Topics, parameters and message layouts: ``docs/ros_interface.md``; parameters are the table in
:mod:`vpr_ros.ros.parameters`.

Run: ``ros2 run vpr_ros localizer --ros-args --params-file config/localize.yaml -p map_path:=...``
or ``python -m vpr_ros.localizer --ros-args ...``.
"""
from __future__ import annotations

import functools
import math
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections import Counter, deque
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped, Vector3Stamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Float64MultiArray, Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from vpr_ros import features as lf
from vpr_ros.encoders import DEFAULT_ENCODER, create_encoder
from vpr_ros.errors import ConfigError, ImageDecodeError, VprError
from vpr_ros.frames import NonFinitePose, Pose, msg_to_rgb
from vpr_ros.geometry import metric
from vpr_ros.geometry.pnp import PnPConfig
from vpr_ros.geometry.transforms import CameraMount
from vpr_ros.geometry.triangulation import TriangulationConfig
from vpr_ros.localization import Localizer, encoder_for_map
from vpr_ros.mapdb.integrity import map_checksum
from vpr_ros.mapdb.local_features import LocalFeatureStore
from vpr_ros.mapdb.store import VprMap
from vpr_ros.matching import verification
from vpr_ros.matching.confidence import CovarianceModel
from vpr_ros.matching.keyframes import KeyframeGate
from vpr_ros.matching.loop_closure import (
    FUNNEL_STAGES,
    LoopClosureConfig,
    LoopClosureFilter,
    LoopDecision,
)
from vpr_ros.matching.sequence import SequenceConfig
from vpr_ros.relocalization import AgreementConfig, AgreementGate, map_to_odom, odometry_at
from vpr_ros.ros import messages
from vpr_ros.ros.parameters import (
    CAMERA_INFO_INPUT,
    IMAGE_INPUT,
    NODE_NAME,
    ODOM_INPUT,
    PARAMETERS,
    RELOCALIZATION_OUTPUT,
    ParamSpec,
    cross_check,
    image_subscription_topic,
    output_frame,
)
from vpr_ros.ros.runtime import LatestSlot, RollingStats
from vpr_ros.session import IncrementalSession, LoopQuery, SessionFrame, under_lock
from vpr_ros.settings import config_from_flat
from vpr_ros.skips import SkipCounter
from vpr_ros.slam import constraints
from vpr_ros.sources.bag import PoseTrack
from vpr_ros.textio import load_yaml, short_repr
from vpr_ros.vocabulary import VocabularyBootstrap, load_vocabulary

# Outputs: reliable depth 10. A reliable publisher also serves BEST_EFFORT subscribers such as
# LIO-SAM's depth-1 loop-closure subscriber; the reverse pairing would deliver nothing.
OUTPUT_QOS = QoSProfile(depth=10)
LATCHED_QOS = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
NO_INPUT_WARN_S = 5.0
NO_INPUT_CHECK_S = 1.0        # steady-clock check of the input
NO_INPUT_LOG_PERIOD_S = 30.0  # a silent input is logged this often
LOOP_QUEUE = 10  # frames waiting for a loop-closure decision (1 s at 10 Hz); beyond it the oldest are dropped
ODOM_BUFFER = 500
ODOM_MAX_EXTRAPOLATION_S = 0.5


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    desc = ParameterDescriptor(name=spec.name, description=spec.description, read_only=spec.read_only)
    if spec.low is not None and not isinstance(spec.default, bool):
        if isinstance(spec.default, int):
            desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=1)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(spec.low),
                                                            to_value=float(spec.high), step=0.0)]
    return desc


class LocalizerNode(Node):
    """``frames_in_caller``: the caller runs :meth:`process_frames` (``main`` does, on the main
    thread, with the executor spinning on another); otherwise a worker thread is started."""

    def __init__(self, frames_in_caller: bool = False, managed: bool = False, **kwargs: Any) -> None:
        """``managed``: only declare the parameters; :class:`vpr_ros.ros.lifecycle.LifecycleLocalizerNode`
        runs the stages below (:meth:`_configure`, :meth:`_activate`, ...) from its transitions."""
        # Before Node.__init__: it creates the parameter services through create_service below.
        self._callback_errors: Counter[str] = Counter()
        self._reported_callback_errors: dict[str, int] = {}
        super().__init__(NODE_NAME, **kwargs)
        self._frames_in_caller = frames_in_caller
        self._stopping = threading.Event()
        self._slot: LatestSlot[tuple[Any, float, Any]] = LatestSlot()
        self._loop_slot: LatestSlot[tuple[LoopQuery | SessionFrame]] = LatestSlot(LOOP_QUEUE)
        self._io: dict[str, list] = {}  # what _activate created and _deactivate destroys
        self._parameter_callbacks: tuple[Any, Any] | None = None
        self._worker: threading.Thread | None = None
        self._loop_worker: threading.Thread | None = None
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        self._values: dict[str, Any] = self._read_parameters()
        self._loop_filter = LoopClosureFilter(self._loop_config(self._values))
        self._relocalization = AgreementGate(self._agreement_config(self._values))
        self._keyframes = KeyframeGate()
        self._apply_settings()
        if not managed:
            self._configure()
            self._activate()

    # ----- stages (a managed node runs them from its lifecycle transitions) ----------------------------
    def _read_parameters(self) -> dict[str, Any]:
        values = {s.name: self.get_parameter(s.name).value for s in PARAMETERS}
        problem = cross_check(values)
        if problem:
            raise ConfigError(problem)
        return values

    def _configure(self) -> None:
        """Load the map and everything that answers a frame; no topic, service or thread yet."""
        self._values = self._read_parameters()  # a managed node's parameters may have changed since
        self._apply_settings()
        self._map_lock = threading.Lock()
        self._bootstrap: VocabularyBootstrap | None = None
        self._vocabulary_source = 'the map'
        self._localizer = self._open_localizer()
        meta = self._localizer.map.meta
        self._frame, frame_warning = output_frame(self._values['map_frame'], meta.frame_id)
        if frame_warning:
            self.get_logger().warning(frame_warning)
        # An empty incremental map learns its frame from the odometry that gives its keyframe poses.
        self._frame_from_odom = not meta.frame_id and not len(self._localizer.map)
        self._odom_frame_checked = False
        self._camera: lf.CameraIntrinsics | None = None
        self._verifier = verification.for_map(self._localizer.map, self._verification_config(self._values))
        self._verification_note = '' if self._verifier else (
            f"unavailable: map {self._values['map_path']} has no local features "
            '(rebuild it with vpr-ros build-map)')
        if self._verification_note and self._values['verification.enabled']:
            gate = ''
            if self._values['loop_closure.min_score'] < 0:
                gate = ('; loop_closure.min_score is -1 (no score gate), so unverified closures are '
                        'published: set it from `vpr-ros evaluate --loops`')
            self.get_logger().warning(f'geometric verification {self._verification_note}{gate}')
        self._camera_mount = CameraMount.parse(self._values['metric.camera_to_body'])
        self._metric = metric.for_map(self._localizer.map, self._metric_config(self._values),
                                      functools.partial(under_lock, self._map_lock))
        self._map_path = self._values['map_path']
        self._map_checksum = map_checksum(self._map_path) if self._map_path else ''
        self._metric_status: Counter[str] = Counter()
        self._metric_ms = RollingStats()
        self._localize_service_ms = RollingStats()
        self._warm_up()
        runtimes = [f'{net} on {name}' for net, name in self._localizer.encoder.runtimes().items() if name]
        if runtimes:
            self.get_logger().info('encoder runtime: ' + ', '.join(runtimes))
        self._session = IncrementalSession(self._localizer, self._loop_filter, self._keyframes,
                                           self._verifier, self._bootstrap, grow=self._values['incremental'],
                                           map_lock=self._map_lock)
        self._bootstrap_frames_seen = 0
        self._map_dirty = False
        self._odom: deque[tuple[float, Pose]] = deque(maxlen=ODOM_BUFFER)
        self._odom_lock = threading.Lock()

        self._skips = SkipCounter(self.get_logger().warning)
        self._received = self._processed = self._rate_limited = self._loops_published = 0
        self._loop_frames_queued = self._loop_frames_decided = 0
        self._by_sequence = self._sequence_fallback = 0
        self._sequence_active = False
        self._sequence_ms = RollingStats()
        self._loop_status: Counter[str] = Counter()
        self._loop_funnel: Counter[str] = Counter()  # frames that passed each stage (FUNNEL_STAGES)
        self._last: tuple[int, float, float] | None = None  # place id, score, query stamp
        self._last_confidence = math.nan
        self._last_loop_status = ''
        self._input_rate = RollingStats()
        self._output_rate = RollingStats()
        self._latency = RollingStats()
        self._processing = RollingStats()
        self._localize = RollingStats()
        self._reported_skips: dict[str, int] = {}  # skip counts at the last diagnostics message
        self._verify_ms = RollingStats()
        self._constraints_published = 0
        self._metric_constraints = 0
        self._localize_requests = self._localize_failures = 0
        self._last_image_stamp: float | None = None
        self._relocalizations_published = 0
        self._tf_published = self._tf_without_odometry = 0
        self._odom_frame_id = 'odom'
        self._odom_topic = self._deprecated_input('odom_topic', ODOM_INPUT) or (
            ODOM_INPUT if self._values['use_odom'] else '')

    def _activate(self) -> None:
        """Publishers, services, subscriptions, the diagnostics timer and the worker threads."""
        before = self._entities()
        self._stopping = threading.Event()
        self._slot, self._loop_slot = LatestSlot(), LatestSlot(LOOP_QUEUE)
        self._pub_candidates = self.create_publisher(Float64MultiArray, '~/candidates', OUTPUT_QOS)
        self._pub_best = self.create_publisher(Vector3Stamped, '~/best_match', OUTPUT_QOS)
        self._pub_pose = self.create_publisher(PoseWithCovarianceStamped, '~/pose', OUTPUT_QOS)
        self._pub_loop = self.create_publisher(Float64MultiArray, '~/loop_closure', OUTPUT_QOS)
        self._pub_constraint = self.create_publisher(Float64MultiArray, '~/loop_closure_constraint',
                                                     OUTPUT_QOS)
        self._pub_map_markers = self.create_publisher(MarkerArray, '~/markers/map', LATCHED_QOS)
        self._pub_match_markers = self.create_publisher(MarkerArray, '~/markers/match', OUTPUT_QOS)
        self._pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', OUTPUT_QOS)
        # Latched: a listener starting after the one-shot pose (asking TRANSIENT_LOCAL) still gets it.
        self._pub_initialpose = self.create_publisher(PoseWithCovarianceStamped, RELOCALIZATION_OUTPUT,
                                                      LATCHED_QOS)
        self._pub_tf = self._tf_publisher()
        self._pub_place_candidates = self._pub_place_match = None
        if messages.PlaceCandidates is not None:  # the readable twins of ~/candidates and ~/best_match
            self._pub_place_candidates = self.create_publisher(messages.PlaceCandidates, '~/place_candidates',
                                                               OUTPUT_QOS)
            self._pub_place_match = self.create_publisher(messages.PlaceMatch, '~/place_match', OUTPUT_QOS)
        else:
            self.get_logger().info('vpr_ros_interfaces is not installed: ~/place_candidates and '
                                   '~/place_match are not published (make interfaces)')
        self.create_service(Trigger, '~/save_map', self._on_save_map)
        self.create_service(Trigger, '~/relocalize', self._on_relocalize)
        if messages.Localize is not None:
            self.create_service(messages.Localize, '~/localize', self._on_localize)
        else:
            self.get_logger().info('vpr_ros_interfaces has no Localize service: ~/localize is not offered '
                                   '(make interfaces)')
        self._publish_map_markers()

        topic, msg_type = self._image_topic()
        self._image_sub = self.create_subscription(
            msg_type, topic, self._on_image, qos_profile_sensor_data,
            qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self.create_subscription(CameraInfo, CAMERA_INFO_INPUT, self._on_camera_info, qos_profile_sensor_data)
        if self._odom_topic:
            self.create_subscription(Odometry, self._odom_topic, self._on_odom,
                                     qos_profile_sensor_data,
                                     qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self.create_timer(self._values['diagnostics_period'], self._publish_diagnostics,
                          on_error=self._publish_failure_diagnostics)
        # steady clock: with use_sim_time and no /clock the node clock stands still, and so would this
        self._started = time.monotonic()
        self._last_input_warning: float | None = None
        self.create_timer(NO_INPUT_CHECK_S, self._warn_if_no_input,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._parameter_callbacks = (
            self._guarded('parameters (validation)', self._validate_parameters, self._refused_parameters),
            self._guarded('parameters (apply)', self._on_parameters_set))
        self.add_on_set_parameters_callback(self._parameter_callbacks[0])
        self.add_post_set_parameters_callback(self._parameter_callbacks[1])
        after = self._entities()
        self._io = {kind: [e for e in after[kind] if all(e is not b for b in before[kind])] for kind in after}

        if not self._frames_in_caller:
            self._worker = threading.Thread(target=self.process_frames, name='vpr_localizer_worker',
                                            daemon=True)
            self._worker.start()
        self._loop_worker = threading.Thread(target=self._work_loops, name='vpr_loop_closure', daemon=True)
        self._loop_worker.start()
        vmap = self._localizer.map
        self.get_logger().info(
            f'ready: {len(vmap)} places, encoder {self._localizer.encoder.name} (dim {vmap.meta.dim}), '
            f"top_k {self._localizer.top_k}, listening on {self._image_sub.topic_name} ({msg_type.__name__})"
            + (', incremental' if self._values['incremental'] else '') + f', outputs in frame {self._frame}'
            + (f", sequence length {self._values['sequence.length']}"
               if self._values['sequence.length'] else ''))

    def _entities(self) -> dict[str, list]:
        return {'subscription': list(self.subscriptions), 'timer': list(self.timers),
                'service': list(self.services), 'publisher': list(self.publishers)}

    def _deactivate(self) -> None:
        """Undo :meth:`_activate`: inputs first, then the threads (their frame finishes), then the outputs."""
        destroy = {'subscription': self.destroy_subscription, 'timer': self.destroy_timer,
                   'service': self.destroy_service, 'publisher': self.destroy_publisher}
        for kind in ('subscription', 'timer'):
            for entity in self._io.get(kind, []):
                destroy[kind](entity)
        if self._parameter_callbacks is not None:
            self.remove_on_set_parameters_callback(self._parameter_callbacks[0])
            self.remove_post_set_parameters_callback(self._parameter_callbacks[1])
            self._parameter_callbacks = None
        self._stop_workers()
        for kind in ('service', 'publisher'):
            for entity in self._io.get(kind, []):
                destroy[kind](entity)
        self._io = {}

    def request_stop(self) -> None:
        """Ask the frame and loop threads to finish their current item and return (safe from a signal
        handler: it only sets an event)."""
        self._stopping.set()

    def _stop_workers(self) -> None:
        self._stopping.set()
        self._slot.close()
        self._loop_slot.close()
        for worker in (self._worker, self._loop_worker):
            if worker is not None and worker is not threading.current_thread():
                worker.join(timeout=30.0)
        self._worker = self._loop_worker = None

    def _release(self) -> None:
        """Undo :meth:`_configure`: drop the map, the encoder and the solvers."""
        self._localizer = self._metric = self._verifier = self._bootstrap = None  # type: ignore[assignment]
        self._session = None  # type: ignore[assignment]

    # ----- callbacks never leave the node deaf ----------------------------------------------------
    # Every subscription, service and timer of this node (rclpy's own too: the parameter services, the
    # /clock subscription of use_sim_time) is created through these, so a callback that raises is
    # logged and counted (diagnostics: callback_errors.<kind>) instead of killing the executor
    # thread, after which the node would answer nothing and publish nothing.
    def create_subscription(self, msg_type: Any, topic: str, callback: Any, *args: Any, **kwargs: Any) -> Any:
        kind = f'subscription {self.resolve_topic_name(topic)}'
        return super().create_subscription(msg_type, topic, self._guarded(kind, callback), *args, **kwargs)

    def create_service(self, srv_type: Any, srv_name: str, callback: Any, **kwargs: Any) -> Any:
        kind = f'service {self.resolve_service_name(srv_name)}'
        return super().create_service(srv_type, srv_name, self._guarded(kind, callback, _failed_reply),
                                      **kwargs)

    def create_timer(self, timer_period_sec: float, callback: Any, *args: Any, on_error: Any = None,
                     **kwargs: Any) -> Any:
        name = getattr(callback, '__name__', 'timer').lstrip('_')
        return super().create_timer(timer_period_sec, self._guarded(f'timer {name}', callback, on_error),
                                    *args, **kwargs)

    def _guarded(self, kind: str, callback: Any, on_error: Any = None) -> Any:
        """``callback`` that never raises: a failure is counted under ``kind``, logged (the first of
        each kind with its traceback's last frame), and answered by ``on_error(exc, *args)`` if given."""
        @functools.wraps(callback)
        def guarded(*args: Any) -> Any:
            try:
                return callback(*args)
            except Exception as exc:
                self.callback_failed(kind, exc)
                return on_error(exc, *args) if on_error is not None else None
        return guarded

    def callback_failed(self, kind: str, exc: BaseException, message: str | None = None) -> None:
        """Count a failure of a callback; log ``message`` if given, else the first failure of each kind."""
        self._callback_errors[kind] += 1
        if message is not None:
            self.get_logger().error(message)
        elif self._callback_errors[kind] == 1:
            where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
            at = f' at {os.path.basename(where[0].filename)}:{where[0].lineno}' if where else ''
            self.get_logger().error(f'{kind} failed: {type(exc).__name__}: {_first_line(exc)}{at} (the node '
                                    'goes on; further failures of this kind are counted in /diagnostics)')

    @staticmethod
    def _refused_parameters(exc: BaseException, params: Any) -> SetParametersResult:
        return SetParametersResult(successful=False, reason=f'{type(exc).__name__}: {_first_line(exc)}')

    def _publish_failure_diagnostics(self, exc: BaseException, *args: Any) -> None:
        """The diagnostics callback failed: still publish a status, ERROR, saying so."""
        values = {'frames_received': self._received, 'frames_processed': self._processed,
                  'callback_errors': sum(self._callback_errors.values()),
                  **{f'callback_errors.{k}': n for k, n in sorted(self._callback_errors.items())}}
        status = DiagnosticStatus(level=DiagnosticStatus.ERROR, name=f'{self.get_name()}: localization',
                                  message=f'diagnostics failed: {type(exc).__name__}: {_first_line(exc)}',
                                  hardware_id='vpr_ros',
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        self._pub_diag.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                               status=[status]))

    def _warn_if_no_input(self) -> None:
        """Say in the log, every NO_INPUT_LOG_PERIOD_S, that no image arrives: where the node listens,
        who publishes there, which image topics exist, and how to remap the input."""
        now = time.monotonic()
        age = self._input_rate.last_event_age(now)
        silent = now - self._started if age is None else age
        if silent < NO_INPUT_WARN_S:
            self._last_input_warning = None
            return
        if self._last_input_warning is not None and now - self._last_input_warning < NO_INPUT_LOG_PERIOD_S:
            return
        self._last_input_warning = now
        topic = self._image_sub.topic_name
        if age is not None:
            self.get_logger().warning(f'no image on {topic} for {age:.0f} s (images stopped arriving)')
            return
        wanted = 'sensor_msgs/msg/' + self._image_sub.msg_type.__name__
        others = sorted(name for name, types in self.get_topic_names_and_types()
                        if wanted in types and name != topic)
        self.get_logger().warning(
            f'no image received on {topic} ({wanted}) in {silent:.0f} s; {self.count_publishers(topic)} '
            'publisher(s) on it'
            + (f"; {wanted} topics on the graph: {', '.join(others[:5])}" if others else '')
            + ". Remap the node's input to the camera: --ros-args -r image:=/camera/image_raw (launch: "
            "remappings=[('image', '/camera/image_raw')])")

    # ----- setup ----------------------------------------------------------------------------------
    def _open_localizer(self) -> Localizer:
        v = self._values
        overrides = load_yaml(v['encoder_config'], 'encoder_config') if v['encoder_config'] else {}
        if not isinstance(overrides, dict):
            raise ConfigError("encoder_config must be a mapping such as '{threads: 2}', "
                              f'got {short_repr(overrides)}')
        for key in ('threads', 'runtime', 'device'):
            if v[key]:
                overrides[key] = v[key]
        if v['map_path']:
            if v['vocabulary.path']:
                raise ConfigError("vocabulary.path is for an empty incremental map (map_path ''); the map at "
                                  f"{v['map_path']} has its own")
            vmap = VprMap.load(v['map_path'], verify=v['map_verify'])
            return Localizer(vmap, encoder_for_map(vmap, overrides, v['encoder'] or None), v['top_k'],
                             self._sequence_config(v))
        if not v['incremental']:
            raise ConfigError('parameter map_path is required (a map directory from vpr-ros build-map)')
        encoder = create_encoder(v['encoder'] or DEFAULT_ENCODER, overrides)
        build = {'description': f'grown online by the {NODE_NAME} node'}
        if v['vocabulary.path'] and not encoder.requires_fit:
            self.get_logger().warning(f'encoder {encoder.name!r} fits nothing on map images: '
                                      'vocabulary.path is ignored')
        elif v['vocabulary.path']:
            vocab = load_vocabulary(encoder, v['vocabulary.path'])
            build['vocabulary'] = self._vocabulary_source = vocab.source
            self.get_logger().info(f'{encoder.name} vocabulary from {vocab.source}')
        vmap = VprMap.empty(encoder.identity(), encoder_state=encoder.get_state(), build=build)
        features = config_from_flat(lf.LocalFeatureConfig, v)
        try:
            features.validate()
        except ConfigError as exc:
            raise ConfigError(f'local_features: {exc}') from exc
        vmap.local_features = LocalFeatureStore(features)
        localizer = Localizer(vmap, encoder, v['top_k'], self._sequence_config(v))
        if not encoder.is_fitted:
            frames = v['vocabulary.bootstrap_frames']
            self._bootstrap = VocabularyBootstrap(localizer, frames)
            build['vocabulary'] = self._vocabulary_source = f'bootstrapped from the first {frames} keyframes'
            vmap.meta.build.update(build)
            self.get_logger().info(self._bootstrap.status())
        return localizer

    def _warm_up(self) -> None:
        """One throw-away encode, so the first camera frame does not pay for lazy initialisation."""
        if not self._localizer.encoder.is_fitted:
            return  # bootstrapping: nothing can be encoded before the vocabulary is fitted
        h, w = self._localizer.encoder.input_size or (240, 320)
        self._localizer.describe(np.zeros((h, w, 3), np.uint8))

    def _deprecated_input(self, parameter: str, relative: str) -> str:
        name = self._values[parameter]
        if name:
            self.get_logger().warning(
                f'parameter {parameter} is deprecated: remap the relative input instead '
                f'(--ros-args -r {relative}:={name}; launch: remappings)')
        return name

    def _image_topic(self) -> tuple[str, type]:
        """The relative ``image`` (resolved: namespace + remapping), or the deprecated image_topic;
        compressed transport subscribes to ``<that>/compressed`` as image_transport does."""
        transport = self._values['image_transport']
        base = self._deprecated_input('image_topic', IMAGE_INPUT) or self.resolve_topic_name(IMAGE_INPUT)
        return (image_subscription_topic(base, transport),
                CompressedImage if transport == 'compressed' else Image)

    # ----- parameters ---------------------------------------------------------------------------
    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        values = dict(self._values)
        values.update({p.name: p.value for p in params if p.name in values})
        problem = cross_check(values)
        if problem is None:
            try:
                self._loop_config(values).validate()
                self._sequence_config(values).validate()
                self._verification_config(values).validate()
                self._metric_config(values).validate()
                self._agreement_config(values).validate()
            except ConfigError as exc:
                problem = str(exc)
        return SetParametersResult(successful=problem is None, reason=problem or '')

    def _on_parameters_set(self, params: list[Parameter]) -> None:
        self._values.update({p.name: p.value for p in params if p.name in self._values})
        self._apply_settings()
        self._localizer.top_k = self._values['top_k']
        self._localizer.encoder.config['threads'] = self._values['threads']
        with self._map_lock:  # the worker reads the sequence state inside search()
            self._localizer.configure_sequence(self._sequence_config(self._values))

    # One generic conversion from the flat parameter names (vpr_ros.settings); kept as methods so a test
    # or a campaign can fail one of them.
    @staticmethod
    def _loop_config(v: dict[str, Any]) -> LoopClosureConfig:
        return config_from_flat(LoopClosureConfig, v)

    @staticmethod
    def _agreement_config(v: dict[str, Any]) -> AgreementConfig:
        return config_from_flat(AgreementConfig, v)

    @staticmethod
    def _sequence_config(v: dict[str, Any]) -> SequenceConfig:
        return config_from_flat(SequenceConfig, v)

    @staticmethod
    def _verification_config(v: dict[str, Any]) -> verification.VerificationConfig:
        return config_from_flat(verification.VerificationConfig, v)

    def _metric_config(self, v: dict[str, Any]) -> metric.MetricConfig:
        """``metric.threshold_px`` is the PnP and the triangulation threshold; the mount (a read-only
        parameter) is parsed once at configure."""
        pnp = config_from_flat(PnPConfig, v, 'metric')
        return config_from_flat(
            metric.MetricConfig, v, pnp=pnp,
            triangulation=TriangulationConfig(max_reprojection_px=pnp.threshold_px),
            mount=getattr(self, '_camera_mount', None) or CameraMount.parse(v['metric.camera_to_body']))

    def _apply_settings(self) -> None:
        """Push parameter values into what the worker reads (single attribute assignments, no lock)."""
        v = self._values
        self._covariance = config_from_flat(CovarianceModel, v)
        self._loop_filter.config = self._loop_config(v)
        if getattr(self, '_relocalization', None) is not None:
            self._relocalization.config = self._agreement_config(v)
        if getattr(self, '_verifier', None) is not None:
            self._verifier.config = self._verification_config(v)
        if getattr(self, '_metric', None) is not None:
            self._metric.reconfigure(self._metric_config(v))
        self._keyframes.min_interval = v['keyframe.min_interval']
        self._keyframes.min_distance = v['keyframe.min_distance']
        self._keyframes.max_similarity = v['keyframe.max_similarity']

    # ----- input ----------------------------------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage) -> None:
        self._received += 1
        self._input_rate.tick()
        self._slot.put((msg, time.perf_counter(), self.get_clock().now().to_msg()))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            camera = lf.camera_from_msg_fields(msg.k, msg.d, msg.distortion_model, msg.width, msg.height)
        except ConfigError as exc:
            self._skips.skip('bad camera_info', str(exc))
            return
        if camera is not None and camera != self._camera:
            self._camera = camera  # one attribute assignment: the worker reads it without a lock
            store = self._localizer.map.local_features
            if store is not None and store.camera is None and not self._values['map_path']:
                store.camera = camera  # a map grown from empty records the camera it was grown with

    def _on_odom(self, msg: Odometry) -> None:
        if not self._odom_frame_checked and msg.header.frame_id:
            self._check_odom_frame(msg)
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        try:
            pose = Pose.from_values((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))  # a zero quaternion: position only
        except NonFinitePose as exc:
            self._skips.skip('non-finite odometry pose', str(exc))
            return
        if msg.header.frame_id:
            self._odom_frame_id = msg.header.frame_id
        with self._odom_lock:
            self._odom.append((messages.to_sec(msg.header.stamp), pose))

    def _check_odom_frame(self, msg: Odometry) -> None:
        self._odom_frame_checked = True
        known = self._localizer.map.meta.frame_id
        if not self._frame_from_odom:
            if known and known != msg.header.frame_id and self._values['incremental']:
                self.get_logger().warning(f'odometry is in {msg.header.frame_id!r} but the map poses are in '
                                          f'{known!r}: keyframes added this run get poses of another frame')
            return
        with self._map_lock:
            meta = self._localizer.map.meta
            meta.frame_id, meta.child_frame_id = msg.header.frame_id, msg.child_frame_id
        if not self._values['map_frame']:
            self._frame = msg.header.frame_id
        self.get_logger().info(f'map frame from odometry: poses of {msg.child_frame_id or "?"} in '
                               f'{msg.header.frame_id}; outputs stamped {self._frame}')

    def _odom_pose(self, t: float) -> Pose | None:
        with self._odom_lock:
            odom = list(self._odom)
        if not odom:
            return None
        pose = PoseTrack([s for s, _ in odom], [p for _, p in odom]).at(t)
        last_t, last_pose = max(odom, key=lambda sp: sp[0])
        if pose is None and 0 <= t - last_t <= ODOM_MAX_EXTRAPOLATION_S:
            pose = last_pose  # odometry lags the camera a little
        return pose

    # ----- the workers --------------------------------------------------------------------------
    def process_frames(self) -> None:
        """Process camera frames until the node is destroyed or its context shuts down."""
        self._serve(self._slot, self._process, 'processing error')

    def _work_loops(self) -> None:
        self._serve(self._loop_slot, self._close_loop, 'loop-closure error')

    def _serve(self, slot: LatestSlot, handle: Any, failure: str) -> None:
        while not self._stopping.is_set() and self.context.ok():
            item = slot.take(timeout=0.5)
            if item is None:
                continue
            try:
                handle(*item)
            except ImageDecodeError as exc:
                self._skips.skip(exc.kind, str(exc))
            except Exception as exc:  # the node must survive any single frame
                if self._stopping.is_set():
                    return
                self._skips.skip(f'{failure} ({type(exc).__name__})', str(exc))

    def _process(self, msg: Image | CompressedImage, t_received: float, receipt_stamp: Any) -> None:
        stamp = msg.header.stamp
        if stamp.sec == 0 and stamp.nanosec == 0:
            stamp = receipt_stamp  # an unstamped camera: use the arrival time on the node clock
        t = messages.to_sec(stamp)
        max_rate = self._values['max_rate_hz']
        last_t = self._last_image_stamp
        if max_rate > 0 and last_t is not None and 0 <= t - last_t < 1.0 / max_rate:
            self._rate_limited += 1
            return
        t_start = time.perf_counter()
        rgb = msg_to_rgb(msg, self._values['max_image_pixels'])
        if self._session.bootstrapping:
            self._bootstrap_frames_seen += 1
        pose = self._odom_pose(t) if self._odom_topic else None  # keyframe poses, distance-spaced sequences
        frame = self._session.localize(t, rgb, pose, f'{self.get_name()}:{t:.6f}')
        self._last_image_stamp = t
        if frame.added:
            self._map_dirty = True
        loc = frame.localization
        if loc is None:  # the vocabulary is bootstrapping: nothing to answer
            if frame.added:
                self.get_logger().info(f'{self._bootstrap.status()} in {self._bootstrap.fit_seconds:.1f} s; '
                                       f'{len(frame.added)} places, answering from now on')
                self._decide_bootstrap_keyframes(frame.bootstrap_queries)
            return
        self._count_sequence(loc)
        solved = self._metric_pose(loc.matches, frame.features, self._camera)
        loop = self._values['loop_closure.enabled']
        if loop:  # pending before the answer goes out: whoever saw the answer sees its loop work pending
            self._loop_frames_queued += 1
        try:
            self._publish(stamp, t, loc.matches, loc.confidence, solved)
            self._after_solve(stamp, t, loc.matches, solved, loc.confidence)
        finally:  # the frame was localised: its loop decision is made even if an output failed
            if loop:
                self._loop_slot.put((frame,))
        t_end = time.perf_counter()
        self._processed += 1
        self._output_rate.tick()
        self._latency.add((t_end - t_received) * 1e3)
        self._processing.add((t_end - t_start) * 1e3)
        self._localize.add(loc.encode_ms + loc.search_ms)

    def _after_solve(self, stamp: Any, t: float, matches: list, solved: metric.MetricPose | None,
                     confidence: float = math.nan) -> None:
        """Relocalisation and map -> odom of one frame; a failure of either is a counted skip that leaves
        the frame's other outputs and the next frames alone."""
        relocalize = functools.partial(self._relocalize_frame, confidence=confidence)
        for kind, step in (('relocalization', relocalize), ('map -> odom', self._broadcast_tf)):
            try:
                step(stamp, t, matches, solved)
            except Exception as exc:
                self._skips.skip(f'{kind} error ({type(exc).__name__})', str(exc))

    def _odometry_at(self, t: float) -> np.ndarray | None:
        """``T_odom_body`` at image time ``t`` (within tf.odom_tolerance), None without odometry then."""
        with self._odom_lock:
            odom = list(self._odom)
        return odometry_at([s for s, _ in odom], [p for _, p in odom], t, self._values['tf.odom_tolerance'])

    def _relocalize_frame(self, stamp: Any, t: float, matches: list, solved: metric.MetricPose | None,
                          confidence: float = math.nan) -> None:
        """``confidence``: the frame's calibrated confidence; NaN (uncalibrated map) = from the score."""
        gate = self._relocalization
        if not self._values['relocalization.enabled'] or not gate.armed:
            return
        T = solved.T_map_body if solved is not None and solved.good else None
        if T is not None and self._odom_topic:  # with odometry the robot may move: map -> odom must agree
            T_odom_body = self._odometry_at(t)
            T = map_to_odom(T, T_odom_body) if T_odom_body is not None else None
        if not math.isfinite(confidence):
            confidence = self._covariance.score_level(matches[0].score) if matches else 0.0
        if not gate.offer(T, confidence):
            return
        header = Header(stamp=stamp, frame_id=self._frame)
        msg = messages.pose_msg(header, matches[0], self._covariance, metric=solved)
        self._pub_initialpose.publish(msg)
        self._relocalizations_published += 1
        p = msg.pose.pose.position
        self.get_logger().info(
            f'relocalised: place {matches[0].place_id}, ({p.x:.2f}, {p.y:.2f}, {p.z:.2f}) in {self._frame} '
            f'after {gate.config.frames} agreeing frames, published on {self._pub_initialpose.topic_name}; '
            'quiet until ~/relocalize')

    def _on_relocalize(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._relocalization.rearm()
        response.success = True
        response.message = (f'armed: the next {self._relocalization.config.frames} agreeing metric poses are '
                            f'published on {self._pub_initialpose.topic_name}')
        if not self._values['relocalization.enabled']:
            response.message += ' once relocalization.enabled is true'
        return response

    def _tf_publisher(self) -> Any:
        if not self._values['tf.publish_map_to_odom']:
            return None
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError as exc:
            raise ConfigError('tf.publish_map_to_odom needs the tf2_msgs Python package (source a ROS 2 '
                              'installation; with the PyPI wheels `make interfaces` builds it)') from exc
        return self.create_publisher(TFMessage, '/tf', QoSProfile(depth=100))  # tf2_ros's broadcaster QoS

    def _broadcast_tf(self, stamp: Any, t: float, matches: list, solved: metric.MetricPose | None) -> None:
        if self._pub_tf is None or solved is None or not solved.good:
            return
        T_odom_body = self._odometry_at(t)
        if T_odom_body is None:
            self._tf_without_odometry += 1
            return
        from tf2_msgs.msg import TFMessage

        msg = TransformStamped()
        msg.header.stamp = messages.later(stamp, self._values['tf.transform_tolerance'])
        msg.header.frame_id, msg.child_frame_id = self._frame, self._odom_frame_id
        messages.transform_to_msg(map_to_odom(solved.T_map_body, T_odom_body), msg.transform)
        self._pub_tf.publish(TFMessage(transforms=[msg]))
        self._tf_published += 1

    def _count_sequence(self, loc: Any) -> None:
        length = self._localizer.sequence_config.length
        if not length:
            return
        if loc.sequence_used:
            self._by_sequence += 1
            self._sequence_ms.add(loc.sequence_ms)
        else:
            self._sequence_fallback += 1
        if loc.sequence_used != self._sequence_active:
            self._sequence_active = loc.sequence_used
            self.get_logger().info(
                f'sequence matching active ({length} frames of history)' if loc.sequence_used else
                f'sequence history restarted: single-frame answers until {length} frames are seen')

    def _metric_pose(self, matches: list, features: Any, camera: lf.CameraIntrinsics | None,
                     count: bool = True) -> metric.MetricPose | None:
        """The metric solve over the frame's candidates; None when it is off or impossible (no features)."""
        if self._metric is None or not self._values['metric.enabled'] or not matches:
            return None
        if camera is None and self._metric.map_camera is None:
            solved = metric.MetricPose('no_intrinsics')  # known before extracting the frame's features
        else:
            query = features()
            if query is None:
                return None
            solved = self._metric.localize(query, [m.place_id for m in matches], camera)
        if count:
            self._metric_status[solved.status] += 1
            self._metric_ms.add(solved.ms)
        return solved

    def _close_loop(self, query: LoopQuery | SessionFrame) -> None:
        """The loop-closure stage of one frame (frames come in order): decide, verify, publish."""
        try:
            outcome = self._session.decide_loop(query, self._camera, self._values['verification.enabled'])
            for ms in outcome.verify_ms:
                self._verify_ms.add(ms)
            decision = outcome.decision
            self._loop_status[decision.status.value] += 1
            self._loop_funnel.update(decision.stages)
            self._last_loop_status = decision.status.value
            # earlier frames of the chain this frame's retrieval streak confirms (held frames, published with
            # their own features) go first, then the frame itself
            for closure, features in outcome.closures:
                if closure is not decision:
                    self._loop_funnel.update(FUNNEL_STAGES[2:])  # it was counted as separated and verified
                self._publish_loop(closure.t_query, closure, features)
        finally:  # decided last: a diagnostics message with nothing pending holds this frame's counts
            self._loop_frames_decided += 1

    def _decide_bootstrap_keyframes(self, queries: tuple[LoopQuery, ...]) -> None:
        """The loop-closure decisions of the bootstrap keyframes, once the vocabulary exists
        (VocabularyBootstrap.loop_queries, handed out by the session at the fit). Made here in the image
        thread, in time order, before the next frame is localised: the loop thread has had nothing to
        decide before the fit, and its queue holds fewer frames than this."""
        if not self._values['loop_closure.enabled']:
            return
        for query in queries:
            self._loop_frames_queued += 1
            self._close_loop(query)

    def _local_features_of(self, rgb: np.ndarray) -> lf.LocalFeatures | None:
        """The frame's local features in the map's format; None when the map keeps none."""
        return self._session.local_features_of(rgb)

    def _publish(self, stamp: Any, t: float, matches: list, confidence: float = math.nan,
                 solved: metric.MetricPose | None = None) -> None:
        header = Header(stamp=stamp, frame_id=self._frame)
        self._pub_candidates.publish(messages.candidates_msg(t, matches))
        if self._pub_place_candidates is not None:
            self._pub_place_candidates.publish(messages.place_candidates_msg(header, matches, confidence))
            if matches:
                self._pub_place_match.publish(
                    messages.place_match_msg(header, matches[0], confidence, solved))
        if matches:
            best = matches[0]
            self._last = (best.place_id, best.score, t)
            self._last_confidence = confidence
            self._pub_best.publish(messages.best_match_msg(header, best))
            has_pose = best.pose is not None or (solved is not None and solved.good)
            if has_pose and best.score >= self._values['pose.min_score']:
                self._pub_pose.publish(messages.pose_msg(header, best, self._covariance, confidence, solved))
            self._pub_match_markers.publish(messages.match_markers(header, matches, self._covariance))

    def _publish_loop(self, t: float, decision: LoopDecision, features: Any) -> None:
        self._pub_loop.publish(messages.loop_closure_msg(t, decision.t_match))
        self._loops_published += 1
        v = decision.verification
        with self._map_lock:
            match = self._localizer.map.match(decision.place_id, decision.score)
        solved = self._metric_pose([match], features, self._camera, count=False)
        kind = constraints.published_kind(v, solved)  # the pose graph's choice too (evaluate --pose-graph)
        if kind == constraints.METRIC_KIND and solved is not None:  # metres, the solve's covariance
            R, t_rel, cov = solved.constraint()
            self._pub_constraint.publish(messages.loop_constraint_msg(
                t, decision.t_match, decision.place_id, R, t_rel, solved.inliers, solved.inlier_ratio, cov))
            self._constraints_published += 1
            self._metric_constraints += 1
        elif kind == constraints.DIRECTION_KIND and v is not None:
            self._pub_constraint.publish(messages.loop_constraint_msg(
                t, decision.t_match, decision.place_id, v.rotation, v.translation, v.inliers, v.inlier_ratio))
            self._constraints_published += 1
        checked = f', {v.inliers} inliers ({v.model})' if v is not None else ''
        self.get_logger().info(f'loop closure: {t:.3f} s -> place {decision.place_id} at '
                               f'{decision.t_match:.3f} s (score {decision.score:.3f}{checked})')

    # ----- map ------------------------------------------------------------------------------------
    def _publish_map_markers(self) -> None:
        with self._map_lock:
            places = list(self._localizer.map.places)
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self._frame)
        self._pub_map_markers.publish(messages.map_markers(places, header))

    def _on_save_map(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        path = self._values['save_map_path'] or self._values['map_path']
        if not path:
            response.success, response.message = False, 'set save_map_path (map_path is empty)'
            return response
        try:
            with self._map_lock:
                self._localizer.map.save(path)
                count = len(self._localizer.map)
            self._map_path, self._map_checksum = path, map_checksum(path)
        except Exception as exc:  # a full disk (sqlite3.OperationalError), a refused target: a reply
            response.success = False
            response.message = f'saving the map to {path} failed: {type(exc).__name__}: {_first_line(exc)}'
            self.callback_failed(f"service {self.resolve_service_name('~/save_map')}", exc, response.message)
            return response
        response.success, response.message = True, f'saved {count} places to {path}'
        self.get_logger().info(response.message)
        return response

    # ----- diagnostics ----------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        if self._map_dirty:
            self._map_dirty = False
            self._publish_map_markers()
        skips = self._skips.as_dict()
        period = sorted(k for k, n in skips.items() if n > self._reported_skips.get(k, 0))  # kinds seen since
        self._reported_skips = skips
        age = self._input_rate.last_event_age()
        errors = [k for k in period if k.startswith(('processing error', 'loop-closure error'))]
        failed = sorted(k for k, n in self._callback_errors.items()
                        if n > self._reported_callback_errors.get(k, 0))
        self._reported_callback_errors = dict(self._callback_errors)
        bootstrapping = self._bootstrap is not None and not self._bootstrap.done
        if failed:  # whatever else holds: a callback that fails is an error
            level, message = DiagnosticStatus.ERROR, f"callbacks failed: {', '.join(failed)}"
        elif age is None:
            level, message = DiagnosticStatus.WARN, f'waiting for images on {self._image_sub.topic_name}'
        elif bootstrapping:
            level, message = DiagnosticStatus.WARN, self._bootstrap.status()
        elif age > NO_INPUT_WARN_S:
            level, message = DiagnosticStatus.WARN, f'no image for {age:.0f} s'
        elif errors:
            level, message = DiagnosticStatus.ERROR, f"frames failed: {', '.join(errors)}"
        elif period:
            level, message = DiagnosticStatus.WARN, f"skipping bad frames: {', '.join(period)}"
        else:
            level, message = DiagnosticStatus.OK, 'localizing'
        last_id, last_score, last_t = self._last or (-1, math.nan, math.nan)
        values = {
            'input_rate_hz': f'{self._input_rate.rate():.2f}',
            'processed_rate_hz': f'{self._output_rate.rate():.2f}',
            'latency_p50_ms': f'{self._latency.percentile(50):.1f}',
            'latency_p95_ms': f'{self._latency.percentile(95):.1f}',
            'processing_p50_ms': f'{self._processing.percentile(50):.1f}',
            'processing_p95_ms': f'{self._processing.percentile(95):.1f}',
            'localize_p50_ms': f'{self._localize.percentile(50):.1f}',
            'frames_received': self._received, 'frames_processed': self._processed,
            'frames_dropped': self._slot.dropped, 'frames_rate_limited': self._rate_limited,
            # frames waiting for (or in) the loop-closure stage; 0 when every closure is out
            'loop_closure.frames_pending': (self._loop_frames_queued - self._loop_frames_decided
                                            - self._loop_slot.dropped),
            'loop_closure.frames_dropped': self._loop_slot.dropped,
            'skipped_bad_frames': self._skips.total,
            'callback_errors': sum(self._callback_errors.values()),
            **{f'callback_errors.{kind}': n for kind, n in sorted(self._callback_errors.items())},
            **{f'skipped.{kind}': n for kind, n in sorted(skips.items())},
            'map_places': len(self._localizer.map), 'places_added': len(self._session.places),
            **{f'runtime.{k}': v for k, v in self._localizer.encoder.runtimes().items()},
            'last_place_id': last_id, 'last_score': f'{last_score:.4f}', 'last_query_stamp': f'{last_t:.6f}',
            'last_confidence': f'{self._last_confidence:.4f}', 'confidence': self._confidence_state(),
            'sequence.length': self._localizer.sequence_config.length,
            'sequence.frames_matched': self._by_sequence,
            'sequence.frames_single_frame_fallback': self._sequence_fallback,
            'sequence_p50_ms': f'{self._sequence_ms.percentile(50):.2f}',
            'loop_closures_published': self._loops_published, 'last_loop_status': self._last_loop_status,
            'loop_constraints_published': self._constraints_published,
            'loop_constraints_metric': self._metric_constraints,
            'relocalization': self._relocalization_state(),
            'relocalizations_published': self._relocalizations_published,
            'tf.map_to_odom_published': self._tf_published,
            'tf.frames_without_odometry': self._tf_without_odometry,
            'metric': self._metric_state(),
            'metric_p50_ms': f'{self._metric_ms.percentile(50):.1f}',
            **{f'metric_status.{k}': n for k, n in sorted(self._metric_status.items())},
            'localize_requests': self._localize_requests, 'localize_failures': self._localize_failures,
            'localize_service_p50_ms': f'{self._localize_service_ms.percentile(50):.1f}',
            'verification': self._verification_state(),
            'verification_p50_ms': f'{self._verify_ms.percentile(50):.1f}',
            'camera_intrinsics': 'known' if self._camera is not None else 'unknown',
            'vocabulary': self._bootstrap.status() if bootstrapping else self._vocabulary_source,
            'bootstrap_keyframes': self._bootstrap.collected if self._bootstrap else 0,
            'frames_bootstrapping': self._bootstrap_frames_seen,
            **{f'loop_status.{k}': n for k, n in sorted(self._loop_status.items())},
            # the recall funnel of the decided frames: how many got past each stage, in order
            **{f'loop_funnel.{k}': self._loop_funnel[k] for k in FUNNEL_STAGES},
        }
        status = DiagnosticStatus(level=level, name=f'{self.get_name()}: localization', message=message,
                                  hardware_id=f'vpr_ros/{self._localizer.encoder.name}',
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        self._pub_diag.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                               status=[status]))

    def _relocalization_state(self) -> str:
        if not self._values['relocalization.enabled']:
            return 'disabled'
        gate = self._relocalization
        return f'armed ({gate.streak}/{gate.config.frames} agreeing)' if gate.armed else 'published; quiet'

    def _confidence_state(self) -> str:
        """What the published confidence means (vpr_ros.matching.confidence)."""
        model = self._localizer.fitted_confidence
        if model is None:
            return 'uncalibrated (map too small or without poses): NaN, covariance from the score'
        return (f'P(top-1 within {model.dist_m:g} m), calibrated on {model.examples} map places '
                f'({model.exclude_s:g} s time neighbours excluded)')

    def _metric_state(self) -> str:
        if not self._values['metric.enabled']:
            return 'disabled'
        if self._metric is None:
            return 'unavailable: the map has no local features'
        if self._camera is None and self._metric.map_camera is None:
            return 'waiting for camera_info (the map stores no intrinsics)'
        return 'on'

    # ----- ~/localize -----------------------------------------------------------------------------
    def _on_localize(self, request: Any, response: Any) -> Any:
        """One image -> place, metric pose, confidence, map identity. Never raises: a failure is an error
        reply (success false) and a counted skip; the frame stream is not affected."""
        t0 = time.perf_counter()
        self._localize_requests += 1
        response.map_path, response.map_checksum = self._map_path, self._map_checksum
        response.place_id = -1
        try:
            self._answer_localize(request, response)
        except Exception as exc:  # a bad request must never take the service or the node down
            kind = exc.kind if isinstance(exc, ImageDecodeError) else type(exc).__name__
            response.success, response.message = False, f'localize failed: {kind}: {str(exc)[:300]}'
            self._localize_failures += 1
            self._skips.skip(f'localize request ({kind})', str(exc))
        self._localize_service_ms.add((time.perf_counter() - t0) * 1e3)
        return response

    def _answer_localize(self, request: Any, response: Any) -> None:
        rgb = msg_to_rgb(request.image, self._values['max_image_pixels'])
        info = request.camera_info
        camera = lf.camera_from_msg_fields(info.k, info.d, info.distortion_model, info.width, info.height)
        if camera is None:
            camera = self._camera
        with self._map_lock:  # single-frame: the topic stream's sequence history is not touched
            matches, confidence = self._localizer.localize_once(rgb)
        if not matches:
            response.success, response.message = False, 'the map has no places'
            return
        best = matches[0]
        solved = self._metric_pose(matches, functools.cache(lambda: self._local_features_of(rgb)), camera,
                                   count=False)
        if not (best.pose is not None or (solved is not None and solved.good)):
            response.success = False
            response.message = f'place {best.place_id} has no pose and no metric solve'
            return
        header = Header(stamp=request.image.header.stamp, frame_id=self._frame)
        response.pose = messages.pose_msg(header, best, self._covariance, confidence, solved)
        response.place_id, response.score = int(best.place_id), float(best.score)
        response.metric = bool(solved is not None and solved.good)
        response.status = solved.status if solved is not None else self._metric_state()
        response.inliers = int(solved.inliers) if solved is not None and solved.good else 0
        response.confidence = confidence  # calibrated P(place right); NaN without a model
        response.success = True
        response.message = (f'place {best.place_id}, ' + ('metric pose' if response.metric else
                                                           f'place pose ({response.status})'))

    def _verification_state(self) -> str:
        if not self._values['verification.enabled']:
            return 'disabled'
        if self._verifier is None:
            return self._verification_note
        return 'essential matrix' if self._camera is not None else 'fundamental matrix (no camera_info)'

    def destroy_node(self) -> None:
        self._stop_workers()
        super().destroy_node()


def _first_line(exc: BaseException, limit: int = 300) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else ''


def _failed_reply(exc: BaseException, request: Any, response: Any) -> Any:
    """The reply of a service whose callback failed: ``success`` false and the error, where the
    service type has those fields (std_srvs/Trigger, SetBool); otherwise the empty response."""
    if hasattr(response, 'success'):
        response.success = False
    if hasattr(response, 'message'):
        response.message = f'{type(exc).__name__}: {_first_line(exc)}'
    return response


def _startup_error(exc: BaseException) -> str:
    """One line for a start-up failure: rcl's own messages carry C source locations."""
    text = re.sub(r',? at /\S+:\d+', '', str(exc).strip().splitlines()[0] if str(exc).strip() else '')
    if isinstance(exc, (VprError, ParameterException)):
        return text
    return f'{type(exc).__name__}: {text}'


SPIN_PERIOD_S = 0.25  # how soon the spinning thread sees a stop request


def _spin(executor: SingleThreadedExecutor, node: LocalizerNode, stop: threading.Event) -> None:
    """Spin until ``stop`` is set or the context shuts down. Every callback of the node is guarded; a
    failure inside rclpy's own executor machinery is counted too and the spinning goes on, so the node
    never goes deaf."""
    while not stop.is_set() and node.context.ok():
        try:
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
        except (ExternalShutdownException, KeyboardInterrupt):
            return
        except Exception as exc:
            node.callback_failed('executor', exc)


def _stop_on_signals(stop: threading.Event, node: LocalizerNode) -> None:
    """SIGINT/SIGTERM only ask the threads to finish. rclpy's own handler shuts the context down from
    its signal thread while the node's entities are still alive; a node stopped that way exited with
    SIGSEGV now and then (about 1 stop in 20 under load, in a native thread, after every Python thread
    had left rcl). Here the node is destroyed first and the context shut down after it."""
    def handler(signum: int, frame: Any) -> None:
        stop.set()
        node.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def main(args: list[str] | None = None) -> int:
    return run(lambda: LocalizerNode(frames_in_caller=True), args, frames_in_main_thread=True)


def run(make_node: Any, args: list[str] | None, frames_in_main_thread: bool) -> int:
    """Start rclpy, build the node, spin until SIGINT/SIGTERM or shutdown, then destroy the node before
    the context; a start-up failure is one FATAL line, exit 1."""
    logger = rclpy.logging.get_logger(NODE_NAME)
    try:  # parses --ros-args: a broken params file or -p value fails here
        init = rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except rclpy_implementation.RCLError as exc:
        logger.fatal(f'cannot start: {_startup_error(exc)}')
        return 1
    try:
        with init:
            try:
                node = make_node()
            except Exception as exc:  # start-up has nothing to keep alive: one line, never a traceback
                logger.fatal(f'cannot start: {_startup_error(exc)}')
                return 1
            stop = threading.Event()
            _stop_on_signals(stop, node)
            executor = SingleThreadedExecutor(context=node.context)
            executor.add_node(node)
            if not frames_in_main_thread:
                try:
                    _spin(executor, node, stop)
                finally:
                    executor.shutdown(timeout_sec=1.0)
                    node.destroy_node()
                return 0
            # Frames are processed on the main thread and the executor spins on another: torch's
            # OpenMP forward ran ~1.7x slower from any other thread (measured; the cause is not known).
            spinner = threading.Thread(target=_spin, args=(executor, node, stop), name='vpr_executor',
                                       daemon=True)
            spinner.start()
            try:
                node.process_frames()
            finally:
                stop.set()
                spinner.join(timeout=5.0)  # a thread left inside rcl at exit aborts the process
                executor.shutdown(timeout_sec=1.0)
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
