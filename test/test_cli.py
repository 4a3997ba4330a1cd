"""The CLI end to end on tiny synthetic bags: build-map, evaluate, map-info, and exit code 2 errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from test.helpers import textured_frames, type_mismatches
from vpr_ros.cli import main
from vpr_ros.evaluation.results import EvaluationResults
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
    assert type_mismatches(results, EvaluationResults) == []  # the types other modules read it by
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
    metric = info['metric_pose']  # nothing stored: landmarks come from the local features on demand
    assert metric['stored_bytes_per_place'] == 0 and metric['places_with_pose'] == 8
    assert metric['landmark_cache_bytes_per_place_max'] == info['local_features']['max_keypoints'] * 36


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


def test_every_subcommand_has_a_description_and_shows_its_defaults():
    from vpr_ros.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, __import__('argparse')._SubParsersAction))
    for name, command in sub.choices.items():
        assert command.description, name
    assert '(default: 10)' in sub.choices['evaluate'].format_help()  # --top-k


def _numeric_options() -> list[tuple[str, object]]:
    """(subcommand option, its action) for every option of every subcommand that takes a number."""
    import argparse

    from vpr_ros.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    found = []
    for command, parser in sub.choices.items():
        for action in parser._actions:
            if action.type in (int, float):
                raise AssertionError(f'{command} {action.option_strings}: a bare {action.type.__name__} type '
                                     'accepts NaN, inf and any range')
            if action.type is not None and hasattr(action.type, 'low'):
                found.append((f'{command} {action.option_strings[0]}', action))
    return found


def test_every_numeric_option_refuses_non_finite_and_out_of_range_values():
    import argparse
    import math

    options = _numeric_options()
    assert len(options) >= 30  # sample, build-map, evaluate, export-onnx, train, replay, demo
    for name, action in options:
        kind, low, high = action.type.kind, action.type.low, action.type.high
        for text in ('nan', 'inf', '-inf', '-1', '0', '1e30', str(10 ** 30), '1.5', 'x'):
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            above = low is None or value > low or (value == low and not action.type.low_open)
            ok = (math.isfinite(value) and above and (high is None or value <= high)
                  and (kind is float or text.lstrip('-').isdigit()))
            if ok:
                assert action.type(text) == kind(text), (name, text)
            else:
                with pytest.raises(argparse.ArgumentTypeError):
                    action.type(text)
        defaults = action.default if isinstance(action.default, list) else [action.default]  # nargs options
        for default in defaults:
            if default is not None:  # the defaults themselves are in range
                assert action.type(str(default)) == default, name


@pytest.mark.parametrize('argv', [
    ['evaluate', '--map', 'MAP', '--queries', 'Q', '--top-k', '0'],
    ['evaluate', '--map', 'MAP', '--queries', 'Q', '--top-k', '-1'],
    ['evaluate', '--map', 'MAP', '--queries', 'Q', '--dist', 'nan'],
    ['evaluate', '--map', 'MAP', '--queries', 'Q', '--dist', '-5'],
    ['evaluate', '--map', 'MAP', '--queries', 'Q', '--dist', 'inf'],
    ['evaluate', '--map', 'MAP', '--queries', 'Q', '--yaw', 'nan'],
    ['build-map', '--source', 'S', '--out', 'O', '--min-distance', 'nan'],
    ['build-map', '--source', 'S', '--out', 'O', '--max-image-pixels', '-1'],
])
def test_issue_cli_values_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert 'expected ' in capsys.readouterr().err


def test_recall_over_no_answerable_query_is_undefined_not_zero(bags, built_map, tmp_path, capsys):
    from vpr_ros.frames import Frame, Pose

    far = [Frame(f.stamp, f.rgb, Pose.from_xy_yaw(f.pose.position[0] + 1.0e5, 0.0, 0.0))
           for f in textured_frames(4, seed=1, size=(48, 64), t0=500.0)]
    write_bag(str(tmp_path / 'far'), far)
    out = str(tmp_path / 'report')
    assert main(['evaluate', '--map', built_map, '--queries', str(tmp_path / 'far'), '--out', out]) == 0
    printed = capsys.readouterr().out
    assert 'recall undefined' in printed and '0.0%' not in printed and '0/4 answerable' in printed
    results = json.load(open(os.path.join(out, 'results.json')))
    assert results['retrieval']['recall'] == {'R@1': None, 'R@5': None, 'R@10': None}
    assert results['precision_recall']['recall_at_100_precision'] is None


def test_hostile_config_text_is_one_line_exit_2(bags, tmp_path, capsys):
    from test.test_textio import alias_bomb

    latin = tmp_path / 'latin.yaml'
    latin.write_bytes(b'threads: 1 # caf\xe9\n')
    fifo = str(tmp_path / 'fifo')
    os.mkfifo(fifo)
    base = ['build-map', '--source', str(bags / 'map'), '--out', str(tmp_path / 'o'),
            '--encoder', 'raw_pixels']
    for extra, message in ((['--config', str(latin)], 'is not UTF-8 text (byte 0xe9 on line 1'),
                           (['--config', fifo], 'is not a regular file'),
                           (['--config', str(tmp_path)], 'is a directory'),
                           (['--set', 'pca_dim=' + alias_bomb()], 'expands to more than')):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and len(err) < 400, err


def test_set_alias_bomb_in_a_flow_value_is_refused_quickly(bags, tmp_path, capsys):
    import time

    bomb = '{a: &a [x,x,x,x,x,x,x,x,x], ' + ', '.join(
        f'{n}: &{n} [{",".join([f"*{p}"] * 9)}]' for p, n in zip('abcdef', 'bcdefg')) + '}'
    t0 = time.perf_counter()
    assert main(['build-map', '--source', str(bags / 'map'), '--out', str(tmp_path / 'o'),
                 '--encoder', 'raw_pixels', '--set', f'pca_dim={bomb}']) == 2
    assert time.perf_counter() - t0 < 10
    assert 'expands to more than' in capsys.readouterr().err


def test_export_vocabulary_refuses_a_directory_or_a_foreign_file(tmp_path, bags, capsys):
    fitted = str(tmp_path / 'fitted')
    assert main(['build-map', '--source', str(bags / 'map'), '--out', fitted, '--encoder', 'raw_pixels',
                 '--set', 'pca_dim=4']) == 0
    capsys.readouterr()
    target = tmp_path / 'vocabs'
    target.mkdir()
    assert main(['export-vocabulary', fitted, str(target)]) == 2
    assert 'is a directory' in capsys.readouterr().err and not os.listdir(target)
    notes = tmp_path / 'notes.npz'
    notes.write_bytes(b'my notes')
    assert main(['export-vocabulary', fitted, str(notes)]) == 2
    assert 'not a vpr_ros vocabulary file' in capsys.readouterr().err
    assert notes.read_bytes() == b'my notes'
    good = str(target / 'v.npz')
    assert main(['export-vocabulary', fitted, good]) == 0 and main(['export-vocabulary', fitted, good]) == 0


def test_build_map_skips_and_counts_non_finite_odometry(tmp_path, capsys):
    from vpr_ros.frames import Pose

    frames = textured_frames(6, size=(48, 64))
    odom = [(f.stamp + dt, Pose((f.pose.position[0] + 30 * dt, 0.0, 0.0)))
            for f in frames for dt in (-0.1, 0.1)]
    odom[4] = (odom[4][0], Pose((float('nan'), 0.0, 0.0)))            # a NaN position
    odom[7] = (odom[7][0], Pose((odom[7][1].position), (0.0, 0.0, 0.0, 0.0)))  # zero quaternion
    write_bag(str(tmp_path / 'bag'), frames, poses=odom)
    assert main(['build-map', '--source', str(tmp_path / 'bag'), '--out', str(tmp_path / 'm'),
                 '--encoder', 'raw_pixels']) == 0
    assert "'non-finite pose': 1" in capsys.readouterr().out
    vmap = VprMap.load(str(tmp_path / 'm'))
    assert len(vmap) == 6
    # frame 3 lies between the zero quaternion and a known one: position only
    assert [p.pose.orientation is None for p in vmap.places] == [False] * 3 + [True] + [False] * 2


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


@pytest.mark.parametrize('argv,message', [
    (['evaluate', '--map', 'MAP', '--queries', 'BAGS/query', '--out', 'FILE'], 'exists and is not a folder'),
    (['sample', 'FILE', '--scale', '0.05'], 'exists and is not a folder'),
    (['train', '--source', 'BAGS/map', '--encoder', 'gem', '--out', 'FILE/run'], 'is not a folder'),
    (['explain', 'FILE', '--out', 'DIR'], 'is a directory'),
    (['export-onnx', 'effnet_gem', 'DIR'], 'is a directory'),
])
def test_an_output_of_the_wrong_kind_is_refused_before_any_work(bags, built_map, tmp_path, capsys, argv,
                                                                message):
    """evaluate --out FILE and sample FILE gave a FileExistsError traceback (evaluate after the whole run)."""
    (tmp_path / 'file').write_text('mine')
    (tmp_path / 'dir').mkdir()
    argv = [a.replace('BAGS', str(bags)).replace('MAP', built_map).replace('FILE', str(tmp_path / 'file'))
            .replace('DIR', str(tmp_path / 'dir')) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert (tmp_path / 'file').read_text() == 'mine' and not os.listdir(tmp_path / 'dir')


def test_a_source_that_is_a_fifo_is_one_error(tmp_path, capsys):
    fifo = str(tmp_path / 'fifo')
    os.mkfifo(fifo)
    assert main(['build-map', '--source', fifo, '--out', str(tmp_path / 'm'), '--encoder', 'raw_pixels']) == 2
    assert 'neither a folder nor a regular file' in capsys.readouterr().err


def test_replay_options_become_a_replay_config_without_rclpy():
    from vpr_ros.cli import build_parser, replay_config
    from vpr_ros.matching.sequence import SequenceConfig
    from vpr_ros.ros.replay_config import ReplayConfig

    args = build_parser().parse_args(['replay', '--bag', 'b', '--map', 'm', '-p', 'top_k:=3', '--lockstep',
                                      '--sequence-length', '4', '--sequence-spacing', 'frames',
                                      '--sequence-velocity-step', '0.05'])
    config = replay_config(args)
    assert config == ReplayConfig('b', 'm', lockstep=True, params=('top_k:=3',),
                                  sequence=SequenceConfig(length=4, spacing='frames', velocity_step=0.05))
    # every sequence.* parameter, typed as the node declares it (a float keeps its decimal point)
    assert config.sequence_parameters() == [
        'sequence.length:=4', 'sequence.min_velocity:=0.8', 'sequence.max_velocity:=1.2',
        'sequence.velocity_step:=0.05', 'sequence.contrast_window:=0', 'sequence.single_frame_weight:=0.0',
        'sequence.shortlist:=0', 'sequence.spacing:="frames"', 'sequence.distance_step_m:=0.0',
        'sequence.without_odometry:="frames"']
    assert ReplayConfig('b', 'm', sequence=SequenceConfig(min_velocity=1)).sequence_parameters()[1] == \
        'sequence.min_velocity:=1.0'


def test_loop_options_set_the_node_parameters_of_the_same_name():
    from vpr_ros.cli import build_parser, config_from_args
    from vpr_ros.matching.loop_closure import LoopClosureConfig
    from vpr_ros.matching.verification import VerificationConfig

    args = build_parser().parse_args(['evaluate', '--queries', 'q', '--loops', '--min-score', '0.5',
                                      '--consistency-frames', '2', '--verify-top-k', '5'])
    assert config_from_args(LoopClosureConfig, args) == LoopClosureConfig(min_score=0.5, consistency_frames=2)
    assert config_from_args(VerificationConfig, args) == VerificationConfig(top_k=5)
    with pytest.raises(SystemExit):  # the node parameter's range: consistency_frames >= 1
        build_parser().parse_args(['evaluate', '--queries', 'q', '--consistency-frames', '0'])
