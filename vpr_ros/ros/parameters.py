"""Every parameter of the localizer node, as a plain table (no rclpy import).

The node declares exactly these (with a ParameterDescriptor built from each row); tests and the
launch-file check read the table to verify that ``config/localize.yaml`` names only real
parameters. ``read_only`` marks the ones that need a restart. Dotted names nest in YAML
(``loop_closure.min_score`` is ``loop_closure: {min_score: ...}``).

Scores are the map's similarity: cosine similarity in [-1, 1] for global-descriptor encoders, a
vote sum for multi-vector (SegVLAD-style) encoders; score thresholds therefore carry no range.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vpr_ros.encoders.runtime.settings import DEVICES, RUNTIMES
from vpr_ros.features import LocalFeatureConfig
from vpr_ros.frames import DEFAULT_MAX_IMAGE_PIXELS
from vpr_ros.geometry.metric import MetricConfig
from vpr_ros.geometry.pnp import PnPConfig
from vpr_ros.mapdb.integrity import VERIFY_MODES as MAP_VERIFY_MODES
from vpr_ros.matching.confidence import CovarianceModel
from vpr_ros.matching.loop_closure import LoopClosureConfig
from vpr_ros.matching.sequence import SequenceConfig
from vpr_ros.matching.verification import VerificationConfig
from vpr_ros.relocalization import AgreementConfig
from vpr_ros.settings import settings_of

NODE_NAME = 'vpr_localizer'
# Relative input names: they follow the node's namespace and remap the usual way (-r image:=...).
IMAGE_INPUT = 'image'
ODOM_INPUT = 'odom'
CAMERA_INFO_INPUT = 'camera_info'
RELOCALIZATION_OUTPUT = 'initialpose'  # relative output: remap to /initialpose
IMAGE_TRANSPORTS = ('raw', 'compressed')


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: bool | int | float | str
    description: str
    read_only: bool = False
    low: float | None = None   # inclusive range for int/float parameters
    high: float | None = None
    choices: tuple[str, ...] = ()  # the values a str parameter may take (checked by cross_check)

    def __post_init__(self) -> None:
        if self.choices and self.default not in self.choices:
            raise ValueError(f'{self.name}: default {self.default!r} is not one of {self.choices}')


def _described(cls: type, prefix: str | None = None) -> tuple[ParamSpec, ...]:
    """The rows of a config dataclass's described fields (vpr_ros.settings): one statement of each."""
    return tuple(ParamSpec(s.name, s.default, s.about.description, s.about.read_only, s.about.low,
                           s.about.high, s.about.choices) for s in settings_of(cls, prefix))


PARAMETERS: tuple[ParamSpec, ...] = (
    # ----- map and encoder (fixed for the node's lifetime) ---------------------------------------
    ParamSpec('map_path', '', "Map directory written by 'vpr-ros build-map'. Required, except with "
              "incremental:=true where '' starts an empty map of `encoder`.", read_only=True),
    ParamSpec('map_verify', 'full', "Checks when the map is loaded: 'full' (every file against its "
              "checksum in map.yaml, every descriptor), 'size' (file sizes and a sample of descriptors: "
              "for huge maps), 'none'.", read_only=True, choices=MAP_VERIFY_MODES),
    ParamSpec('encoder', '', "Encoder name; '' = the encoder the map was built with (an empty incremental "
              "map: the package default, anyloc_vlad). Naming another encoder than the map's is a fatal "
              'error.', read_only=True),
    ParamSpec('encoder_config', '', "Encoder config overrides as a YAML mapping, e.g. '{threads: 2}'. "
              'Keys that change descriptors must equal the map\'s; used in full for a new empty map.',
              read_only=True),
    ParamSpec('threads', 0, 'Torch intra-op threads of the encoder; 0 = adapt to the cores other '
              'processes leave free (1 up to all, re-checked every 0.3 s; vpr_ros/threadpools.py).',
              low=0, high=256),
    ParamSpec('runtime', '', "How the encoder's network runs: 'auto' (the fastest installed runtime that "
              "matches torch on a probe at start-up), 'torch', 'onnxruntime' or 'openvino'; '' = the "
              "encoder config's (auto unless set). Not part of the map's identity (docs/runtimes.md).",
              read_only=True),
    ParamSpec('device', '', "'cpu' or 'cuda' (torch, or onnxruntime's CUDA/TensorRT providers; an error "
              "where there is no GPU); '' = the encoder config's (cpu unless set).", read_only=True),
    # ----- input ------------------------------------------------------------------------------
    ParamSpec('image_topic', '', "Deprecated. '' (default): the node subscribes to the relative input "
              "'image' (follows the namespace; remap with -r image:=/camera/image_raw). A non-empty name "
              'overrides it (logged as deprecated). Compressed transport appends /compressed to either.',
              read_only=True),
    ParamSpec('image_transport', 'raw', "'raw' (sensor_msgs/Image, any encoding in vpr_ros.frames) or "
              "'compressed' (sensor_msgs/CompressedImage, JPEG/PNG).", read_only=True,
              choices=IMAGE_TRANSPORTS),
    ParamSpec('max_image_pixels', DEFAULT_MAX_IMAGE_PIXELS, 'Skip (count) images whose header declares more '
              'pixels than this, checked before anything is decoded or allocated; 0 = no limit.',
              low=0, high=2 ** 40),
    ParamSpec('max_rate_hz', 0.0, 'Process at most this many frames per second of image time '
              '(header stamps); 0 = as fast as the encoder allows. The newest frame always wins.',
              low=0.0, high=1000.0),
    ParamSpec('top_k', 5, 'Number of candidates retrieved and published per frame.', low=1, high=100),
    ParamSpec('map_frame', '', "frame_id of ~/pose, ~/best_match and markers; '' = the frame the map's "
              "poses were recorded in (map.yaml frame_id; 'map' for maps that record none). A value that "
              'disagrees with the map is used, with a warning.', read_only=True),
    # ----- pose output ----------------------------------------------------------------------
    ParamSpec('pose.min_score', -1.0, 'Publish ~/pose only when the best score is at least this '
              '(raise it before remapping ~/pose to /initialpose).'),
    *_described(CovarianceModel),
    # ----- metric pose (vpr_ros.geometry; docs/localization.md) -----------------------------------
    *_described(MetricConfig),
    *_described(PnPConfig, 'metric'),
    ParamSpec('metric.camera_to_body', '', "Pose of the camera optical frame in the body frame of the map's "
              "poses, 'x y z qx qy qz qw' (as tf2_echo <body> <camera_optical> prints it); '' = the camera "
              'is the body, with the REP-103 optical rotation (maps of camera poses, the sample world).',
              read_only=True),
    # ----- relocalisation and map -> odom (vpr_ros.relocalization; docs/localization.md) -------------
    ParamSpec('relocalization.enabled', False, "Publish one confident metric pose to the relative output "
              "'initialpose' (geometry_msgs/PoseWithCovarianceStamped; remap it to /initialpose for AMCL) "
              'once relocalization.agreement_frames consecutive solves agree, then stay quiet until '
              '~/relocalize is called.'),
    *_described(AgreementConfig),
    ParamSpec('tf.publish_map_to_odom', False, 'Broadcast map -> odom on /tf (tf2_msgs/TFMessage) from each '
              "good metric pose and the odometry ('odom' input, needs use_odom) at the image stamp. Needs "
              'the tf2_msgs Python package.', read_only=True),
    ParamSpec('tf.odom_tolerance', 0.1, 'Odometry at the image stamp: interpolated between the samples '
              'around it, or the nearest, within this many seconds; none that close = no transform.',
              low=0.0, high=10.0),
    ParamSpec('tf.transform_tolerance', 0.0, "Post-date map -> odom by this [s] so lookups newer than the "
              "last image still find it (AMCL's transform_tolerance; 0 = the image stamp).",
              low=0.0, high=10.0),
    ParamSpec('loop_closure.enabled', True, 'Publish accepted loop closures on ~/loop_closure.'),
    *_described(LoopClosureConfig),
    # ----- sequence matching (SeqSLAM; vpr_ros.matching.sequence) ------------------------------
    *_described(SequenceConfig),
    # ----- geometric verification of loop closures ---------------------------------------------
    *_described(VerificationConfig),
    *_described(LocalFeatureConfig),
    # ----- online map growth ------------------------------------------------------------------
    ParamSpec('incremental', False, 'Add keyframes to the in-memory map while running, so loop closures '
              'within the current run are found; ~/save_map writes the grown map.', read_only=True),
    ParamSpec('use_odom', False, "Subscribe to the relative input 'odom' (nav_msgs/Odometry; remap with "
              '-r odom:=...) for keyframe poses and the distance gate; off = keyframes have no pose.',
              read_only=True),
    ParamSpec('odom_topic', '', "Deprecated. A non-empty name subscribes to that Odometry topic instead of "
              "'odom' (and implies use_odom); logged as deprecated.", read_only=True),
    ParamSpec('keyframe.min_interval', 1.0, 'Minimum image time [s] between two keyframes.',
              low=0.0, high=1.0e6),
    ParamSpec('keyframe.min_distance', 0.0, 'Minimum travelled distance [m] (odometry) since the last '
              'keyframe; 0 = off. Frames without an odometry pose skip this gate.', low=0.0, high=1.0e6),
    ParamSpec('keyframe.max_similarity', 1.0, 'Add a keyframe only if its descriptor similarity to the '
              'last keyframe is at most this (novelty gate); 1.0 = off.', low=-1.0, high=1.0),
    ParamSpec('vocabulary.path', '', 'Empty incremental map (map_path \'\') of an encoder that learns a '
              'vocabulary or PCA: take it from this map directory or vocabulary file (vpr-ros '
              "export-vocabulary). '' = bootstrap it from the run's first keyframes.", read_only=True),
    ParamSpec('vocabulary.bootstrap_frames', 40, 'Empty incremental map without vocabulary.path: keyframes '
              '(chosen by the keyframe.* gates) collected before the vocabulary is fitted on them; they '
              'then become the first places. The node answers nothing until then.', read_only=True,
              low=2, high=100_000),
    ParamSpec('save_map_path', '', "Where ~/save_map writes the map (atomically); '' = map_path. Set at "
              'launch only (a path settable at run time would let any peer on the graph pick where the node '
              'writes); an existing folder is replaced only when it is a vpr_ros map.', read_only=True),
    # ----- diagnostics ----------------------------------------------------------------------
    ParamSpec('diagnostics_period', 1.0, 'Period [s, node clock] of /diagnostics.', read_only=True,
              low=0.05, high=60.0),
)

PARAMETER_NAMES = frozenset(p.name for p in PARAMETERS)
DEFAULTS: dict[str, Any] = {p.name: p.default for p in PARAMETERS}


def cross_check(values: Mapping[str, Any]) -> str | None:
    """Why a set of parameter values is inconsistent (None when it is fine).

    Ranges and types are enforced by the descriptors; this checks the choices of str parameters,
    relations between parameters and that no float is NaN or infinite (a NaN passes every
    comparison-based gate unnoticed: ``covariance.score_low: nan`` published NaN covariances,
    ``pose.min_score: nan`` no pose).
    """
    for spec in PARAMETERS:
        value = values[spec.name]
        if isinstance(spec.default, float) and isinstance(value, float) and not math.isfinite(value):
            return f'{spec.name} must be a finite number, got {value}'
        if spec.choices and value not in spec.choices:
            return f'{spec.name} must be one of {spec.choices}, got {value!r}'
    if values['covariance.score_low'] >= values['covariance.score_high']:
        return 'covariance.score_low must be below covariance.score_high'
    if values['covariance.sigma_xy_min'] > values['covariance.sigma_xy_max']:
        return 'covariance.sigma_xy_min must not exceed covariance.sigma_xy_max'
    if values['covariance.sigma_yaw_min'] > values['covariance.sigma_yaw_max']:
        return 'covariance.sigma_yaw_min must not exceed covariance.sigma_yaw_max'
    if values['sequence.min_velocity'] > values['sequence.max_velocity']:
        return 'sequence.min_velocity must not exceed sequence.max_velocity'
    if values['tf.publish_map_to_odom'] and not (values['use_odom'] or values['odom_topic']):
        return 'tf.publish_map_to_odom needs odometry (use_odom:=true, the odom input)'
    for name, allowed in (('runtime', RUNTIMES), ('device', DEVICES)):
        if values[name] and values[name] not in allowed:
            return f"{name} must be '' or one of {', '.join(allowed)}; got {values[name]!r}"
    return None


DEFAULT_FRAME = 'map'


def output_frame(parameter: str, map_frame: str) -> tuple[str, str | None]:
    """(frame_id the node stamps outputs with, a warning or None) from ``map_frame`` and the map's frame."""
    if not parameter:
        return map_frame or DEFAULT_FRAME, None
    if map_frame and parameter != map_frame:
        return parameter, (f"map_frame {parameter!r} disagrees with the map, whose poses were recorded in "
                           f"{map_frame!r}: outputs are stamped {parameter!r} as asked, which is only right "
                           "if the two frames coincide (leave map_frame '' to use the map's)")
    return parameter, None


def image_subscription_topic(image_topic: str, transport: str) -> str:
    """The topic the node subscribes: ``<image_topic>/compressed`` for compressed transport
    (image_transport style)."""
    if transport == 'compressed' and not image_topic.endswith('/compressed'):
        return image_topic.rstrip('/') + '/compressed'
    return image_topic


def flatten_yaml_parameters(params: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
    """A ``ros__parameters`` mapping with nested dicts -> {'a.b': value} as rcl reads it."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f'{prefix}{key}'
        if isinstance(value, Mapping):
            flat.update(flatten_yaml_parameters(value, name + '.'))
        else:
            flat[name] = value
    return flat


__all__ = ['DEFAULTS', 'IMAGE_TRANSPORTS', 'NODE_NAME', 'PARAMETERS', 'PARAMETER_NAMES', 'ParamSpec',
           'cross_check', 'flatten_yaml_parameters', 'image_subscription_topic', 'params_file_text',
           'yaml_scalar']


def params_file_text(node_name: str = '/**') -> str:
    """A ROS 2 params file with every parameter at its default, described from this table
    (``vpr-ros node-params``: a pip/venv install has no ``share/`` copy of config/localize.yaml)."""
    lines = ['# Parameters of the vpr_ros localizer node at their defaults (vpr-ros node-params).',
             '# "restart": read only at start-up; the others can be changed with ros2 param set.',
             f'{node_name}:', '  ros__parameters:']
    opened: list[str] = []
    for spec in PARAMETERS:
        *groups, leaf = spec.name.split('.')
        common = 0
        while common < min(len(groups), len(opened)) and groups[common] == opened[common]:
            common += 1
        opened = opened[:common]
        for group in groups[common:]:
            lines.append('    ' + '  ' * len(opened) + f'{group}:')
            opened.append(group)
        indent = '    ' + '  ' * len(opened)
        note = ' (restart)' if spec.read_only else ''
        lines.append(f'{indent}# {spec.description}{note}'.replace('\n', ' '))
        lines.append(f'{indent}{leaf}: {yaml_scalar(spec.default)}')
    return '\n'.join(lines) + '\n'


def yaml_scalar(value: bool | int | float | str) -> str:
    """A parameter value as YAML (and ``-p name:=value``) writes it, keeping its ROS type."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, float):
        return repr(value)  # keeps the decimal point: ROS 2 parameters are strictly typed
    if isinstance(value, int):
        return str(value)
    return '"' + value.replace('\\', '\\\\').replace('"', '\\"') + '"'
