"""Local features stored in the map: round trip, online growth, old maps, loading checks."""
from __future__ import annotations

import os

import numpy as np
import pytest

from test.helpers import blob_image, textured_frames
from vpr_ros.errors import MapError
from vpr_ros.features import CameraIntrinsics, LocalFeatureConfig, extract
from vpr_ros.mapdb.local_features import LocalFeatureStore
from vpr_ros.mapdb.store import VprMap

IDENTITY = {'name': 'raw_pixels', 'config': {}, 'weights_fingerprint': None, 'dim': 4, 'multi_vector': False}
CAMERA = CameraIntrinsics((200.0, 0, 80, 0, 200.0, 60, 0, 0, 1), (0.01, 0, 0, 0, 0), 'plumb_bob', 160, 120)


def small_map(with_features: bool = True) -> VprMap:
    vmap = VprMap.empty(IDENTITY)
    if with_features:
        vmap.local_features = LocalFeatureStore(LocalFeatureConfig('rootsift', 100), CAMERA)
    for i, frame in enumerate(textured_frames(3, size=(120, 160))):
        feats = extract(blob_image(i, (120, 160)), vmap.local_features.config) if with_features else None
        vmap.add(frame.stamp, frame.pose, np.eye(4, dtype=np.float32)[i], 'test', features=feats)
    return vmap


def test_round_trip_keeps_every_place_and_grows_online(tmp_path) -> None:
    vmap = small_map()
    before = [vmap.local_features.get(i) for i in range(3)]
    assert all(len(f) > 10 for f in before)
    vmap.save(str(tmp_path / 'm'))
    for name in ('local_features.yaml', 'lf_keypoints.npy', 'lf_descriptors.npy', 'lf_offsets.npy'):
        assert os.path.isfile(tmp_path / 'm' / name)
    loaded = VprMap.load(str(tmp_path / 'm'))
    store = loaded.local_features
    assert store.camera == CAMERA and len(store) == 3
    for i, f in enumerate(before):
        g = store.get(i)
        np.testing.assert_array_equal(g.keypoints, f.keypoints)
        np.testing.assert_array_equal(g.descriptors, f.descriptors)
        assert g.image_size == (120, 160)
    frame = textured_frames(4, size=(120, 160))[3]
    feats = extract(blob_image(3, (120, 160)), store.config)
    loaded.add(frame.stamp, frame.pose, np.ones(4, np.float32) / 2, features=feats)
    assert len(store) == 4 and store.nbytes == store.keypoint_count * 136 + 8 * 5
    loaded.save(str(tmp_path / 'm'))
    again = VprMap.load(str(tmp_path / 'm')).local_features
    np.testing.assert_array_equal(again.get(3).descriptors, feats.descriptors)
    np.testing.assert_array_equal(again.get(1).keypoints, before[1].keypoints)
    with pytest.raises(MapError, match='local features'):
        loaded.add(frame.stamp + 1, frame.pose, np.ones(4, np.float32) / 2)


def test_a_map_without_local_features_still_loads(tmp_path) -> None:
    small_map(with_features=False).save(str(tmp_path / 'old'))
    vmap = VprMap.load(str(tmp_path / 'old'))
    assert vmap.local_features is None and len(vmap) == 3


def test_inconsistent_local_features_are_named_on_load(tmp_path) -> None:
    small_map().save(str(tmp_path / 'm'))
    offsets = np.load(tmp_path / 'm' / 'lf_offsets.npy')
    np.save(tmp_path / 'm' / 'lf_offsets.npy', offsets[:-1])
    with pytest.raises(MapError, match='lf_offsets.npy differ from the checksums'):
        VprMap.load(str(tmp_path / 'm'))
    # without the checksums (verify='none'), the consistency checks themselves name the problem
    with pytest.raises(MapError, match='local features: offsets'):
        VprMap.load(str(tmp_path / 'm'), verify='none')
    offsets[1] = offsets[-1] + 5
    np.save(tmp_path / 'm' / 'lf_offsets.npy', offsets)
    with pytest.raises(MapError, match='partition'):
        VprMap.load(str(tmp_path / 'm'), verify='none')
    np.save(tmp_path / 'm' / 'lf_descriptors.npy', np.zeros((3, 5), np.float32))
    with pytest.raises(MapError, match='descriptors'):
        VprMap.load(str(tmp_path / 'm'), verify='none')
