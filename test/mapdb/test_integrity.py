"""A corrupt map is refused in one line (or its derived index rebuilt); saves are atomic for readers."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import zipfile

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test.mapdb.test_store import IDENTITY, make_map
from vpr_ros.errors import MapError
from vpr_ros.mapdb import integrity
from vpr_ros.mapdb.store import VprMap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def saved(tmp_path):
    vmap, vecs = make_map(6)
    vmap.encoder_state = {'pca.mean': np.zeros(8, np.float32)}
    path = str(tmp_path / 'm')
    vmap.save(path)
    return path, vecs


def _edit_yaml(path, edit):
    """Edit map.yaml as a map written before its manifest digest (edits of a digested one are refused)."""
    with open(os.path.join(path, 'map.yaml'), encoding='utf-8') as fh:
        data = yaml.safe_load(fh)
    del data['manifest_sha256']
    edit(data)
    with open(os.path.join(path, 'map.yaml'), 'w', encoding='utf-8') as fh:
        yaml.safe_dump(data, fh)


def _truncate(name, keep=0.5):
    def corrupt(path):
        full = os.path.join(path, name)
        data = open(full, 'rb').read()
        open(full, 'wb').write(data[:int(len(data) * keep)])
    return corrupt


def _break_npz_crc(path):
    full = os.path.join(path, 'encoder_state.npz')
    data = bytearray(open(full, 'rb').read())
    with zipfile.ZipFile(full) as zf:
        info = zf.infolist()[0]
    at = info.header_offset + 30 + len(info.filename) + (info.compress_size // 2)
    data[at] ^= 0xFF
    open(full, 'wb').write(bytes(data))


def _text_coordinate(path):
    with sqlite3.connect(os.path.join(path, 'places.sqlite')) as db:
        db.execute("UPDATE places SET x = 'north' WHERE id = 2")
    db.close()


def _yaml_bytes(data):
    def corrupt(path):
        open(os.path.join(path, 'map.yaml'), 'ab').write(data)
    return corrupt


def _set_encoder(**changes):
    def corrupt(path):
        def edit(data):
            for key, value in changes.items():
                if key == 'encoder':
                    data['encoder'] = value
                elif value is None:
                    data['encoder'].pop(key)
                else:
                    data['encoder'][key] = value
        _edit_yaml(path, edit)
    return corrupt


CORRUPTIONS = {
    'empty descriptors.npy': _truncate('descriptors.npy', 0),
    'empty owners.npy': _truncate('owners.npy', 0),
    'empty encoder_state.npz': _truncate('encoder_state.npz', 0),
    'truncated encoder_state.npz': _truncate('encoder_state.npz', 0.6),
    'npz with a bad CRC': _break_npz_crc,
    'non-UTF-8 map.yaml': _yaml_bytes(b'\nbuild: {note: "\xff\xfe"}\n'),
    'encoder.dim missing': _set_encoder(dim=None),
    'encoder.dim abc': _set_encoder(dim='abc'),
    'encoder a string': _set_encoder(encoder='effnet_gem'),
    'encoder.name missing': _set_encoder(name=None),
    'encoder.config a list': _set_encoder(config=[1, 2]),
    'text coordinate in places.sqlite': _text_coordinate,
}


@pytest.mark.parametrize('verify', ['full', 'none'])
@pytest.mark.parametrize('what', sorted(CORRUPTIONS))
def test_corrupt_map_is_one_map_error(saved, what, verify):
    path, _ = saved
    CORRUPTIONS[what](path)
    with pytest.raises(MapError) as err:
        VprMap.load(path, verify=verify)
    assert '\n' not in str(err.value)


@pytest.mark.parametrize('what', ['empty owners.npy', 'encoder.config a list',
                                  'text coordinate in places.sqlite', 'non-UTF-8 map.yaml'])
def test_cli_prints_one_line_and_exits_2_for_a_corrupt_map(saved, what, capsys, tmp_path):
    from vpr_ros.cli import main

    path, _ = saved
    CORRUPTIONS[what](path)
    for argv in (['map-info', path], ['evaluate', '--map', path, '--queries', str(tmp_path)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count('\n') == 0 and 'error' in err and 'Traceback' not in err


@pytest.mark.parametrize('verify', ['full', 'size', 'none'])  # checksum, or the sampled reconstruction
def test_flipped_bits_in_the_index_are_detected_and_it_is_rebuilt(saved, caplog, verify):
    path, vecs = saved
    full = os.path.join(path, 'index.faiss')
    data = bytearray(open(full, 'rb').read())
    for at in range(len(data) - 6 * 8 * 4, len(data), 7):  # inside the stored vectors
        data[at] ^= 0x7F
    open(full, 'wb').write(bytes(data))
    vmap = VprMap.load(path, verify=verify)
    assert 'index.faiss' in caplog.text and 'rebuil' in caplog.text
    best = vmap.search(vecs[3], 2)
    assert best[0].place_id == 3 and best[0].score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize('corrupt, message', [
    (lambda p: np.save(os.path.join(p, 'owners.npy'), np.arange(6)[::-1].copy()), 'place order'),
    (lambda p: np.save(os.path.join(p, 'owners.npy'), np.array([0, 1, 2, 3, 4, 9])), 'outside'),
    (lambda p: np.save(os.path.join(p, 'descriptors.npy'), np.full((6, 8), np.nan, np.float32)), 'NaN'),
    (lambda p: np.save(os.path.join(p, 'descriptors.npy'), np.ones((6, 8), np.float32)), 'L2-normalised'),
])
def test_content_that_no_encoder_writes_is_refused(saved, corrupt, message):
    path, _ = saved
    corrupt(path)
    with pytest.raises(MapError, match='checksums'):
        VprMap.load(path)
    with pytest.raises(MapError, match=message):  # found without checksums too (maps of older versions)
        VprMap.load(path, verify='none')


def test_multi_vector_flag_must_match_the_encoder(saved):
    from vpr_ros.mapdb.meta import compatibility_problems

    path, _ = saved
    _set_encoder(multi_vector=True)(path)
    vmap = VprMap.load(path)
    assert compatibility_problems(vmap.meta.encoder, IDENTITY) == ['multi_vector: map True vs encoder False']
    owners = np.array([0, 0, 1, 2, 3, 4])
    assert integrity.content_problem(np.eye(6, 8, dtype=np.float32), owners, 6, False, 'float32') is not None
    assert integrity.content_problem(np.eye(6, 8, dtype=np.float32), owners, 5, True, 'float32') is None


def test_sampled_content_check_reads_a_few_contiguous_runs():
    rows = 100_000
    runs = list(integrity._row_chunks(rows, full=False))
    assert sum(r.stop - r.start for r in runs) == 4096 and runs[0].start == 0 and runs[-1].stop == rows
    assert all(r.stop - r.start == 128 for r in runs)  # contiguous: few pages of a memory-mapped file
    desc = np.zeros((rows, 4), np.float32)
    desc[:, 0] = 1.0
    owners = np.arange(rows)
    assert integrity.content_problem(desc, owners, rows, False, 'float32', full=False) is None
    desc[runs[5].start + 7] = np.nan
    assert 'NaN' in integrity.content_problem(desc, owners, rows, False, 'float32', full=False)


def test_size_mode_checks_sizes_and_a_sample(saved):
    path, _ = saved
    full = os.path.join(path, 'places.sqlite')
    data = bytearray(open(full, 'rb').read())
    data[-10] ^= 0x01
    open(full, 'wb').write(bytes(data))
    assert len(VprMap.load(path, verify='size')) == 6  # same size: only full hashing sees it
    with pytest.raises(MapError, match='places.sqlite differ'):
        VprMap.load(path)
    with pytest.raises(MapError, match='verification must be one of'):
        VprMap.load(path, verify='maybe')


# ----- atomic swap -------------------------------------------------------------------------------
def _killed_save(path: str, when: str) -> None:
    """Save a 9-place map over ``path`` in a subprocess killed (os._exit) at ``when``."""
    script = textwrap.dedent(f'''
        import os, shutil
        import numpy as np
        from vpr_ros.encoders.base import l2_normalize
        from vpr_ros.mapdb import integrity
        from vpr_ros.mapdb.store import VprMap
        identity = {IDENTITY!r}
        vmap = VprMap.empty(identity)
        for i, v in enumerate(l2_normalize(np.random.default_rng(1).normal(size=(9, 8)))):
            vmap.add(float(i), None, v)
        when = {when!r}
        if when == 'between renames':
            integrity.exchange = lambda a, b: False
            real = os.rename
            def rename(a, b):
                real(a, b)
                os._exit(9)
            os.rename = rename
        else:
            shutil.rmtree = lambda *a, **k: os._exit(9)
        vmap.save({path!r})
        raise SystemExit('the save was not interrupted')
    ''')
    proc = subprocess.run([sys.executable, '-c', script], env={**os.environ, 'PYTHONPATH': REPO},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr


@pytest.mark.parametrize('when', ['between renames', 'after the exchange'])
def test_a_save_killed_midway_leaves_a_loadable_map_and_the_next_save_cleans_up(tmp_path, when):
    path = str(tmp_path / 'm')
    make_map(3)[0].save(path)
    _killed_save(path, when)
    leftovers = [n for n in os.listdir(tmp_path) if n.startswith('.m.')]
    assert leftovers, 'the kill left nothing behind: the test did not interrupt the save'
    assert len(VprMap.load(path)) == 9  # the new map (recovered into place when it was missing)
    assert os.path.isfile(os.path.join(path, 'map.yaml'))
    (tmp_path / '.m.tmp-stale').mkdir()  # as older versions named them
    make_map(4)[0].save(path)
    assert sorted(os.listdir(tmp_path)) == ['m']
    assert len(VprMap.load(path)) == 4


def test_stale_siblings_are_removed_before_the_new_map_is_written(tmp_path):
    # Killed saves of a large map each leave a copy: free that disk before writing another one.
    path = str(tmp_path / 'm')
    make_map(3)[0].save(path)
    (tmp_path / '.m.tmp-stale').mkdir()
    (tmp_path / '.m.tmp-99999999-abc').mkdir()  # a pid that no process has
    seen = []
    integrity.replace_directory(path, lambda tmp: seen.append(sorted(os.listdir(tmp_path))),
                                lambda _: None)
    own = f'.m.tmp-{os.getpid()}-'  # the save's own new directory
    assert [n for n in seen[0] if n != 'm' and not n.startswith(own)] == []


def test_without_a_map_at_the_path_a_stale_sibling_survives_until_the_new_map_is_in(tmp_path):
    path = str(tmp_path / 'm')
    (tmp_path / '.m.tmp-stale').mkdir()  # perhaps the only copy a killed save left
    seen = []
    integrity.replace_directory(path, lambda tmp: seen.append(os.path.isdir(tmp_path / '.m.tmp-stale')),
                                lambda _: None)
    assert seen == [True] and sorted(os.listdir(tmp_path)) == ['m']


def test_exchange_swaps_two_directories(tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    a.mkdir()
    b.mkdir()
    (a / 'x').write_text('a')
    (b / 'x').write_text('b')
    if not integrity.exchange(str(a), str(b)):
        pytest.skip('renameat2(RENAME_EXCHANGE) is not available here (the fallback is tested above)')
    assert (a / 'x').read_text() == 'b' and (b / 'x').read_text() == 'a'


def test_a_stray_sqlite_journal_does_not_stop_a_read_only_load(saved):
    path, vecs = saved
    with open(os.path.join(path, 'places.sqlite-journal'), 'wb') as fh:  # a journal header (hot)
        fh.write(b'\xd9\xd5\x05\xf9\x20\xa1\x63\xd7' + bytes(range(256)) * 16)
    vmap = VprMap.load(path)
    assert len(vmap) == 6 and vmap.places[2].pose is not None
    assert os.path.exists(os.path.join(path, 'places.sqlite-journal'))  # nothing was rolled back


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(['descriptors.npy', 'owners.npy', 'encoder_state.npz', 'places.sqlite',
                             'index.faiss', 'map.yaml']),
       flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(1, 255)),
                      min_size=1, max_size=4),
       verify=st.sampled_from(['full', 'none']))
def test_fuzzed_map_files_are_refused_rebuilt_or_harmless(saved, name, flips, verify):
    path, vecs = saved
    with tempfile.TemporaryDirectory() as tmp:
        copy = shutil.copytree(path, os.path.join(tmp, 'm'))
        full = os.path.join(copy, name)
        original = open(full, 'rb').read()
        data = bytearray(original)
        for where, xor in flips:
            data[int(where * len(data))] ^= xor
        if bytes(data) == original:  # flips that cancel out
            return
        open(full, 'wb').write(bytes(data))
        try:
            vmap = VprMap.load(copy, verify=verify)
        except MapError as exc:
            assert '\n' not in str(exc)
            return
        if verify == 'full' and name not in ('map.yaml', 'index.faiss'):
            raise AssertionError(f'a changed {name} was not detected')
        if name in ('index.faiss', 'descriptors.npy') or verify == 'full':
            best = vmap.search(vecs[3], 1)[0]
            assert best.score <= 1.0 + 1e-4


def test_recovery_works_for_a_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_map(3)[0].save('m')
    os.rename('m', '.m.old-999999999-x')  # what a kill between the fallback's renames leaves (dead pid)
    assert len(VprMap.load('m')) == 3 and sorted(os.listdir('.')) == ['m']


# ----- the manifest (map.yaml) is covered too -------------------------------------------------------
def _load_in_subprocess(path):
    """Load in a child: a faiss abort must fail the test, not kill the test run."""
    code = ('import sys\nfrom vpr_ros.errors import MapError\nfrom vpr_ros.mapdb.store import VprMap\n'
            'try:\n    VprMap.load(sys.argv[1])\nexcept MapError as exc:\n    print("refused:", exc)\n'
            'else:\n    print("loaded")\n')
    return subprocess.run([sys.executable, '-c', code, path], capture_output=True, text=True, timeout=120)


def test_an_edited_index_spec_in_map_yaml_is_refused_not_acted_on(saved):
    path, _ = saved
    meta = os.path.join(path, 'map.yaml')
    text = open(meta, encoding='utf-8').read()
    open(meta, 'w', encoding='utf-8').write(text.replace('index: flat', 'index: hnsw0'))
    os.remove(os.path.join(path, 'index.faiss'))
    done = _load_in_subprocess(path)
    assert done.returncode == 0, done.stderr[-500:]
    assert 'refused:' in done.stdout and 'map.yaml was changed after the map was written' in done.stdout


@pytest.mark.parametrize('edit', [lambda t: t.replace('count: 6', 'count: 5'),
                                  lambda t: t.replace('dtype: float32', 'dtype: float16'),
                                  lambda t: t + 'extra: 1\n',
                                  lambda t: t.replace('manifest_sha256: ', 'manifest_sha256: 0'),
                                  lambda t: t.rstrip('\n') + '0\n'])
def test_any_change_to_a_digested_manifest_is_refused(saved, edit):
    path, _ = saved
    meta = os.path.join(path, 'map.yaml')
    text = open(meta, encoding='utf-8').read()
    open(meta, 'w', encoding='utf-8').write(edit(text))
    with pytest.raises(MapError, match='map.yaml (was changed after|has a damaged manifest)'):
        VprMap.load(path, verify='none')


def test_a_manifest_written_before_the_digest_loads_unverified(saved):
    path, vecs = saved
    meta = os.path.join(path, 'map.yaml')
    text = open(meta, encoding='utf-8').read()
    open(meta, 'w', encoding='utf-8').write(text[:text.index('manifest_sha256:')])
    assert VprMap.load(path).search(vecs[2], 1)[0].place_id == 2


@pytest.mark.parametrize('spec', ['hnsw0', 'hnsw1', 'ivf0', 'ivf64'])
def test_an_older_map_yaml_naming_a_bad_index_spec_is_refused_in_one_line(saved, spec):
    path, _ = saved  # 6 vectors: ivf64 has more lists than the map has vectors
    _edit_yaml(path, lambda data: data.update(index=spec))
    os.remove(os.path.join(path, 'index.faiss'))
    done = _load_in_subprocess(path)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.startswith('refused:') and 'names an index this vpr_ros refuses' in done.stdout
    assert len(done.stdout.strip().splitlines()) == 1
