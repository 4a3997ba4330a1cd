"""Local features of an image, and the intrinsics of the camera that took it.

One place for what the package detects with OpenCV: the keypoints and uint8 descriptors that
geometric verification matches (``extract``; the map stores them, mapdb/local_features.py) and the
float descriptor sets the classical encoders pool into VLAD / bag-of-words (``rootsift``,
``orb_bits``). Descriptors: ``rootsift`` (SIFT, L1-normalised, square-rooted; stored quantised to
uint8 as ``round(512 * v)`` clipped to 255: 128 bytes per keypoint) or ``orb`` (the 256-bit ORB
descriptor, 32 bytes). Keypoint coordinates are float32 pixels of the original image (``x`` right,
``y`` down), so camera intrinsics apply to them directly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vpr_ros.errors import ConfigError
from vpr_ros.settings import setting
from vpr_ros.textio import load_yaml_file, short_repr

KINDS = {'rootsift': 128, 'orb': 32}   # descriptor kind -> stored bytes per keypoint
ROOTSIFT_SCALE = 512.0


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics (+ distortion) of the images the keypoints were detected in."""

    K: tuple[float, ...]                # row-major 3x3
    D: tuple[float, ...] = ()           # distortion coefficients of ``model``
    model: str = 'plumb_bob'            # plumb_bob, rational_polynomial or equidistant
    width: int = 0                      # calibrated image size (0 = unknown: use K as is)
    height: int = 0

    def matrix_for(self, image_size: tuple[int, int]) -> np.ndarray:
        """K for an image of ``(height, width)``: scaled when the image is resized from the calibration."""
        K = np.asarray(self.K, np.float64).reshape(3, 3).copy()
        h, w = image_size
        if self.width and self.height and (w, h) != (self.width, self.height):
            K[0] *= w / self.width
            K[1] *= h / self.height
        return K

    def normalise(self, points: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
        """Pixel coordinates -> undistorted normalised image coordinates (n, 2)."""
        import cv2

        pts = np.asarray(points, np.float64).reshape(-1, 1, 2)
        K = self.matrix_for(image_size)
        D = np.asarray(self.D, np.float64)
        if self.model == 'equidistant':
            out = cv2.fisheye.undistortPoints(pts, K, D[:4] if len(D) >= 4 else np.zeros(4))
        else:
            out = cv2.undistortPoints(pts, K, D if len(D) else None)
        return out.reshape(-1, 2)

    def focal(self, image_size: tuple[int, int]) -> float:
        K = self.matrix_for(image_size)
        return float((K[0, 0] + K[1, 1]) / 2)

    def to_dict(self) -> dict[str, Any]:
        return {'K': [float(v) for v in self.K], 'D': [float(v) for v in self.D], 'model': self.model,
                'width': int(self.width), 'height': int(self.height)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = 'camera') -> 'CameraIntrinsics':
        try:
            K = tuple(float(v) for v in data['K'])
            D = tuple(float(v) for v in data.get('D') or ())
            cam = cls(K, D, str(data.get('model') or 'plumb_bob'), int(data.get('width') or 0),
                      int(data.get('height') or 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f'{source}: malformed camera intrinsics ({exc})') from exc
        cam.check(source)
        return cam

    def check(self, source: str = 'camera') -> None:
        if len(self.K) != 9 or not all(math.isfinite(v) for v in self.K):
            raise ConfigError(f'{source}: camera matrix must have 9 finite entries')
        if self.K[0] <= 0 or self.K[4] <= 0:
            raise ConfigError(f'{source}: focal lengths must be positive (fx={self.K[0]}, fy={self.K[4]})')
        if self.model not in ('plumb_bob', 'rational_polynomial', 'equidistant', 'none', ''):
            raise ConfigError(f'{source}: distortion model {self.model!r} is not supported '
                              '(plumb_bob, rational_polynomial, equidistant)')


def camera_from_msg_fields(k: Any, d: Any, model: str, width: int, height: int) -> CameraIntrinsics | None:
    """Intrinsics from sensor_msgs/CameraInfo fields; None for an uncalibrated camera (K all zero)."""
    K = tuple(float(v) for v in k)
    if len(K) != 9 or K[0] <= 0 or K[4] <= 0:
        return None
    cam = CameraIntrinsics(K, tuple(float(v) for v in d), model or 'plumb_bob', int(width), int(height))
    cam.check('camera_info')
    return cam


def load_camera_info_yaml(path: str) -> CameraIntrinsics:
    """A ROS camera_info YAML (camera_calibration / camera_info_manager format)."""
    data = load_yaml_file(path, 'camera info')
    if not isinstance(data, dict) or 'camera_matrix' not in data:
        raise ConfigError(f'{path}: not a camera_info YAML (no camera_matrix)')
    try:
        k = data['camera_matrix']['data']
        dist = (data.get('distortion_coefficients') or {}).get('data') or []
    except (TypeError, KeyError) as exc:
        raise ConfigError(f'{path}: camera_matrix/distortion_coefficients need a data list') from exc
    cam = camera_from_msg_fields(k, dist, str(data.get('distortion_model') or 'plumb_bob'),
                                 int(data.get('image_width') or 0), int(data.get('image_height') or 0))
    if cam is None:
        raise ConfigError(f'{path}: camera_matrix has no positive focal lengths')
    return cam


@dataclass(frozen=True)
class LocalFeatureConfig:
    """Local features per place; the described fields are the node's ``local_features.*`` (used for an
    empty incremental map: a loaded map keeps its own)."""

    SETTINGS_PREFIX = 'local_features'

    kind: str = setting('rootsift', "Local features of places added to an empty incremental map: 'rootsift' "
                        "or 'orb' (a loaded map keeps its own).", read_only=True)
    max_keypoints: int = setting(500, 'Keypoints per place for an empty incremental map.', read_only=True,
                                 low=8, high=20000)
    max_side: int = 640   # images are detected at most this large (longer side), coordinates rescaled

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f'local features: kind must be one of {sorted(KINDS)}, '
                              f'got {short_repr(self.kind)}')
        if not 8 <= int(self.max_keypoints) <= 20000:
            raise ConfigError('local features: max_keypoints must be in 8..20000')
        if int(self.max_side) < 32:
            raise ConfigError('local features: max_side must be >= 32')

    @property
    def descriptor_bytes(self) -> int:
        return KINDS[self.kind]


@dataclass(frozen=True)
class LocalFeatures:
    keypoints: np.ndarray            # (n, 2) float32 pixels of the original image
    descriptors: np.ndarray          # (n, D) uint8
    image_size: tuple[int, int]      # (height, width) of the original image

    def __len__(self) -> int:
        return len(self.keypoints)


def extract(rgb: np.ndarray, config: LocalFeatureConfig = LocalFeatureConfig()) -> LocalFeatures:
    """Detect and describe up to ``config.max_keypoints`` keypoints of an RGB (or gray) image."""
    import cv2

    h, w = rgb.shape[:2]
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else np.asarray(rgb, np.uint8)
    scale = min(1.0, config.max_side / max(h, w))
    if scale < 1.0:
        gray = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    dim = KINDS[config.kind]
    kps, desc = _detector(config.kind, int(config.max_keypoints)).detectAndCompute(gray, None)
    if desc is None or not kps:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, dim), np.uint8), (h, w))
    if len(kps) > config.max_keypoints:  # SIFT keeps ties at the response cut-off
        keep = np.argsort([-k.response for k in kps], kind='stable')[:config.max_keypoints]
        kps, desc = [kps[i] for i in keep], desc[keep]
    pts = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
    pts = (pts + 0.5) / scale - 0.5  # pixel centres of the resized image -> original pixels
    if config.kind == 'rootsift':
        desc = np.clip(np.rint(_root(desc) * ROOTSIFT_SCALE), 0, 255).astype(np.uint8)
    return LocalFeatures(pts.astype(np.float32), np.ascontiguousarray(desc, np.uint8), (h, w))


def _detector(kind: str, max_features: int) -> Any:
    import cv2

    if kind == 'rootsift':
        return cv2.SIFT_create(nfeatures=max_features)
    return cv2.ORB_create(nfeatures=max_features)


def _root(sift: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise each SIFT descriptor, then sqrt (float32)."""
    d = sift.astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-12)
    return np.sqrt(d)


def _encoder_gray(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Gray image shrunk by the factor ``max_side / longer side`` (cv2 fx/fy): how the classical
    encoders have always read an image, so the vocabularies fitted in existing maps stay valid
    (``extract`` resizes to whole pixel sizes instead, to map keypoints back exactly)."""
    import cv2

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    scale = max_side / max(gray.shape)
    if max_side and scale < 1:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return gray


def rootsift(rgb: np.ndarray, max_features: int = 1000, max_side: int = 640) -> np.ndarray:
    """(n, 128) float32 RootSIFT descriptors of an RGB image (the sift_vlad encoder's local features)."""
    _, desc = _detector('rootsift', max_features).detectAndCompute(_encoder_gray(rgb, max_side), None)
    if desc is None:
        return np.zeros((0, 128), np.float32)
    return _root(desc)


def orb_bits(rgb: np.ndarray, max_features: int = 1000, max_side: int = 640) -> np.ndarray:
    """(n, 256) ORB descriptors unpacked to {0, 1} floats (L2 distance^2 == Hamming distance)."""
    _, desc = _detector('orb', max_features).detectAndCompute(_encoder_gray(rgb, max_side), None)
    if desc is None:
        return np.zeros((0, 256), np.float32)
    return np.unpackbits(desc, axis=1).astype(np.float32)


__all__ = ['KINDS', 'CameraIntrinsics', 'LocalFeatureConfig', 'LocalFeatures', 'camera_from_msg_fields',
           'extract', 'load_camera_info_yaml', 'orb_bits', 'rootsift']
