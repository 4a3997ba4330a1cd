import os
import sqlite3

import numpy as np
import pytest

from vpr_ros.encoders.base import l2_normalize
from vpr_ros.errors import MapError
from vpr_ros.frames import Pose
from vpr_ros.mapdb.store import VprMap

IDENTITY = {'name': 'fake', 'config': {'a': 1}, 'weights_fingerprint': 'none', 'dim': 8,
            'multi_vector': False}


def make_map(n=5, dtype='float32', index='flat'):
    rng = np.random.default_rng(0)
    vmap = VprMap.empty(IDENTITY, index=index, dtype=dtype)
    vecs = l2_normalize(rng.normal(size=(n, 8)))
    for i in range(n):
        vmap.add(10.0 + i, Pose.from_xy_yaw(i, 2 * i, 0.1 * i), vecs[i], f'src{i}',
                 thumbnail=np.full((20, 30, 3), (i * 40) % 256, np.uint8))
    return vmap, vecs


def test_roundtrip_and_search(tmp_path):
    vmap, vecs = make_map()
    assert vmap.search(vecs[3], 2)[0].place_id == 3
    path = str(tmp_path / 'm')
    vmap.save(path)
    loaded = VprMap.load(path, IDENTITY)
    assert len(loaded) == 5 and loaded.meta.count == 5
    assert loaded.places[2].pose.position == pytest.approx((2.0, 4.0, 0.0))
    assert loaded.places[2].source == 'src2'
    best = loaded.search(vecs[4], 3)
    assert best[0].place_id == 4 and best[0].score == pytest.approx(1.0, abs=1e-5)
    assert loaded.thumbnail(1).shape == (96, 128, 3)


def test_exclude_and_incremental_add():
    vmap, vecs = make_map()
    assert vmap.search(vecs[1], 1, exclude={1})[0].place_id != 1
    _ = vmap.index
    new = vmap.add(99.0, None, vecs[0], 'again')
    assert {m.place_id for m in vmap.search(vecs[0], 2)} == {0, new.id}


@pytest.mark.parametrize('index', ['flat', 'fp16', 'hnsw16'])
def test_index_kinds(tmp_path, index):
    vmap, vecs = make_map(20, index=index)
    vmap.save(str(tmp_path / 'm'))
    assert VprMap.load(str(tmp_path / 'm')).search(vecs[7], 1)[0].place_id == 7


def test_float16_storage(tmp_path):
    vmap, vecs = make_map(dtype='float16')
    vmap.save(str(tmp_path / 'm'))
    loaded = VprMap.load(str(tmp_path / 'm'))
    assert loaded.descriptors.dtype == np.float16
    assert loaded.search(vecs[2], 1)[0].place_id == 2


def test_other_encoder_is_refused(tmp_path):
    vmap, _ = make_map()
    vmap.save(str(tmp_path / 'm'))
    with pytest.raises(MapError, match="config a: map 1 vs requested 2"):
        VprMap.load(str(tmp_path / 'm'), {**IDENTITY, 'config': {'a': 2}})
    with pytest.raises(MapError, match="encoder 'fake', requested 'other'"):
        VprMap.load(str(tmp_path / 'm'), {**IDENTITY, 'name': 'other'})


def test_missing_and_corrupt_maps(tmp_path):
    with pytest.raises(MapError, match='not found'):
        VprMap.load(str(tmp_path / 'nope'))
    vmap, _ = make_map()
    path = str(tmp_path / 'm')
    vmap.save(path)
    np.save(os.path.join(path, 'owners.npy'), np.zeros(2, np.int64))
    with pytest.raises(MapError, match='corrupt'):
        VprMap.load(path)
    with open(os.path.join(path, 'descriptors.npy'), 'wb') as fh:
        fh.write(b'garbage')
    with pytest.raises(MapError, match='corrupt'):
        VprMap.load(path)
    with open(os.path.join(path, 'map.yaml'), 'w') as fh:
        fh.write('schema_version: 99\nencoder: {}\n')
    with pytest.raises(MapError, match='schema version 99'):
        VprMap.load(path)


def test_rebuilds_index_when_index_file_is_corrupt(tmp_path):
    vmap, vecs = make_map()
    path = str(tmp_path / 'm')
    vmap.save(path)
    with open(os.path.join(path, 'index.faiss'), 'wb') as fh:
        fh.write(b'junk')
    assert VprMap.load(path).search(vecs[0], 1)[0].place_id == 0


def test_interrupted_save_leaves_old_map_intact(tmp_path, monkeypatch):
    path = str(tmp_path / 'm')
    old, _ = make_map(3)
    old.save(path)
    new, _ = make_map(6)

    def boom(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sqlite3, 'connect', boom)
    with pytest.raises(KeyboardInterrupt):
        new.save(path)
    monkeypatch.undo()
    assert len(VprMap.load(path)) == 3
    assert [n for n in os.listdir(tmp_path) if n != 'm'] == []  # no temp dirs left behind


def test_refuses_to_replace_a_non_map_directory(tmp_path):
    (tmp_path / 'm').mkdir()
    (tmp_path / 'm' / 'precious.txt').write_text('x')
    vmap, _ = make_map()
    with pytest.raises(MapError, match='not a vpr_ros map'):
        vmap.save(str(tmp_path / 'm'))
    assert (tmp_path / 'm' / 'precious.txt').exists()


def test_wrong_dim_add_is_refused():
    vmap, _ = make_map()
    with pytest.raises(MapError, match='dim'):
        vmap.add(0.0, None, np.zeros(4, np.float32))


def test_pose_frames_round_trip_and_old_maps_load_with_frames_unknown(tmp_path):
    import yaml

    vmap, _ = make_map(3)
    vmap.meta.frame_id, vmap.meta.child_frame_id = 'odom', 'base_link'
    path = str(tmp_path / 'm')
    vmap.save(path)
    loaded = VprMap.load(path)
    assert (loaded.meta.frame_id, loaded.meta.child_frame_id) == ('odom', 'base_link')
    meta_path = os.path.join(path, 'map.yaml')
    with open(meta_path, encoding='utf-8') as fh:
        data = yaml.safe_load(fh)
    del data['frame_id'], data['child_frame_id'], data['manifest_sha256']  # as written before frames
    with open(meta_path, 'w', encoding='utf-8') as fh:
        yaml.safe_dump(data, fh)
    assert (VprMap.load(path).meta.frame_id, VprMap.load(path).meta.child_frame_id) == ('', '')
    data['frame_id'] = 5
    with open(meta_path, 'w', encoding='utf-8') as fh:
        yaml.safe_dump(data, fh)
    with pytest.raises(MapError, match='frame_id must be a string'):
        VprMap.load(path)


def _snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def _nav2_folder(tmp_path):
    nav2 = tmp_path / 'nav2'
    nav2.mkdir()
    (nav2 / 'map.yaml').write_text('image: office.pgm\nresolution: 0.05\norigin: [0, 0, 0]\n')
    (nav2 / 'office.pgm').write_bytes(b'P5\n2 2\n255\n\x00\x01\x02\x03')
    (nav2 / 'NOTES.txt').write_text('mine')
    return nav2


def test_a_nav2_map_folder_is_never_replaced(tmp_path):
    # nav2/map_server folders hold a map.yaml too: before the format marker, save() deleted them whole.
    nav2 = _nav2_folder(tmp_path)
    before = _snapshot(nav2)
    vmap, _ = make_map()
    with pytest.raises(MapError, match="not a vpr_ros map's"):
        vmap.save(str(nav2))
    assert _snapshot(nav2) == before
    assert sorted(os.listdir(tmp_path)) == ['nav2']  # no temporary sibling written either


def test_a_vpr_ros_map_with_a_user_file_beside_it_is_not_replaced(tmp_path):
    path = tmp_path / 'm'
    make_map(3)[0].save(str(path))
    (path / 'README.txt').write_text('how I built it')
    before = _snapshot(path)
    with pytest.raises(MapError, match='did not write.*README.txt'):
        make_map(4)[0].save(str(path))
    assert _snapshot(path) == before


def test_maps_carry_the_format_marker_and_maps_without_it_are_still_replaced(tmp_path):
    import yaml

    path = tmp_path / 'm'
    make_map(3)[0].save(str(path))
    meta = yaml.safe_load((path / 'map.yaml').read_text())
    assert meta['format'] == 'vpr_ros.map'
    del meta['format'], meta['manifest_sha256']  # a map written before the marker: schema + encoder
    (path / 'map.yaml').write_text(yaml.safe_dump(meta))
    make_map(5)[0].save(str(path))
    assert len(VprMap.load(str(path))) == 5


def test_a_foreign_format_marker_is_refused_on_load(tmp_path):
    path = tmp_path / 'm'
    make_map(3)[0].save(str(path))
    text = (path / 'map.yaml').read_text().replace('format: vpr_ros.map', 'format: other.tool')
    text = text[:text.index('manifest_sha256:')]  # no digest: the marker itself must refuse it
    (path / 'map.yaml').write_text(text)
    with pytest.raises(MapError, match='not a vpr_ros map'):
        VprMap.load(str(path), verify='none')


@pytest.mark.parametrize('kind', ['file', 'symlink'])
def test_a_target_that_is_not_a_directory_is_refused(tmp_path, kind):
    target = tmp_path / 't'
    if kind == 'file':
        target.write_text('data')
    else:
        (tmp_path / 'real').mkdir()
        target.symlink_to(tmp_path / 'real')
    with pytest.raises(MapError, match='not a directory|symbolic link'):
        make_map(2)[0].save(str(target))
    assert target.is_symlink() if kind == 'symlink' else target.read_text() == 'data'
