import numpy as np
import pytest

from vpr_ros.cli import main
from vpr_ros.encoders.base import l2_normalize
from vpr_ros.errors import MapError
from vpr_ros.frames import Pose
from vpr_ros.mapdb.merge import merge_maps
from vpr_ros.mapdb.store import VprMap

IDENTITY = {'name': 'fake', 'config': {'a': 1}, 'weights_fingerprint': 'w', 'dim': 8, 'multi_vector': False}


def write_map(path, n, seed, identity=IDENTITY, state=None, index='flat'):
    vecs = l2_normalize(np.random.default_rng(seed).normal(size=(n, 8))).astype(np.float32)
    vmap = VprMap.empty(identity, index=index, encoder_state=state)
    for i, v in enumerate(vecs):
        vmap.add(100.0 * seed + i, Pose.from_xy_yaw(i, seed, 0.0), v, f'robot{seed}',
                 thumbnail=np.full((20, 30, 3), 10 * seed, np.uint8))
    vmap.save(str(path))
    return vecs


def test_merge_keeps_places_poses_and_sessions(tmp_path):
    a = write_map(tmp_path / 'a', 5, 1)
    b = write_map(tmp_path / 'b', 7, 2)
    merged = merge_maps([str(tmp_path / 'a'), str(tmp_path / 'b')], ['day', 'night'])
    merged.save(str(tmp_path / 'c'))
    c = VprMap.load(str(tmp_path / 'c'), IDENTITY)
    assert len(c) == 12 and c.index.ntotal == 12
    assert np.allclose(c.descriptors, np.concatenate([a, b]), atol=1e-6)
    assert c.places[5].pose.position == pytest.approx((0.0, 2.0, 0.0)) and c.places[5].source == 'robot2'
    assert c.places[5].stamp == pytest.approx(200.0)
    assert c.meta.build['sessions'] == [
        {'name': 'day', 'origin': str(tmp_path / 'a'), 'first': 0, 'last': 4},
        {'name': 'night', 'origin': str(tmp_path / 'b'), 'first': 5, 'last': 11}]
    assert c.search(b[3], 1)[0].place_id == 8
    assert c.thumbnail(6) is not None
    # merging a merge keeps its sessions
    write_map(tmp_path / 'd', 3, 3)
    again = merge_maps([str(tmp_path / 'c'), str(tmp_path / 'd')])
    assert [s['name'] for s in again.meta.build['sessions']] == ['day', 'night', 'd']
    assert again.meta.build['sessions'][-1]['first'] == 12


def write_map_with_features(path, n, seed, config=None, camera=None):
    from test.helpers import blob_image
    from vpr_ros.features import LocalFeatureConfig, extract
    from vpr_ros.mapdb.local_features import LocalFeatureStore

    vecs = l2_normalize(np.random.default_rng(seed).normal(size=(n, 8))).astype(np.float32)
    vmap = VprMap.empty(IDENTITY)
    vmap.local_features = LocalFeatureStore(config or LocalFeatureConfig('rootsift', 100), camera)
    for i, v in enumerate(vecs):
        feats = extract(blob_image(10 * seed + i, (120, 160)), vmap.local_features.config)
        vmap.add(100.0 * seed + i, Pose.from_xy_yaw(i, seed, 0.0), v, f'robot{seed}', features=feats)
    vmap.save(str(path))
    return vmap.local_features


def test_merge_keeps_local_features_for_verification(tmp_path):
    a = write_map_with_features(tmp_path / 'a', 3, 1)
    b = write_map_with_features(tmp_path / 'b', 4, 2)
    merge_maps([str(tmp_path / 'a'), str(tmp_path / 'b')]).save(str(tmp_path / 'c'))
    c = VprMap.load(str(tmp_path / 'c'), IDENTITY).local_features
    assert len(c) == 7 and c.keypoint_count == a.keypoint_count + b.keypoint_count
    for i, expected in enumerate([a.get(j) for j in range(3)] + [b.get(j) for j in range(4)]):
        got = c.get(i)
        assert len(got) > 10 and got.image_size == expected.image_size
        assert np.array_equal(got.descriptors, expected.descriptors)
        assert np.array_equal(got.keypoints, expected.keypoints)


def test_merge_refuses_maps_whose_local_features_differ(tmp_path):
    from vpr_ros.features import LocalFeatureConfig

    write_map_with_features(tmp_path / 'sift', 2, 1)
    write_map_with_features(tmp_path / 'orb', 2, 2, LocalFeatureConfig('orb', 100))
    write_map(tmp_path / 'none', 2, 3)
    with pytest.raises(MapError, match='cannot be merged: local features differ'):
        merge_maps([str(tmp_path / 'sift'), str(tmp_path / 'orb')])
    with pytest.raises(MapError, match='only one of the two maps keeps local features'):
        merge_maps([str(tmp_path / 'none'), str(tmp_path / 'sift')])


def test_merge_grows_a_trained_ivf_index_without_retraining(tmp_path):
    write_map(tmp_path / 'a', 300, 1, index='ivf4')
    write_map(tmp_path / 'b', 50, 2, index='ivf4')
    merged = merge_maps([str(tmp_path / 'a'), str(tmp_path / 'b')])
    assert merged.index.ntotal == 350
    assert merged.meta.build['index_training']['vectors'] == 300


def test_refuses_other_encoder_or_fitted_state(tmp_path, capsys):
    write_map(tmp_path / 'a', 4, 1)
    write_map(tmp_path / 'b', 4, 2, identity={**IDENTITY, 'config': {'a': 2}})
    write_map(tmp_path / 'v1', 4, 3, state={'vocab': np.ones((2, 8), np.float32)})
    write_map(tmp_path / 'v2', 4, 4, state={'vocab': np.zeros((2, 8), np.float32)})
    with pytest.raises(MapError, match=r'another fake configuration .* config a: map 2 vs requested 1 '
                                       r'\(map: .*b, requested: .*a\)'):
        merge_maps([str(tmp_path / 'a'), str(tmp_path / 'b')])
    with pytest.raises(MapError, match='fitted different encoder state'):
        merge_maps([str(tmp_path / 'v1'), str(tmp_path / 'v2')])
    assert main(['merge-maps', str(tmp_path / 'a'), str(tmp_path / 'b'), '--out', str(tmp_path / 'c')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'another fake configuration' in err[0]
    assert not (tmp_path / 'c').exists()


def test_an_encoder_mismatch_names_each_map_with_its_own_encoder(tmp_path):
    write_map(tmp_path / 'a', 4, 1)
    write_map(tmp_path / 'b', 4, 2, identity={**IDENTITY, 'name': 'other'})
    with pytest.raises(MapError) as err:
        merge_maps([str(tmp_path / 'a'), str(tmp_path / 'b')])
    assert f"{tmp_path / 'b'} was built with encoder 'other', {tmp_path / 'a'} with 'fake'" in str(err.value)


def test_cli_merge(tmp_path, capsys):
    write_map(tmp_path / 'a', 4, 1)
    write_map(tmp_path / 'b', 6, 2)
    assert main(['merge-maps', str(tmp_path / 'a'), str(tmp_path / 'b'), '--out', str(tmp_path / 'c')]) == 0
    assert '10 places in 2 sessions (a: 4, b: 6)' in capsys.readouterr().out
    assert len(VprMap.load(str(tmp_path / 'c'))) == 10
