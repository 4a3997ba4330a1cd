import errno
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


def test_a_position_only_pose_round_trips_and_a_nan_one_is_refused(tmp_path):
    vmap = VprMap.empty(IDENTITY)
    vecs = l2_normalize(np.random.default_rng(1).normal(size=(3, 8)))
    vmap.add(1.0, Pose((1.0, 2.0, 3.0), None), vecs[0])   # orientation unknown (a zero quaternion)
    vmap.add(2.0, Pose.from_xy_yaw(4.0, 5.0, 0.5), vecs[1])
    vmap.add(3.0, None, vecs[2])
    with pytest.raises(MapError, match='must be finite'):
        vmap.add(4.0, Pose((float('nan'), 0.0, 0.0), None), vecs[0])
    vmap.save(str(tmp_path / 'm'))
    places = VprMap.load(str(tmp_path / 'm')).places
    assert places[0].pose == Pose((1.0, 2.0, 3.0), None)
    assert places[1].pose.yaw == pytest.approx(0.5) and places[2].pose is None
    assert places.has_pose.tolist() == [True, True, False]


def test_a_map_yaml_alias_bomb_is_refused_in_bounded_time(tmp_path):
    import time

    from test.test_textio import alias_bomb

    vmap, _ = make_map()
    path = str(tmp_path / 'm')
    vmap.save(path)
    manifest = os.path.join(path, 'map.yaml')
    text = open(manifest, encoding='utf-8').read()
    bomb = 'bomb:\n' + ''.join('  ' + line + '\n' for line in alias_bomb().splitlines())
    with open(manifest, 'a', encoding='utf-8') as fh:
        fh.write(bomb)
    with pytest.raises(MapError, match='manifest_sha256 line'):  # the digest line is no longer last
        VprMap.load(path)
    # a map written before the manifest digest: the YAML itself must be bounded
    body = text[:text.rindex('manifest_sha256:')]
    with open(manifest, 'w', encoding='utf-8') as fh:
        fh.write(body + bomb)
    t0 = time.perf_counter()
    with pytest.raises(MapError, match='expands to more than'):
        VprMap.load(path, verify='none')
    assert time.perf_counter() - t0 < 10


# ----- a failing write is one line, the old map intact, nothing left behind (issue 23) ---------------
def _map_bytes(path):
    return {name: open(os.path.join(path, name), 'rb').read() for name in sorted(os.listdir(path))}


def _big_map(n=3000, dim=64):
    vmap = VprMap.empty({**IDENTITY, 'dim': dim})
    vecs = l2_normalize(np.random.default_rng(1).normal(size=(n, dim)))
    for i in range(n):
        vmap.add(float(i), None, vecs[i])
    return vmap


def test_a_save_onto_a_full_disk_is_one_line_and_keeps_the_old_map(tmp_path):
    from test.helpers import siblings_left, small_tmpfs

    with small_tmpfs(str(tmp_path / 'disk'), '1m') as disk:
        path = os.path.join(disk, 'm')
        make_map(5)[0].save(path)
        before = _map_bytes(path)
        with pytest.raises(MapError) as err:
            _big_map().save(path)  # 3000 x 64 float32: 768 kB of descriptors alone
        assert 'no space left on device' in str(err.value) and 'unchanged' in str(err.value)
        assert '\n' not in str(err.value)
        assert _map_bytes(path) == before and len(VprMap.load(path)) == 5
        assert siblings_left(path) == []


def _fail_with(code):
    def fail(*_a, **_k):
        raise OSError(code, os.strerror(code))
    return fail


@pytest.mark.parametrize('code, cause', [(errno.ENOSPC, 'no space left on device'),
                                         (errno.EDQUOT, 'disk quota exceeded'),
                                         (errno.EROFS, 'read-only file system'),
                                         (errno.EACCES, 'permission denied')])
@pytest.mark.parametrize('stage', ['descriptors', 'places', 'index', 'manifest', 'swap'])
def test_every_write_failure_names_its_cause_and_keeps_the_old_map(tmp_path, monkeypatch, stage, code,
                                                                   cause):
    """Injected where a real disk fills or refuses (no root needed): each file's writer and the swap."""
    import faiss

    from test.helpers import siblings_left
    from vpr_ros.mapdb import integrity

    path = str(tmp_path / 'm')
    make_map(5)[0].save(path)
    before = _map_bytes(path)
    if stage == 'descriptors':
        monkeypatch.setattr(np, 'save', _fail_with(code))
    elif stage == 'places':
        def full(*_a, **_k):
            raise sqlite3.OperationalError('database or disk is full')
        monkeypatch.setattr(sqlite3, 'connect', full)
        cause = 'database or disk is full'
    elif stage == 'index':
        def short_write(index, name):
            raise RuntimeError(f"Error in write_index: 'ret == (size * 4)' failed: write error in {name}: "
                               f'1 != 9 ({os.strerror(code)})')
        monkeypatch.setattr(faiss, 'write_index', short_write)
    elif stage == 'manifest':
        monkeypatch.setattr(integrity, 'digest_files', _fail_with(code))
    else:
        monkeypatch.setattr(integrity, 'exchange', _fail_with(code))
    with pytest.raises(MapError) as err:
        make_map(7)[0].save(path)
    message = str(err.value)
    assert '\n' not in message and cause in message and 'unchanged' in message, message
    monkeypatch.undo()
    assert _map_bytes(path) == before and siblings_left(path) == []


def test_a_short_write_without_an_errno_on_a_full_disk_says_so(tmp_path, monkeypatch):
    # numpy reports a short write as OSError('768000 requested and 247776 written'), errno None
    from vpr_ros.mapdb import integrity

    def short(*_a, **_k):
        raise OSError('768000 requested and 247776 written')

    monkeypatch.setattr(np, 'save', short)
    monkeypatch.setattr(integrity, '_NEARLY_FULL_BYTES', 1 << 62)  # the disk "is" full
    with pytest.raises(MapError, match='no space left on device; nothing was left behind'):
        make_map(3)[0].save(str(tmp_path / 'm'))


# ----- maps are readable by the accounts the umask allows; a refused read says why -----------------
@pytest.mark.parametrize('umask, dir_mode, file_mode', [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640),
                                                        (0o002, 0o775, 0o664)])
def test_a_map_gets_the_modes_the_umask_allows(tmp_path, umask, dir_mode, file_mode):
    old = os.umask(umask)
    try:
        path = str(tmp_path / 'm')
        make_map(3)[0].save(path)
        make_map(4)[0].save(path)  # a replacing save too
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == dir_mode  # mkdtemp made it 0700: no other account could read it
    assert {os.stat(os.path.join(path, n)).st_mode & 0o777 for n in os.listdir(path)} == {file_mode}


_LOAD_AS_OTHER_USER = '''
import os, sys
import faiss  # noqa: F401  (imported before the account changes)
from vpr_ros.errors import MapError
from vpr_ros.mapdb.store import VprMap
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
try:
    VprMap.load(sys.argv[1])
except MapError as exc:
    print('refused:', exc)
else:
    print('loaded')
'''


@pytest.fixture
def shared_dir():
    """A directory every account can enter (pytest's tmp_path is 0700)."""
    import shutil
    import tempfile

    directory = tempfile.mkdtemp(prefix='vpr_shared_')
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _load_as_other_user(path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, '-c', _LOAD_AS_OTHER_USER, path], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-800:]
    return done.stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason='needs root to load as a second account')
def test_a_second_account_can_load_a_map(shared_dir):
    old = os.umask(0o022)
    try:
        make_map(3)[0].save(os.path.join(shared_dir, 'm'))
    finally:
        os.umask(old)
    assert _load_as_other_user(os.path.join(shared_dir, 'm')) == 'loaded'


@pytest.mark.parametrize('target', ['', 'descriptors.npy', 'map.yaml', 'places.sqlite'])
def test_a_load_refused_by_permissions_says_permission_denied(shared_dir, target):
    path = os.path.join(shared_dir, 'm')
    make_map(3)[0].save(path)
    os.chmod(os.path.join(path, target) if target else path, 0o700 if not target else 0o000)
    out = _load_as_other_user(path)
    assert out.startswith('refused: permission denied'), out
    assert len(out.splitlines()) == 1
