"""rosbag2 (sqlite3 or mcap) reading and writing with ``rosbags`` (no ROS installation needed).

Reading yields :class:`Frame` objects with the pose interpolated at each image stamp (linear in
position, slerp in orientation) from a ``nav_msgs/Odometry``, ``geometry_msgs/PoseStamped`` or
``geometry_msgs/PoseWithCovarianceStamped`` topic. Images outside the pose stream's time span
are skipped and counted; a bag where no image is covered is an error.
"""
from __future__ import annotations

import contextlib
import heapq
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from vpr_ros.errors import ImageDecodeError, SourceError, VprError
from vpr_ros.frames import DEFAULT_MAX_IMAGE_PIXELS, Frame, NonFinitePose, Pose, msg_to_rgb
from vpr_ros.skips import SkipCounter

IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
POSE_TYPES = ('nav_msgs/msg/Odometry', 'geometry_msgs/msg/PoseStamped',
              'geometry_msgs/msg/PoseWithCovarianceStamped')
# Gaps in the pose stream longer than this are not interpolated across.
MAX_POSE_GAP_S = 1.0


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.LATEST)


def one_line(exc: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message`` (rosbags errors can carry a multi-line raw schema)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ''
    return f'{type(exc).__name__}: {text[:limit]}' + ('...' if len(text) > limit or len(lines) > 1 else '')


def stamp_of(header: Any, fallback_ns: int) -> float:
    sec, nsec = int(header.stamp.sec), int(header.stamp.nanosec)
    return sec + nsec * 1e-9 if (sec or nsec) else fallback_ns * 1e-9


def pose_of_msg(msg: Any, msgtype: str) -> Pose:
    """The pose of an Odometry/PoseStamped/PoseWithCovarianceStamped (NonFinitePose for NaN or inf)."""
    pose = msg.pose if msgtype == 'geometry_msgs/msg/PoseStamped' else msg.pose.pose
    p, q = pose.position, pose.orientation
    return Pose.from_values((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))


def _orientation(q: np.ndarray) -> tuple[float, float, float, float] | None:
    return tuple(float(v) for v in q) if np.isfinite(q).all() else None  # type: ignore[return-value]


def _slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + t * (q1 - q0)
    else:
        theta = np.arccos(dot)
        q = (np.sin((1 - t) * theta) * q0 + np.sin(t * theta) * q1) / np.sin(theta)
    return q / np.linalg.norm(q)


class PoseTrack:
    """Timestamped poses with interpolation; ``at(t)`` is None outside coverage or across gaps."""

    def __init__(self, stamps: Sequence[float], poses: Sequence[Pose],
                 max_gap: float = MAX_POSE_GAP_S) -> None:
        order = np.argsort(np.asarray(stamps, np.float64), kind='stable')
        self.stamps = np.asarray(stamps, np.float64)[order]
        self.positions = np.array([poses[i].position for i in order], np.float64).reshape(-1, 3)
        # NaN rows: position-only poses (orientation unknown)
        self.orientations = np.array([poses[i].orientation or (np.nan,) * 4 for i in order],
                                     np.float64).reshape(-1, 4)
        self.max_gap = max_gap

    def __len__(self) -> int:
        return len(self.stamps)

    def at(self, t: float) -> Pose | None:
        if not len(self.stamps) or t < self.stamps[0] - 1e-6 or t > self.stamps[-1] + 1e-6:
            return None
        i = int(np.searchsorted(self.stamps, t))
        if i < len(self.stamps) and abs(self.stamps[i] - t) < 1e-9:
            return Pose(tuple(float(v) for v in self.positions[i]), _orientation(self.orientations[i]))
        i0, i1 = max(i - 1, 0), min(i, len(self.stamps) - 1)
        t0, t1 = self.stamps[i0], self.stamps[i1]
        if t1 - t0 > self.max_gap:
            return None
        a = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
        pos = (1 - a) * self.positions[i0] + a * self.positions[i1]
        q0, q1 = self.orientations[i0], self.orientations[i1]
        quat = _slerp(q0, q1, a) if np.isfinite(q0).all() and np.isfinite(q1).all() else None
        return Pose(tuple(float(v) for v in pos), None if quat is None else _orientation(quat))


class BagSource:
    """Frames of one image topic of a rosbag2, with poses from one pose topic."""

    def __init__(self, path: str, image_topic: str | None = None, pose_topic: str | None = None,
                 skips: SkipCounter | None = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        if not os.path.exists(path):
            raise SourceError(f'bag not found: {path}')
        self.path = path
        self.skips = skips or SkipCounter()
        self.max_pixels = max_pixels
        self._store = _typestore()
        with self._read_errors():
            with self._reader() as reader:
                topics = {c.topic: c.msgtype for c in reader.connections}
                counts = {c.topic: c.msgcount for c in reader.connections}
        self.image_topic = self._pick(topics, image_topic, IMAGE_TYPES, 'image')
        self.pose_topic = self._pick(topics, pose_topic, POSE_TYPES, 'pose', required=False)
        # metadata.yaml's count: a progress-bar estimate only, never trusted for allocation or for where to
        # stop (it can lie: frames() reads until the data ends and says when the topic held nothing).
        self.image_count = max(0, min(int(counts.get(self.image_topic) or 0), 1 << 40))

    def _reader(self):
        from pathlib import Path

        from rosbags.highlevel import AnyReader

        return AnyReader([Path(self.path)], default_typestore=self._store)

    @contextlib.contextmanager
    def _read_errors(self) -> Iterator[None]:
        """A bag that cannot be read (corrupt sqlite pages, bad CDR, broken mcap) is one SourceError."""
        try:
            yield
        except VprError:
            raise
        except Exception as exc:  # rosbags, apsw, mcap and struct raise many unrelated types
            raise SourceError(f'cannot read bag {self.path}: {one_line(exc)}') from exc

    def _pick(self, topics: dict[str, str], wanted: str | None, types: tuple[str, ...], what: str,
              required: bool = True) -> str | None:
        if wanted:
            if wanted not in topics:
                raise SourceError(f'bag {self.path}: no topic {wanted}; topics: '
                                  + ', '.join(f'{t} ({m})' for t, m in sorted(topics.items())))
            if topics[wanted] not in types:
                raise SourceError(f'bag {self.path}: {wanted} is {topics[wanted]}, expected one of {types}')
            return wanted
        candidates = sorted(t for t, m in topics.items() if m in types)
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise SourceError(f'bag {self.path}: several {what} topics ({", ".join(candidates)}); name one')
        if not required:
            return None
        raise SourceError(f'bag {self.path}: no {what} topic (types {", ".join(types)})')

    def pose_track(self) -> PoseTrack:
        if not self.pose_topic:
            raise SourceError(f'bag {self.path}: no pose topic (Odometry/PoseStamped/'
                              'PoseWithCovarianceStamped); name one or build without poses')
        stamps, poses = [], []
        with self._read_errors(), self._reader() as reader:
            conns = [c for c in reader.connections if c.topic == self.pose_topic]
            for conn, t_ns, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                try:
                    pose = pose_of_msg(msg, conn.msgtype)
                except NonFinitePose as exc:
                    self.skips.skip('non-finite pose', f'{self.pose_topic} at {t_ns * 1e-9:.3f} s: {exc}')
                    continue
                stamps.append(stamp_of(msg.header, t_ns))
                poses.append(pose)
        if not poses:
            raise SourceError(f'bag {self.path}: pose topic {self.pose_topic} has no messages'
                              + (' with a finite pose' if self.skips.counts['non-finite pose'] else ''))
        return PoseTrack(stamps, poses)

    def pose_frames(self) -> tuple[str, str]:
        """(``header.frame_id``, ``child_frame_id``) of the pose topic: the frame the poses are expressed
        in and, for Odometry, the body they locate (PoseStamped/PoseWithCovarianceStamped name no body:
        ''). Read from the first message with a frame_id; ('', '') without a pose topic."""
        if not self.pose_topic:
            return '', ''
        with self._read_errors(), self._reader() as reader:
            conns = [c for c in reader.connections if c.topic == self.pose_topic]
            for conn, _, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                if msg.header.frame_id:
                    return str(msg.header.frame_id), str(getattr(msg, 'child_frame_id', '') or '')
        return '', ''

    def frames(self, require_pose: bool = True) -> Iterator[Frame]:
        """Decoded frames in bag order; undecodable images and uncovered stamps are counted skips."""
        track = self.pose_track() if (require_pose or self.pose_topic) else None
        covered = read = 0
        with self._read_errors(), self._reader() as reader:
            conns = [c for c in reader.connections if c.topic == self.image_topic]
            for conn, t_ns, raw in reader.messages(connections=conns):
                read += 1
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                    stamp = stamp_of(msg.header, t_ns)
                except Exception as exc:  # undeserializable CDR
                    self.skips.skip('undeserializable message', one_line(exc))
                    continue
                try:
                    rgb = msg_to_rgb(msg, self.max_pixels)
                except ImageDecodeError as exc:
                    self.skips.skip(exc.kind, str(exc))
                    continue
                except Exception as exc:  # a decoder failure frames.py did not foresee
                    self.skips.skip(f'undecodable image ({type(exc).__name__})', one_line(exc))
                    continue
                pose = track.at(stamp) if track is not None else None
                if require_pose and pose is None:
                    self.skips.skip('no pose coverage', f'image at {stamp:.3f}s is outside the '
                                    f'{self.pose_topic} stream')
                    continue
                covered += 1
                yield Frame(stamp, rgb, pose, source=f'{os.path.basename(self.path.rstrip("/"))}:{t_ns}')
        if read == 0:
            raise SourceError(f'bag {self.path}: topic {self.image_topic} has no messages')
        if require_pose and covered == 0:
            raise SourceError(f'bag {self.path}: no image of {self.image_topic} is covered by poses '
                              f'of {self.pose_topic}')


def write_bag(path: str, frames: Iterable[Frame], *, storage: str = 'sqlite3',
              image_topic: str = '/camera/image_raw', pose_topic: str = '/odom',
              compressed: bool = False, poses: Sequence[tuple[float, Pose]] | None = None,
              frame_id: str = 'camera', map_frame: str = 'map', clock: bool = True) -> int:
    """Write frames (and an odometry stream) to a new rosbag2; returns the number of images.

    ``poses``: the odometry stream as (stamp, Pose); when None, each frame's own pose is written
    at the frame's stamp. ``clock`` adds /clock messages (one per image) for sim-time replay.
    """
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = _typestore()
    T = store.types
    Header, Time = T['std_msgs/msg/Header'], T['builtin_interfaces/msg/Time']
    image_type = 'sensor_msgs/msg/CompressedImage' if compressed else 'sensor_msgs/msg/Image'
    plugin = {'sqlite3': StoragePlugin.SQLITE3, 'mcap': StoragePlugin.MCAP}.get(storage)
    if plugin is None:
        raise SourceError(f'unknown bag storage {storage!r} (sqlite3 or mcap)')

    def header(t: float, frame: str):
        ns = int(round(t * 1e9))
        return Header(stamp=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000), frame_id=frame)

    def odom(t: float, pose: Pose):
        geo = T['geometry_msgs/msg/Pose'](
            position=T['geometry_msgs/msg/Point'](x=pose.position[0], y=pose.position[1], z=pose.position[2]),
            orientation=T['geometry_msgs/msg/Quaternion'](*(pose.orientation or (0.0,) * 4)))
        zero3 = T['geometry_msgs/msg/Vector3'](x=0.0, y=0.0, z=0.0)
        return T['nav_msgs/msg/Odometry'](
            header=header(t, map_frame), child_frame_id='base_link',
            pose=T['geometry_msgs/msg/PoseWithCovariance'](pose=geo, covariance=np.zeros(36)),
            twist=T['geometry_msgs/msg/TwistWithCovariance'](
                twist=T['geometry_msgs/msg/Twist'](linear=zero3, angular=zero3), covariance=np.zeros(36)))

    if os.path.exists(path):
        raise SourceError(f'{path} exists; refusing to overwrite a bag')

    def frame_messages() -> Iterator[tuple[int, int, str, Any, str]]:
        for frame in frames:
            ns = int(round(frame.stamp * 1e9))
            if compressed:
                _, buf = cv2.imencode('.jpg', np.ascontiguousarray(frame.rgb[..., ::-1]),
                                      [cv2.IMWRITE_JPEG_QUALITY, 92])
                msg = T[image_type](header=header(frame.stamp, frame_id), format='rgb8; jpeg compressed bgr8',
                                    data=np.frombuffer(buf.tobytes(), np.uint8))
            else:
                h, w = frame.rgb.shape[:2]
                msg = T[image_type](header=header(frame.stamp, frame_id), height=h, width=w, encoding='rgb8',
                                    is_bigendian=0, step=w * 3,
                                    data=np.ascontiguousarray(frame.rgb).reshape(-1))
            yield ns, 0, image_topic, msg, image_type
            if clock:
                yield ns, 1, '/clock', T['rosgraph_msgs/msg/Clock'](clock=header(frame.stamp, '').stamp), \
                    'rosgraph_msgs/msg/Clock'
            if poses is None and frame.pose is not None:
                yield ns, 2, pose_topic, odom(frame.stamp, frame.pose), 'nav_msgs/msg/Odometry'

    def pose_messages() -> Iterator[tuple[int, int, str, Any, str]]:
        for t, pose in sorted(poses or [], key=lambda tp: tp[0]):
            yield int(round(t * 1e9)), 2, pose_topic, odom(t, pose), 'nav_msgs/msg/Odometry'

    # Frames arrive in time order (a requirement) and are streamed to disk one by one, merged
    # with the odometry stream, so a long traversal never sits in memory.
    written = 0
    last_ns = None
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {}
        for ns, _, topic, msg, msgtype in heapq.merge(frame_messages(), pose_messages(), key=lambda m: m[0]):
            if topic == image_topic:
                if last_ns is not None and ns < last_ns:
                    raise SourceError('write_bag: frames must be in time order')
                last_ns = ns
                written += 1
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(conns[topic], ns, store.serialize_cdr(msg, msgtype))
    return written
