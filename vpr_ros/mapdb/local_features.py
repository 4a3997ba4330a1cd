"""Local features of map places, stored beside the map for geometric verification.

Every place of a map can carry up to ``max_keypoints`` keypoints with binary-sized descriptors
(what ``vpr_ros.features.extract`` detects: RootSIFT quantised to uint8, 128 bytes per keypoint, or
ORB, 32 bytes), with float32 pixel coordinates of the original image.

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

import os
from dataclasses import dataclass, field

import numpy as np
import yaml

from vpr_ros.errors import ConfigError, MapError
from vpr_ros.features import CameraIntrinsics, LocalFeatureConfig, LocalFeatures
from vpr_ros.mapdb.integrity import read_error
from vpr_ros.textio import load_yaml_file

META_FILE = 'local_features.yaml'
FILES = ('lf_keypoints.npy', 'lf_descriptors.npy', 'lf_offsets.npy')
FORMAT_VERSION = 1


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



__all__ = ['FILES', 'META_FILE', 'LocalFeatureStore']
