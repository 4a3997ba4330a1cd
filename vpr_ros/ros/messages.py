"""Building (and, for recorders, reading) the localizer node's output messages.

Only standard message types; the exact layouts are in ``docs/ros_interface.md``:

* ``~/candidates`` std_msgs/Float64MultiArray: ``layout.data_offset = 1``, ``data[0]`` = query stamp
  [s]; then a row-major K x 3 matrix, dims ``[{label: 'candidates', size: K, stride: 3K},
  {label: 'place_id,score,map_stamp', size: 3, stride: 3}]``, best first. K may be 0.
* ``~/best_match`` geometry_msgs/Vector3Stamped: x = place id, y = score, z = map stamp [s].
* ``~/pose`` geometry_msgs/PoseWithCovarianceStamped: the metric pose of the query with the solve's
  covariance when the metric solve is good (vpr_ros.geometry), else the best place's with the
  score model's covariance.
* ``~/loop_closure`` std_msgs/Float64MultiArray: ``data = [t_query, t_match]`` (LIO-SAM), empty layout.
* ``~/place_candidates`` / ``~/place_match``: vpr_ros_interfaces/PlaceCandidates / PlaceMatch, the same
  content with named fields, when that package is installed (``make interfaces``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, PoseWithCovarianceStamped, Quaternion, Vector3Stamped
from geometry_msgs.msg import Pose as PoseMsg
from std_msgs.msg import ColorRGBA, Float64MultiArray, Header, MultiArrayDimension, MultiArrayLayout
from visualization_msgs.msg import Marker, MarkerArray

from vpr_ros.frames import Pose
from vpr_ros.geometry.metric import MetricPose
from vpr_ros.mapdb.store import Match, Place
from vpr_ros.matching.confidence import CovarianceModel
from vpr_ros.slam.constraints import ROTATION_SIGMA_RAD, UNKNOWN_SCALE_VARIANCE_M2

try:  # optional: built by `make interfaces` (or colcon); without it those two topics are not published
    from vpr_ros_interfaces.msg import PlaceCandidates, PlaceMatch
except ImportError:
    PlaceCandidates = PlaceMatch = None
# interfaces built before PlaceMatch had a confidence field still work (without it)
PLACE_MATCH_HAS_CONFIDENCE = (PlaceMatch is not None
                              and 'confidence' in PlaceMatch.get_fields_and_field_types())
try:  # an interfaces build from before the service existed has only the messages: no ~/localize
    from vpr_ros_interfaces.srv import Localize
except ImportError:
    Localize = None

CANDIDATE_FIELDS = ('place_id', 'score', 'map_stamp')


def to_sec(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def to_time(t: float) -> Time:
    ns = int(round(t * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def candidates_msg(t_query: float, matches: Sequence[Match]) -> Float64MultiArray:
    k = len(matches)
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label='candidates', size=k, stride=3 * k),
                      MultiArrayDimension(label=','.join(CANDIDATE_FIELDS), size=3, stride=3)]
    msg.layout.data_offset = 1
    rows = [v for m in matches for v in (float(m.place_id), float(m.score), float(m.stamp))]
    msg.data = [float(t_query)] + rows
    return msg


def parse_candidates(msg: Float64MultiArray) -> tuple[float, list[tuple[int, float, float]]]:
    """(query stamp, [(place_id, score, map_stamp), ...]) of a ``~/candidates`` message."""
    data = np.asarray(msg.data, np.float64)
    offset = int(msg.layout.data_offset)
    rows = data[offset:].reshape(-1, 3)
    return float(data[0]), [(int(r[0]), float(r[1]), float(r[2])) for r in rows]


def best_match_msg(header: Header, match: Match) -> Vector3Stamped:
    msg = Vector3Stamped(header=header)
    msg.vector.x, msg.vector.y, msg.vector.z = float(match.place_id), float(match.score), float(match.stamp)
    return msg


def place_match_msg(header: Header, match: Match, confidence: float = math.nan,
                    metric: MetricPose | None = None):
    """vpr_ros_interfaces/PlaceMatch of one match (``has_pose`` false and an identity pose without one);
    with a good ``metric`` solve, its pose and ``pose_source`` POSE_METRIC."""
    msg = PlaceMatch(header=header, place_id=int(match.place_id), score=float(match.score),
                     map_stamp=to_time(match.stamp), has_pose=match.pose is not None)
    if PLACE_MATCH_HAS_CONFIDENCE:
        msg.confidence = float(confidence)
    if metric is not None and metric.good and hasattr(msg, 'pose_source'):
        msg.pose, msg.has_pose, msg.pose_source = pose_to_msg(metric.pose), True, PlaceMatch.POSE_METRIC
    elif match.pose is not None:
        msg.pose = pose_to_msg(match.pose)
    return msg


def place_candidates_msg(header: Header, matches: Sequence[Match], confidence: float = math.nan):
    """The candidates, best first; ``confidence`` (of the best one) goes to the first only."""
    return PlaceCandidates(header=header, candidates=[
        place_match_msg(header, m, confidence=confidence if i == 0 else math.nan)
        for i, m in enumerate(matches)])


def loop_closure_msg(t_query: float, t_match: float) -> Float64MultiArray:
    return Float64MultiArray(data=[float(t_query), float(t_match)])


CONSTRAINT_FIELDS = ('t_query', 't_match', 'place_id', 'tx', 'ty', 'tz', 'qx', 'qy', 'qz', 'qw', 'inliers',
                     'inlier_ratio', 'metric')


def loop_constraint_msg(t_query: float, t_match: float, place_id: int, rotation: np.ndarray,
                        translation: np.ndarray, inliers: int, inlier_ratio: float,
                        covariance: np.ndarray | None = None) -> Float64MultiArray:
    """``~/loop_closure_constraint``: the relative pose of a verified closure (docs/ros_interface.md).

    ``covariance`` given: a metric constraint (translation in metres, the PnP solve's 6x6 covariance,
    ``metric`` = 1); without it the translation is a unit direction with a 10^6 m^2 variance
    (``metric`` = 0)."""
    from scipy.spatial.transform import Rotation

    q = Rotation.from_matrix(np.asarray(rotation, np.float64)).as_quat()  # x, y, z, w
    metric = covariance is not None
    cov = (np.asarray(covariance, np.float64) if metric else
           np.diag([UNKNOWN_SCALE_VARIANCE_M2] * 3 + [ROTATION_SIGMA_RAD ** 2] * 3))
    data = [float(t_query), float(t_match), float(place_id), *map(float, np.asarray(translation).reshape(3)),
            *map(float, q), float(inliers), float(inlier_ratio), float(metric), *map(float, cov.reshape(-1))]
    layout = MultiArrayLayout(dim=[MultiArrayDimension(label=','.join(CONSTRAINT_FIELDS) + ',covariance[36]',
                                                       size=len(data), stride=len(data))], data_offset=0)
    return Float64MultiArray(layout=layout, data=data)


def parse_loop_constraint(msg: Float64MultiArray) -> dict[str, Any]:
    """The fields of a constraint; one recorded before the ``metric`` field existed (48 values) reads as
    ``metric`` = 0."""
    d = list(msg.data)
    n = len(CONSTRAINT_FIELDS)
    if len(d) == n - 1 + 36:
        d = d[:n - 1] + [0.0] + d[n - 1:]
    if len(d) != n + 36:
        raise ValueError(f'a loop-closure constraint has {n + 36} values, got {len(d)}')
    out: dict[str, Any] = dict(zip(CONSTRAINT_FIELDS, d))
    out['covariance'] = np.asarray(d[len(CONSTRAINT_FIELDS):]).reshape(6, 6)
    return out


UNKNOWN_VARIANCE = 1.0e6  # covariance of a component the pose does not know (REP-145 style: huge)


def pose_to_msg(pose: Pose) -> PoseMsg:
    """A position-only pose (orientation None) gets the identity quaternion; its covariance says the
    rotation is unknown (:func:`pose_msg`)."""
    x, y, z, w = pose.orientation or (0.0, 0.0, 0.0, 1.0)
    return PoseMsg(position=Point(x=pose.position[0], y=pose.position[1], z=pose.position[2]),
                   orientation=Quaternion(x=x, y=y, z=z, w=w))


def transform_to_msg(T: np.ndarray, out: Any) -> Any:
    """Fill a geometry_msgs/Transform ``out`` from a 4x4 transform (``T_parent_child``); returns it."""
    from scipy.spatial.transform import Rotation

    out.translation.x, out.translation.y, out.translation.z = (float(v) for v in T[:3, 3])
    out.rotation.x, out.rotation.y, out.rotation.z, out.rotation.w = (
        float(v) for v in Rotation.from_matrix(T[:3, :3]).as_quat())
    return out


def later(stamp: Time, seconds: float) -> Time:
    """``stamp`` plus ``seconds`` in integer nanoseconds (a float round trip loses ~0.2 us at epoch times)."""
    ns = stamp.sec * 1_000_000_000 + stamp.nanosec + int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def pose_msg(header: Header, match: Match, model: CovarianceModel,
             confidence: float = math.nan, metric: MetricPose | None = None) -> PoseWithCovarianceStamped:
    """The metric pose with its solve's covariance when ``metric`` is good, else the place pose with the
    covariance from the calibrated ``confidence`` (or the score without one; the place must have a pose)."""
    msg = PoseWithCovarianceStamped(header=header)
    if metric is not None and metric.good:
        msg.pose.pose = pose_to_msg(metric.pose)
        msg.pose.covariance = np.asarray(metric.covariance, np.float64).reshape(36)
        return msg
    assert match.pose is not None
    msg.pose.pose = pose_to_msg(match.pose)
    covariance = model.covariance(match.score, confidence)
    if match.pose.orientation is None:
        covariance[[21, 28, 35]] = UNKNOWN_VARIANCE  # roll, pitch, yaw variances
    msg.pose.covariance = covariance
    return msg


def _score_color(score: float, model: CovarianceModel) -> ColorRGBA:
    a = model.score_level(score)
    return ColorRGBA(r=1.0 - a, g=a, b=0.0, a=1.0)


def map_markers(places: Sequence[Place], header: Header) -> MarkerArray:
    """One SPHERE_LIST of every place with a pose (DELETEALL first, so a shrunk map leaves no ghosts)."""
    points = [Point(x=p.pose.position[0], y=p.pose.position[1], z=p.pose.position[2])
              for p in places if p.pose is not None]
    clear = Marker(header=header, action=Marker.DELETEALL)
    marker = Marker(header=header, ns='map_places', id=0, type=Marker.SPHERE_LIST, action=Marker.ADD,
                    points=points, color=ColorRGBA(r=0.55, g=0.55, b=0.6, a=0.8))
    marker.pose.orientation.w = 1.0
    marker.scale.x = marker.scale.y = marker.scale.z = 0.4
    return MarkerArray(markers=[clear, marker] if points else [clear])


def match_markers(header: Header, matches: Sequence[Match], model: CovarianceModel) -> MarkerArray:
    """The best place (sphere + label, coloured red->green by score) and the other candidates."""
    posed = [m for m in matches if m.pose is not None]
    if not posed:
        return MarkerArray()
    best = posed[0]
    sphere = Marker(header=header, ns='match', id=0, type=Marker.SPHERE, action=Marker.ADD,
                    pose=pose_to_msg(best.pose), color=_score_color(best.score, model))
    sphere.scale.x = sphere.scale.y = sphere.scale.z = 1.5
    label = Marker(header=header, ns='match', id=1, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                   pose=pose_to_msg(best.pose), text=f'place {best.place_id} ({best.score:.2f})',
                   color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0))
    label.pose.position.z += 2.0
    label.scale.z = 1.0
    others = Marker(header=header, ns='match', id=2, type=Marker.SPHERE_LIST, action=Marker.ADD,
                    points=[pose_to_msg(m.pose).position for m in posed[1:]],
                    colors=[_score_color(m.score, model) for m in posed[1:]])
    others.pose.orientation.w = 1.0
    others.scale.x = others.scale.y = others.scale.z = 0.8
    return MarkerArray(markers=[sphere, label, others])


__all__ = ['CANDIDATE_FIELDS', 'CONSTRAINT_FIELDS', 'CovarianceModel', 'best_match_msg', 'candidates_msg',
           'loop_closure_msg', 'loop_constraint_msg', 'parse_loop_constraint',
           'map_markers', 'match_markers', 'parse_candidates', 'pose_msg', 'pose_to_msg', 'to_sec', 'to_time']
