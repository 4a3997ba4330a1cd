"""Frames and the one place where image messages become RGB arrays.

``image_msg_to_rgb`` works on rclpy messages and rosbags messages alike (duck typing on
``height``, ``width``, ``encoding``, ``step``, ``is_bigendian``, ``data``), honours ``step``
(row padding) and byte order, and raises :class:`ImageDecodeError` for anything malformed.
"""
from __future__ import annotations

import math
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vpr_ros.errors import ImageDecodeError

# Beyond this a coordinate is garbage, not a place (ECEF and UTM coordinates stay below 1e7 m); squared
# distances of such values overflow float64.
MAX_POSE_COORDINATE = 1.0e9


class NonFinitePose(ValueError):
    """A pose with a NaN or infinite number: bad input, skipped and counted like an undecodable image."""


@dataclass(frozen=True)
class Pose:
    """A pose in the map frame: position (x, y, z) in metres, orientation quaternion (x, y, z, w);
    orientation None: unknown (a position-only pose, e.g. odometry that sends a zero quaternion)."""

    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float] | None = (0.0, 0.0, 0.0, 1.0)

    @property
    def yaw(self) -> float:
        """Heading [rad]; NaN for a position-only pose (it is within no yaw threshold)."""
        if self.orientation is None:
            return math.nan
        x, y, z, w = self.orientation
        return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))

    @staticmethod
    def from_values(position: Sequence[float], orientation: Sequence[float] | None) -> 'Pose':
        """A pose from raw numbers (a message, a CSV row): :class:`NonFinitePose` when any is NaN or
        infinite; an all-zero quaternion (drivers that know no orientation send it) is a position-only
        pose; any other quaternion is normalised."""
        pos = tuple(float(v) for v in position)
        quat = None if orientation is None else tuple(float(v) for v in orientation)
        if not all(math.isfinite(v) for v in pos + (quat or ())):
            raise NonFinitePose(f'position {pos}, orientation {quat}')
        if max(abs(v) for v in pos) > MAX_POSE_COORDINATE:
            raise NonFinitePose(f'position {pos} beyond {MAX_POSE_COORDINATE:g} m')
        if quat is not None:
            scale = max(abs(v) for v in quat)  # scaled first: 1e300 components would overflow the norm
            if scale == 0.0:
                quat = None
            else:
                norm = math.sqrt(sum((v / scale) ** 2 for v in quat)) * scale
                if abs(norm - 1.0) > 1e-9:
                    quat = tuple((v / scale) / (norm / scale) for v in quat)
        return Pose(pos, quat)  # type: ignore[arg-type]

    @staticmethod
    def from_xy_yaw(x: float, y: float, yaw: float, z: float = 0.0) -> 'Pose':
        return Pose((float(x), float(y), float(z)), (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)))


@dataclass
class Frame:
    """One camera frame: stamp in seconds, HxWx3 uint8 RGB, optional ground-truth/odometry pose."""

    stamp: float
    rgb: np.ndarray
    pose: Pose | None = None
    source: str = ''
    meta: dict[str, Any] = field(default_factory=dict)


# encoding -> (channels, numpy dtype, channel order to RGB)
_ENCODINGS: dict[str, tuple[int, str, str]] = {
    'rgb8': (3, 'u1', 'rgb'), 'bgr8': (3, 'u1', 'bgr'),
    'rgba8': (4, 'u1', 'rgba'), 'bgra8': (4, 'u1', 'bgra'),
    'mono8': (1, 'u1', 'mono'), '8UC1': (1, 'u1', 'mono'), '8UC3': (3, 'u1', 'bgr'),
    'mono16': (1, 'u2', 'mono'), '16UC1': (1, 'u2', 'mono'),
    'rgb16': (3, 'u2', 'rgb'), 'bgr16': (3, 'u2', 'bgr'),
    'rgba16': (4, 'u2', 'rgba'), 'bgra16': (4, 'u2', 'bgra'),
    '32FC1': (1, 'f4', 'mono'),
    'bayer_rggb8': (1, 'u1', 'bayer_rggb'), 'bayer_bggr8': (1, 'u1', 'bayer_bggr'),
    'bayer_gbrg8': (1, 'u1', 'bayer_gbrg'), 'bayer_grbg8': (1, 'u1', 'bayer_grbg'),
    'yuv422': (2, 'u1', 'uyvy'), 'uyvy': (2, 'u1', 'uyvy'), 'yuv422_yuy2': (2, 'u1', 'yuyv'),
}

SUPPORTED_ENCODINGS = tuple(sorted(_ENCODINGS))

# Images larger than this many pixels are refused before decoding (a 631-byte JPEG can claim
# 20000x20000 and cost 1.2 GB); 50 MP is above any robot camera. Node parameter / CLI option.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
IMAGE_TOO_LARGE = 'image too large'
MAX_IMAGE_FILE_BYTES = 1 << 30  # an image file is read whole before its header is checked
ODD_WIDTH_YUV422 = 'odd width yuv422'
TRUNCATED_COMPRESSED = 'truncated compressed image'


def _buffer(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(memoryview(data).cast('B'), dtype=np.uint8)


def raw_image_to_array(height: int, width: int, encoding: str, step: int, is_bigendian: bool,
                       data: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Return the image as (H, W, C) in its native dtype, honouring ``step`` and endianness.

    Nothing is allocated before the header is checked against the data: the rows are a strided
    view of the message buffer (the last row needs no padding), so a tiny message claiming a
    huge ``step`` or size costs nothing.
    """
    if encoding not in _ENCODINGS:
        raise ImageDecodeError('unknown encoding',
                               f'{encoding!r} (supported: {", ".join(SUPPORTED_ENCODINGS)})')
    channels, kind, order = _ENCODINGS[encoding]
    dtype = np.dtype(kind).newbyteorder('>' if is_bigendian else '<')
    if height <= 0 or width <= 0:
        raise ImageDecodeError('empty image', f'{width}x{height}')
    check_image_size(width, height, max_pixels)
    if order in ('uyvy', 'yuyv') and width % 2:
        raise ImageDecodeError(ODD_WIDTH_YUV422, f'{encoding} packs 2 pixels in 4 bytes; width {width}')
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError('bad step', f'step {step} < width*channels*bytes {row_bytes} ({encoding})')
    buf = _buffer(data)
    if buf.size < step * (height - 1) + row_bytes:
        raise ImageDecodeError('truncated image',
                               f'{buf.size} bytes for {width}x{height} {encoding} with step {step}')
    rows = np.lib.stride_tricks.as_strided(buf, shape=(height, row_bytes), strides=(step, 1), writeable=False)
    arr = np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)
    return arr.astype(dtype.newbyteorder('='), copy=False)


def check_image_size(width: int, height: int, max_pixels: int) -> None:
    """Refuse an image whose declared size exceeds ``max_pixels`` (before anything is allocated)."""
    if max_pixels > 0 and width * height > max_pixels:
        raise ImageDecodeError(IMAGE_TOO_LARGE, f'{width}x{height} exceeds max_image_pixels {max_pixels}')


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == 'u':
        return (arr >> (8 * arr.dtype.itemsize - 8)).astype(np.uint8)
    # float64 and a clip: (x - lo) overflows float32 for values near its range (a garbage 32FC1 frame).
    # NaNs go before the widening: a signalling NaN raises the FP "invalid" flag when cast.
    finite = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float64)
    lo, hi = float(finite.min()), float(finite.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((finite - lo) * scale, 0.0, 255.0).astype(np.uint8)


def array_to_rgb(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Convert a native (H, W, C) array of the given encoding to contiguous uint8 RGB."""
    import cv2

    order = _ENCODINGS[encoding][2]
    if order.startswith('bayer'):
        code = {'bayer_rggb': cv2.COLOR_BayerBG2RGB, 'bayer_bggr': cv2.COLOR_BayerRG2RGB,
                'bayer_gbrg': cv2.COLOR_BayerGR2RGB, 'bayer_grbg': cv2.COLOR_BayerGB2RGB}[order]
        return cv2.cvtColor(np.ascontiguousarray(arr[..., 0]), code)
    if order in ('uyvy', 'yuyv'):
        code = cv2.COLOR_YUV2RGB_UYVY if order == 'uyvy' else cv2.COLOR_YUV2RGB_YUY2
        return cv2.cvtColor(np.ascontiguousarray(arr), code)
    arr = _to_uint8(arr)
    if order == 'mono':
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    if order in ('bgr', 'bgra'):
        return np.ascontiguousarray(arr[..., 2::-1])
    return np.ascontiguousarray(arr[..., :3])


def image_msg_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """sensor_msgs/Image (rclpy or rosbags) -> HxWx3 uint8 RGB."""
    arr = raw_image_to_array(int(msg.height), int(msg.width), str(msg.encoding), int(msg.step),
                             bool(msg.is_bigendian), msg.data, max_pixels)
    return array_to_rgb(arr, str(msg.encoding))


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT/JPG/DAC)


def _jpeg_header(buf: bytes) -> tuple[int, int, int] | None:
    """(width, height, offset of the scan data) from a JPEG's segments, or None if they are malformed."""
    pos, size = 2, None
    while pos + 4 <= len(buf):
        if buf[pos] != 0xFF:
            return None
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = int.from_bytes(buf[pos + 2:pos + 4], 'big')
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            if pos + 9 > len(buf):
                return None
            size = (int.from_bytes(buf[pos + 7:pos + 9], 'big'), int.from_bytes(buf[pos + 5:pos + 7], 'big'))
        elif marker == 0xDA:
            return None if size is None else (*size, pos + 2 + length)
        elif marker == 0xD9:
            return None
        pos += 2 + length
    return None


def _decode(raw: np.ndarray, max_pixels: int, what: str, any_format: bool) -> np.ndarray:
    """Decode JPEG/PNG (``any_format``: anything OpenCV reads) to RGB after checking the header.

    A JPEG must have its end-of-image marker after the scan: libjpeg "decodes" a truncated one
    (premature end) by filling the rest with grey, which would then be localised as a real frame.
    """
    import cv2

    head = raw.tobytes()
    if head.startswith(b'\xff\xd8\xff'):
        header = _jpeg_header(head)
        if header is None:
            raise ImageDecodeError('undecodable compressed image', f'{what}: malformed JPEG header')
        width, height, scan = header
        if width == 0 or height == 0:
            raise ImageDecodeError('undecodable compressed image', f'{what}: JPEG declares {width}x{height}')
        check_image_size(width, height, max_pixels)
        if head.find(b'\xff\xd9', scan) < 0:  # entropy data never holds FF D9 (stuffed FF 00)
            raise ImageDecodeError(TRUNCATED_COMPRESSED, f'{what}: JPEG has no end-of-image marker')
    elif head.startswith(b'\x89PNG\r\n\x1a\n') and head[12:16] == b'IHDR' and len(head) >= 24:
        check_image_size(int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big'), max_pixels)
    elif not any_format:
        raise ImageDecodeError('undecodable compressed image', f'{raw.size} bytes are not a JPEG/PNG image')
    img = cv2.imdecode(raw, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageDecodeError('undecodable compressed image', f'{what}: {raw.size} bytes are not an image')
    return np.ascontiguousarray(img[..., ::-1])


def compressed_to_rgb(data: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """JPEG/PNG bytes (sensor_msgs/CompressedImage.data) -> HxWx3 uint8 RGB."""
    buf = _buffer(data)
    if buf.size == 0:
        raise ImageDecodeError('undecodable compressed image', 'empty data')
    return _decode(buf, max_pixels, 'compressed image', any_format=False)


def msg_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Any image message: CompressedImage is recognised by its ``format`` field."""
    if hasattr(msg, 'format') and not hasattr(msg, 'encoding'):
        return compressed_to_rgb(msg.data, max_pixels)
    return image_msg_to_rgb(msg, max_pixels)


def read_image_file(path: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file to RGB; raises ImageDecodeError for unreadable, truncated or oversized files."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))  # a FIFO must not block the open
        with os.fdopen(fd, 'rb') as fh:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ImageDecodeError('unreadable image file', f'{path}: not a regular file')
            if info.st_size > MAX_IMAGE_FILE_BYTES:
                raise ImageDecodeError(IMAGE_TOO_LARGE, f'{path}: a {info.st_size}-byte file')
            raw = np.frombuffer(fh.read(), dtype=np.uint8)
    except OSError as exc:
        raise ImageDecodeError('unreadable image file', f'{path}: {exc.strerror}') from exc
    if raw.size == 0:
        raise ImageDecodeError('undecodable image file', f'{path}: empty file')
    try:
        return _decode(raw, max_pixels, path, any_format=True)
    except ImageDecodeError as exc:
        if exc.kind == 'undecodable compressed image':
            raise ImageDecodeError('undecodable image file', str(exc).partition(': ')[2]) from exc
        raise


def validate_rgb(rgb: np.ndarray) -> np.ndarray:
    """Check an array is HxWx3 uint8 (the encoders' input contract)."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, 'shape', None)
        raise ImageDecodeError('bad array', f'expected HxWx3 uint8, got {shape} {getattr(rgb, "dtype", "")}')
    if rgb.shape[0] < 8 or rgb.shape[1] < 8:
        raise ImageDecodeError('image too small', f'{rgb.shape[1]}x{rgb.shape[0]}')
    return rgb
