"""The CLI end to end on tiny synthetic bags: build-map, evaluate, map-info, and exit code 2 errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from test.helpers import textured_frames
from vpr_ros.cli import main
from vpr_ros.mapdb.store import VprMap
from vpr_ros.sources.bag import write_bag


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp('bags')
    write_bag(str(root / 'map'), textured_frames(8, size=(48, 64)), storage='mcap')
    queries = textured_frames(8, seed=1, size=(48, 64), t0=500.0, noise=6.0)
    write_bag(str(root / 'query'), queries, compressed=True)
    return root


@pytest.fixture(scope='module')
def built_map(bags):
    path = str(bags / 'maps' / 'raw')
    assert main(['build-map', '--source', str(bags / 'map'), '--out', path, '--encoder', 'raw_pixels']) == 0
    return path


def test_build_evaluate_report(bags, built_map, tmp_path, capsys):
    out = str(tmp_path / 'report')
    assert main(['evaluate', '--map', built_map, '--queries', str(bags / 'query'), '--out', out,
                 '--top-k', '5']) == 0
    results = json.load(open(os.path.join(out, 'results.json')))
    assert results['retrieval']['recall']['R@1'] == 1.0
    assert results['retrieval']['per_query'][3]['place_ids'][0] == 3
    for png in ('recall_at_n.png', 'trajectory.png', 'matches.png', 'pr_curve.png'):
        assert os.path.getsize(os.path.join(out, png)) > 1000
    assert 'R@1 100.0%' in capsys.readouterr().out


def test_map_info(built_map, capsys):
    assert main(['map-info', built_map, '--json']) == 0
    info = json.loads(capsys.readouterr().out)
    assert info['places'] == 8 and info['encoder']['name'] == 'raw_pixels' and info['thumbnails'] == 8


def test_every_n_keyframes(bags, tmp_path):
    path = str(tmp_path / 'm')
    assert main(['build-map', '--source', str(bags / 'map'), '--out', path, '--encoder', 'raw_pixels',
                 '--every-n', '3']) == 0
    assert len(VprMap.load(path)) == 3


def test_fitted_encoder_map_restores_state(bags, tmp_path):
    path = str(tmp_path / 'm')
    assert main(['build-map', '--source', str(bags / 'map'), '--out', path, '--encoder', 'raw_pixels',
                 '--set', 'pca_dim=4']) == 0
    assert main(['evaluate', '--map', path, '--queries', str(bags / 'query')]) == 0


def test_export_vocabulary_and_build_with_it(bags, tmp_path, capsys):
    fitted, out = str(tmp_path / 'sift'), str(tmp_path / 'vocab.npz')
    assert main(['build-map', '--source', str(bags / 'map'), '--out', fitted, '--encoder', 'sift_vlad',
                 '--set', 'num_clusters=8']) == 0
    assert main(['export-vocabulary', fitted, out]) == 0
    assert 'sift_vlad (centers 8x128)' in capsys.readouterr().out
    reused = str(tmp_path / 'reused')
    assert main(['build-map', '--source', str(bags / 'query'), '--out', reused, '--encoder', 'sift_vlad',
                 '--set', 'num_clusters=8', '--vocabulary', out, '--no-poses']) == 0
    np.testing.assert_array_equal(VprMap.load(reused).encoder_state['centers'],
                                  VprMap.load(fitted).encoder_state['centers'])
    assert main(['build-map', '--source', str(bags / 'map'), '--out', str(tmp_path / 'x'),
                 '--encoder', 'sift_vlad', '--vocabulary', out]) == 2
    assert 'num_clusters: map 8 vs requested 64' in capsys.readouterr().err


@pytest.mark.parametrize('argv,message', [
    (['evaluate', '--map', '/no/map', '--queries', '/no/bag'], 'map not found'),
    (['build-map', '--source', '/no/bag', '--out', 'x'], 'not found'),
    (['build-map', '--source', 'BAGS/map', '--out', 'OUT', '--encoder', 'nope'], 'unknown encoder'),
    (['build-map', '--source', 'BAGS/map', '--out', 'OUT', '--set', 'bogus=1'], 'unknown config keys'),
    (['build-map', '--source', 'BAGS/map', '--out', 'OUT', '--image-topic', '/x'], 'no topic /x'),
    (['evaluate', '--map', 'MAP', '--queries', 'BAGS/query', '--set', 'size=[8,8]'], 'do not match'),
    (['map-info', 'BAGS'], 'not a complete vpr_ros map'),
])
def test_errors_exit_2_with_one_line(bags, built_map, tmp_path, capsys, argv, message):
    argv = [a.replace('BAGS', str(bags)).replace('OUT', str(tmp_path / 'o')).replace('MAP', built_map)
            for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and 'Traceback' not in err


def test_corrupt_map_is_refused_and_rebuild_is_atomic(bags, tmp_path, capsys):
    path = str(tmp_path / 'm')
    assert main(['build-map', '--source', str(bags / 'map'), '--out', path, '--encoder', 'raw_pixels']) == 0
    np.save(os.path.join(path, 'descriptors.npy'), np.zeros((3, 2), np.float32))
    assert main(['evaluate', '--map', path, '--queries', str(bags / 'query')]) == 2
    assert 'corrupt' in capsys.readouterr().err
    # a build that fails (bad source topic) leaves whatever was there untouched
    before = sorted(os.listdir(path))
    assert main(['build-map', '--source', str(bags / 'map'), '--out', path, '--image-topic', '/x']) == 2
    assert sorted(os.listdir(path)) == before


def test_build_map_never_replaces_a_nav2_map_folder(bags, tmp_path, capsys, monkeypatch):
    # The reproduction of the data-loss report: the folder must be byte-identical, and the refusal must
    # come before any encoding (the encoder is never created).
    nav2 = tmp_path / 'nav2'
    nav2.mkdir()
    (nav2 / 'map.yaml').write_text('image: office.pgm\nresolution: 0.05\norigin: [0,0,0]\n')
    (nav2 / 'office.pgm').write_bytes(b'P5\n1 1\n255\n\x07')
    (nav2 / 'NOTES.txt').write_text('mine')
    before = {p.name: p.read_bytes() for p in nav2.iterdir()}

    def no_encoder(*_a, **_k):
        raise AssertionError('the encoder was created before --out was checked')

    monkeypatch.setattr('vpr_ros.encoders.create_encoder', no_encoder)
    assert main(['build-map', '--source', str(bags / 'map'), '--out', str(nav2),
                 '--encoder', 'raw_pixels']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a vpr_ros map's" in err and 'refusing' in err
    assert {p.name: p.read_bytes() for p in nav2.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ['nav2']


def test_build_map_refuses_an_out_that_is_its_source(bags, tmp_path, capsys):
    assert main(['build-map', '--source', str(bags / 'map'), '--out', str(bags),
                 '--encoder', 'raw_pixels']) == 2
    assert 'contains the source' in capsys.readouterr().err


def test_merge_maps_never_replaces_a_foreign_folder(built_map, tmp_path, capsys):
    foreign = tmp_path / 'f'
    foreign.mkdir()
    (foreign / 'data.bin').write_bytes(b'\x01\x02')
    assert main(['merge-maps', built_map, built_map, '--out', str(foreign)]) == 2
    assert 'not a vpr_ros map' in capsys.readouterr().err
    assert (foreign / 'data.bin').read_bytes() == b'\x01\x02'


@pytest.mark.parametrize('spec', ['hnsw0', 'hnsw1', 'ivf0', 'flat@3'])
def test_build_map_refuses_a_bad_index_spec_before_encoding(bags, tmp_path, spec):
    # In a child: faiss aborts (hnsw0) or crashes (hnsw1) the process the spec reaches.
    out = tmp_path / 'm'
    code = 'import sys\nfrom vpr_ros.cli import main\nsys.exit(main(sys.argv[1:]))'
    done = subprocess.run([sys.executable, '-c', code, 'build-map', '--source', str(bags / 'map'),
                           '--out', str(out), '--encoder', 'raw_pixels', '--index', spec],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-800:]
    assert len(done.stderr.strip().splitlines()) == 1 and 'index' in done.stderr
    assert not out.exists()


def test_build_map_onto_a_full_disk_is_one_line_and_keeps_the_old_map(bags, tmp_path, capsys):
    from test.helpers import siblings_left, small_tmpfs

    with small_tmpfs(str(tmp_path / 'disk'), '2m') as disk:
        out = os.path.join(disk, 'm')
        build = ['build-map', '--source', str(bags / 'map'), '--out', out, '--encoder', 'raw_pixels']
        assert main(build) == 0
        before = {n: open(os.path.join(out, n), 'rb').read() for n in os.listdir(out)}
        fd = os.open(os.path.join(disk, 'filler'), os.O_WRONLY | os.O_CREAT)  # another file fills the disk
        try:
            while os.write(fd, b'\0' * 4096):
                pass
        except OSError:
            pass
        os.close(fd)
        capsys.readouterr()
        assert main(build) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if 'error:' in line]
        assert len(errors) == 1 and 'no space left on device' in errors[0] and 'Traceback' not in err, err
        assert {n: open(os.path.join(out, n), 'rb').read() for n in os.listdir(out)} == before
        assert siblings_left(out) == []
