"""evaluate --loops --pose-graph on a small sample world: the published closures improve the drifted
odometry, the injected false closure is contained by the kernel, results.json and the plot are written."""
from __future__ import annotations

import json
import os

import pytest

from vpr_ros.cli import main


def camera_yaml() -> str:
    """The sample camera (vpr_ros.sample.sample_camera) as a ROS camera_info YAML."""
    from vpr_ros.sample import sample_camera

    cam = sample_camera()
    return (f'image_width: {cam.width}\nimage_height: {cam.height}\n'
            f'camera_matrix: {{rows: 3, cols: 3, data: {list(cam.K)}}}\n'
            'distortion_model: plumb_bob\n'
            'distortion_coefficients: {rows: 1, cols: 5, data: [0, 0, 0, 0, 0]}\n')


@pytest.fixture(scope='module')
def small_world(tmp_path_factory) -> tuple[str, str]:
    from vpr_ros.sample import generate_sample

    out = tmp_path_factory.mktemp('pose_graph')
    info = generate_sample(str(out / 'sample'), scale=0.15, traversals=('mapping',), progress=False)
    camera = out / 'camera.yaml'
    camera.write_text(camera_yaml())
    return info.bags['mapping'], str(camera)


def test_the_command_reports_ate_before_and_after_and_contains_a_false_closure(small_world, tmp_path,
                                                                               capsys) -> None:
    bag, camera = small_world
    out = tmp_path / 'r'
    assert main(['evaluate', '--loops', '--pose-graph', '--queries', bag, '--camera-info', camera,
                 '--encoder', 'raw_pixels', '--dist', '10', '--drift-yaw', '0.5', '--drift-seed', '1',
                 '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'ATE (SE(3)-aligned RMSE) before' in printed and 'false closure' in printed
    pg = json.load(open(out / 'results.json'))['pose_graph']
    cl = pg['closures']  # each closure as the node publishes it: metric where its solve is good
    assert cl['used'] >= 2 and cl['direction_only'] + cl['metric'] == cl['used']
    assert pg['drift_model']['yaw_sigma_deg'] == 0.5 and pg['drift_model']['seed'] == 1
    assert pg['after']['ate_m']['rmse'] < 0.5 * pg['before']['ate_m']['rmse']
    fc = pg['false_closure']
    for variant in ('direction_only', 'metric'):
        assert fc[variant]['with_kernel']['ate_m']['rmse'] <= 1.5 * pg['after']['ate_m']['rmse'] + 0.2
        assert fc[variant]['ate_without_over_with_kernel'] > 2.0
    assert os.path.getsize(out / 'pose_graph.png') > 20_000


def test_missing_intrinsics_or_odometry_topic_is_one_line_and_exit_2(small_world, capsys) -> None:
    bag, camera = small_world
    assert main(['evaluate', '--loops', '--pose-graph', '--queries', bag, '--encoder', 'raw_pixels']) == 2
    assert '--camera-info' in capsys.readouterr().err
    assert main(['evaluate', '--loops', '--pose-graph', '--queries', bag, '--camera-info', camera,
                 '--encoder', 'raw_pixels', '--odometry-topic', '/wheel_odom']) == 2
    assert 'no topic /wheel_odom' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse: a drift sigma must be > 0
        main(['evaluate', '--loops', '--pose-graph', '--queries', bag, '--camera-info', camera,
              '--encoder', 'raw_pixels', '--drift-yaw', '0'])
    assert exit_info.value.code == 2 and 'expected ' in capsys.readouterr().err


def test_a_real_odometry_topic_is_taken_instead_of_the_drift(small_world, tmp_path) -> None:
    """The bag's only pose topic as both ground truth and odometry: nothing to correct, and the graph with
    the published closures must not make it worse than the closures' own errors."""
    bag, camera = small_world
    out = tmp_path / 'r'
    assert main(['evaluate', '--loops', '--pose-graph', '--queries', bag, '--camera-info', camera,
                 '--encoder', 'raw_pixels', '--dist', '10', '--odometry-topic', '/odom',
                 '--out', str(out)]) == 0
    pg = json.load(open(out / 'results.json'))['pose_graph']
    assert pg['odometry'] == 'given' and pg['frames_without_odometry'] == 0
    assert pg['before']['ate_m']['rmse'] < 0.01
    assert pg['after']['ate_m']['rmse'] < 0.5
