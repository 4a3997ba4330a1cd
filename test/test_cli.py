"""The CLI end to end on tiny synthetic bags: build-map, evaluate, map-info, and exit code 2 errors."""
import json
import os

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
    # 8 places are too few to calibrate a confidence on: every answer says so (NaN), none is rated
    cal = results['calibration']
    assert cal['model'] is None and cal['without_confidence'] == 8 and cal['ece'] is None
    assert all(q['confidence'] is None for q in results['retrieval']['per_query'])


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
