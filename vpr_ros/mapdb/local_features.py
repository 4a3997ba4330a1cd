"""Local features of map places, for geometric verification of retrieval candidates.

Every place of a map can carry up to ``max_keypoints`` keypoints with binary-sized descriptors:
``rootsift`` (SIFT, L1-normalised, square-rooted, then quantised to uint8 as ``round(512 * v)``
clipped to 255: 128 bytes per keypoint) or ``orb`` (the 256-bit ORB descriptor, 32 bytes).
Keypoint coordinates are float32 pixels of the original image (``x`` right, ``y`` down), so
camera intrinsics apply to them directly.

On disk, beside the map's other files (written in the same temporary directory, so atomically
with the rest; no pickle)::

    local_features.yaml       kind, max_keypoints, max_side, places, keypoints, camera (optional)
    lf_keypoints.npy          (total, 2) float32 pixel coordinates
    lf_descriptors.npy        (total, 128) uint8 (rootsift) or (total, 32) uint8 (orb)
    lf_offsets.npy            (places + 1,) int64: place i owns rows offsets[i]:offsets[i+1]

``camera`` is the intrinsics of the map images (ROS camera_info fields), when known. A map
without these files still loads; verification then reports that it is unavailable.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml

from vpr_ros.errors import ConfigError, MapError
from vpr_ros.mapdb.integrity import read_error
from vpr_ros.settings import setting
from vpr_ros.textio import load_yaml_file, short_repr

KINDS = {'rootsift': 128, 'orb': 32}
ROOTSIFT_SCALE = 512.0
META_FILE = 'local_features.yaml'
FILES = ('lf_keypoints.npy', 'lf_descriptors.npy', 'lf_offsets.npy')
FORMAT_VERSION = 1


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
    if config.kind == 'rootsift':
        detector = cv2.SIFT_create(nfeatures=int(config.max_keypoints))
    else:
        detector = cv2.ORB_create(nfeatures=int(config.max_keypoints))
    kps, desc = detector.detectAndCompute(gray, None)
    if desc is None or not kps:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, dim), np.uint8), (h, w))
    if len(kps) > config.max_keypoints:  # SIFT keeps ties at the response cut-off
        keep = np.argsort([-k.response for k in kps], kind='stable')[:config.max_keypoints]
        kps, desc = [kps[i] for i in keep], desc[keep]
    pts = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
    pts = (pts + 0.5) / scale - 0.5  # pixel centres of the resized image -> original pixels
    if config.kind == 'rootsift':
        d = desc.astype(np.float32)
        d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-12)
        desc = np.clip(np.rint(np.sqrt(d) * ROOTSIFT_SCALE), 0, 255).astype(np.uint8)
    return LocalFeatures(pts.astype(np.float32), np.ascontiguousarray(desc, np.uint8), (h, w))


@dataclass
class LocalFeatureStore:
    """Per-place local features: loaded arrays plus places appended since (online growth)."""

    config: LocalFeatureConfig = field(default_factory=LocalFeatureConfig)
    camera: CameraIntrinsics | None = None
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    _keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    _descriptors: np.ndarray | None = None
    _offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    _added: list[LocalFeatures] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.config.validate()
        if self._descriptors is None:
            self._descriptors = np.zeros((0, self.config.descriptor_bytes), np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1 + len(self._added)

    def add(self, features: LocalFeatures) -> None:
        if features.descriptors.shape[1:] != (self.config.descriptor_bytes,):
            raise MapError(f'local features: descriptors {features.descriptors.shape} do not match '
                           f'{self.config.kind}')
        self._added.append(features)
        self.image_sizes.append(tuple(features.image_size))

    def extend(self, other: 'LocalFeatureStore') -> None:
        """Append every place of ``other`` (same features and camera) in bulk."""
        if other.config != self.config or other.camera != self.camera:
            raise MapError(f'local features differ ({self.config.kind} {self.config.max_keypoints} vs '
                           f'{other.config.kind} {other.config.max_keypoints}, or the camera intrinsics)')
        self._consolidate()
        other._consolidate()
        self._keypoints = np.concatenate([self._keypoints, other._keypoints])
        self._descriptors = np.concatenate([self._descriptors, other._descriptors])
        self._offsets = np.concatenate([self._offsets, other._offsets[1:] + self._offsets[-1]])
        self.image_sizes.extend(other.image_sizes)

    def get(self, place_id: int) -> LocalFeatures:
        loaded = len(self._offsets) - 1
        if place_id < loaded:
            a, b = int(self._offsets[place_id]), int(self._offsets[place_id + 1])
            return LocalFeatures(self._keypoints[a:b], self._descriptors[a:b], self.image_sizes[place_id])
        return self._added[place_id - loaded]

    @property
    def keypoint_count(self) -> int:
        return int(self._offsets[-1]) + sum(len(f) for f in self._added)

    @property
    def nbytes(self) -> int:
        per_kp = 2 * 4 + self.config.descriptor_bytes
        return self.keypoint_count * per_kp + 8 * (len(self) + 1)

    def _consolidate(self) -> None:
        if not self._added:
            return
        self._keypoints = np.concatenate([self._keypoints, *[f.keypoints for f in self._added]])
        self._descriptors = np.concatenate([self._descriptors, *[f.descriptors for f in self._added]])
        counts = np.cumsum([len(f) for f in self._added]) + self._offsets[-1]
        self._offsets = np.concatenate([self._offsets, counts]).astype(np.int64)
        self._added = []

    def write(self, directory: str) -> None:
        self._consolidate()
        np.save(os.path.join(directory, 'lf_keypoints.npy'), self._keypoints.astype(np.float32))
        np.save(os.path.join(directory, 'lf_descriptors.npy'), self._descriptors.astype(np.uint8))
        np.save(os.path.join(directory, 'lf_offsets.npy'), self._offsets.astype(np.int64))
        meta = {'format_version': FORMAT_VERSION, 'kind': self.config.kind,
                'max_keypoints': int(self.config.max_keypoints), 'max_side': int(self.config.max_side),
                'places': len(self), 'keypoints': int(self._offsets[-1]),
                'image_sizes': [[int(h), int(w)] for h, w in self.image_sizes],
                'camera': self.camera.to_dict() if self.camera else None}
        with open(os.path.join(directory, META_FILE), 'w', encoding='utf-8') as fh:
            fh.write(yaml.safe_dump(meta, sort_keys=False, default_flow_style=None))

    @classmethod
    def read(cls, directory: str, places: int, shown: str | None = None,
             present: bool | None = None) -> 'LocalFeatureStore | None':
        """The map's local features, None when it has none; MapError when they are inconsistent.

        ``shown``: the map's name in messages (``directory`` may be a pinned snapshot's /proc path).
        ``present``: whether the map was written with local features (None: whether the files exist).
        """
        meta_path = os.path.join(directory, META_FILE)
        if not (os.path.isfile(meta_path) if present is None else present):
            return None

        def corrupt(why: str) -> MapError:
            return MapError(f'{shown or directory} is corrupt: local features: {why}')

        try:
            meta = load_yaml_file(meta_path, META_FILE, MapError)
            arrays = [np.load(os.path.join(directory, f), allow_pickle=False) for f in FILES]
        except PermissionError as exc:
            raise read_error(shown or directory, exc) from exc
        except (OSError, ValueError, MapError) as exc:
            raise corrupt(f'{type(exc).__name__}: {str(exc)[:200]}') from exc
        if not isinstance(meta, dict) or meta.get('format_version') != FORMAT_VERSION:
            version = meta.get('format_version') if isinstance(meta, dict) else None
            raise corrupt(f'unsupported {META_FILE} (format_version {version})')
        try:
            config = LocalFeatureConfig(str(meta['kind']), int(meta['max_keypoints']), int(meta['max_side']))
            config.validate()
            camera = CameraIntrinsics.from_dict(meta['camera'], META_FILE) if meta.get('camera') else None
            sizes = [(int(h), int(w)) for h, w in meta['image_sizes']]
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise corrupt(f'{META_FILE}: {exc}') from exc
        kps, desc, offsets = arrays
        if kps.ndim != 2 or kps.shape[1] != 2 or kps.dtype != np.float32:
            raise corrupt(f'keypoints {kps.shape} {kps.dtype}, expected (n, 2) float32')
        if desc.ndim != 2 or desc.shape[1] != config.descriptor_bytes or desc.dtype != np.uint8:
            raise corrupt(f'descriptors {desc.shape} {desc.dtype}, '
                          f'expected (n, {config.descriptor_bytes}) uint8')
        if offsets.ndim != 1 or offsets.dtype != np.int64 or len(offsets) != places + 1:
            raise corrupt(f'offsets {offsets.shape} {offsets.dtype}, expected ({places + 1},) int64 for '
                          f'{places} places')
        if (offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != len(kps)
                or len(kps) != len(desc)):
            raise corrupt('offsets do not partition the keypoint rows')
        if int(meta.get('places', -1)) != places or len(sizes) != places:
            raise corrupt(f"{META_FILE} says {meta.get('places')} places, the map has {places}")
        return cls(config, camera, sizes, kps, desc, offsets.astype(np.int64))


__all__ = ['CameraIntrinsics', 'LocalFeatureConfig', 'LocalFeatureStore', 'LocalFeatures',
           'camera_from_msg_fields', 'extract', 'load_camera_info_yaml']
