"""The before/after experiment and the hook evaluate --loops calls, on the synthetic drive."""
from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest

from test.slam.synthetic import loop_drive, revisit_closures
from vpr_ros.errors import ConfigError, SourceError
from vpr_ros.frames import Pose
from vpr_ros.geometry.metric import METRIC, MetricPose
from vpr_ros.matching.loop_closure import LoopDecision, LoopStatus
from vpr_ros.matching.verification import Verification
from vpr_ros.slam.evaluation import PoseGraphHook, PoseGraphSettings, evaluate_pose_graph
from vpr_ros.slam.odometry import DriftModel, drift
from vpr_ros.slam.poses import BODY_FROM_OPTICAL, relative, yaw_of
from vpr_ros.sources.bag import PoseTrack

SETTINGS = PoseGraphSettings(DriftModel(0.05, 0.4, seed=2), false_min_distance_m=60.0)


@pytest.fixture(scope='module')
def drive():
    return loop_drive()


def as_pose(T: np.ndarray) -> Pose:
    return Pose.from_xy_yaw(T[0, 3], T[1, 3], yaw_of(T))


def decision(stamps, gt, i: int, j: int) -> LoopDecision:
    """The verified decision of a closure from node j (query) to node i (place), its relative pose exact."""
    B = BODY_FROM_OPTICAL
    T = relative(gt[i], gt[j])
    v = Verification(i, True, 100, 60, 'essential', 1.0, B.T @ T[:3, :3] @ B,
                     B.T @ T[:3, 3] / np.linalg.norm(T[:3, 3]), 2.0)
    return LoopDecision(LoopStatus.LOOP_DETECTED, float(stamps[j]), float(stamps[i]), i, 0.8, 3, v)


def published(stamps, gt, i: int, j: int, metric_sigma_m: float | None = None) -> tuple:
    """A published closure as evaluate_loops records it: the decision, the metric solve against the place
    (a good one at the query's true pose with ``metric_sigma_m``, else none tried) and the place's pose."""
    solved = None
    if metric_sigma_m is not None:
        cov = np.diag([metric_sigma_m ** 2] * 3 + [0.01 ** 2] * 3)
        solved = MetricPose(METRIC, i, gt[j], cov, inliers=80)
    return decision(stamps, gt, i, j), solved, as_pose(gt[i])


def test_the_experiment_reports_before_after_and_the_false_closure(drive) -> None:
    stamps, gt, per_lap = drive
    closures = revisit_closures(stamps, gt, per_lap)
    off_node = revisit_closures(stamps + 0.25, gt, per_lap)[:2]  # stamps no node has
    results, runs = evaluate_pose_graph(stamps, gt, closures + off_node, SETTINGS)
    assert results['closures']['used'] == len(closures) and results['closures']['not_on_a_node'] == 2
    assert results['closures']['direction_only'] == len(closures)
    ate = {k: results[k]['ate_m']['rmse'] for k in ('before', 'after')}
    assert results['ate_ratio'] == pytest.approx(ate['after'] / ate['before'], abs=1e-3)
    assert results['ate_ratio'] < 0.25
    fc = results['false_closure']
    assert fc['distance_m'] >= 60.0 and fc['t_query'] - fc['t_match'] >= SETTINGS.min_time_separation
    for variant in ('direction_only', 'metric'):
        assert fc[variant]['ate_without_over_with_kernel'] > 2.0
    assert results['closures']['accuracy_vs_ground_truth']['direction_error_deg']['median'] < 6.0
    assert {r.name for r in runs} >= {'before', 'after', 'after_without_kernel', 'false_metric'}
    json.dumps(results)  # plain JSON types only


def test_without_closures_only_the_odometry_is_reported(drive) -> None:
    stamps, gt, _ = drive
    results, runs = evaluate_pose_graph(stamps, gt, [], PoseGraphSettings(false_closure=False))
    assert 'after' not in results and 'false_closure' not in results and len(runs) == 1
    with pytest.raises(ConfigError):
        evaluate_pose_graph(stamps[:1], gt[:1], [])


def test_the_hook_takes_frames_and_decisions_and_writes_the_plot(drive, tmp_path) -> None:
    stamps, gt, per_lap = drive
    trajectory = [(float(t), as_pose(T)) for t, T in zip(stamps, gt)]
    decisions = [published(stamps, gt, j - per_lap, j) for j in range(per_lap, len(gt), 3)]
    out = PoseGraphHook(SETTINGS)(trajectory, decisions, str(tmp_path))
    assert out['closures']['used'] == len(decisions) and out['odometry'] == 'drifted ground truth'
    assert out['closures']['accuracy_vs_ground_truth']['direction_error_deg']['max'] < 0.01
    assert out['ate_ratio'] < 0.25
    assert out['files'] == [os.path.join(str(tmp_path), 'pose_graph.png')]
    assert os.path.getsize(out['files'][0]) > 20_000


def test_the_hook_uses_a_given_odometry_track(drive) -> None:
    stamps, gt, per_lap = drive
    odo = drift(gt, SETTINGS.drift)
    track = PoseTrack(list(stamps[5:]), [as_pose(T) for T in odo[5:]])  # the first 5 frames are not covered
    trajectory = [(float(t), as_pose(T)) for t, T in zip(stamps, gt)]
    decisions = [published(stamps, gt, j - per_lap, j) for j in range(per_lap, len(gt), 3)]
    out = PoseGraphHook(SETTINGS, odometry=track)(trajectory, decisions, None)
    assert out['odometry'] == 'given' and out['nodes'] == len(gt) - 5 and out['frames_without_odometry'] == 5
    assert out['ate_ratio'] < 0.25 and 'files' not in out
    with pytest.raises(SourceError):
        PoseGraphHook(SETTINGS, odometry=PoseTrack([0.0], [as_pose(gt[0])]))(trajectory, decisions, None)


def test_a_good_metric_solve_makes_the_closure_metric_as_the_node_publishes_it(drive) -> None:
    """The hook takes the node's choice (vpr_ros.slam.constraints.published): a closure with a good metric
    solve becomes a metric constraint (the query's pose in the place's, in metres), one without stays
    direction-only; ``metric_closures=False`` makes every closure direction-only."""
    stamps, gt, per_lap = drive
    trajectory = [(float(t), as_pose(T)) for t, T in zip(stamps, gt)]
    js = list(range(per_lap, len(gt), 3))
    closures = [published(stamps, gt, j - per_lap, j, 0.1 if k % 2 == 0 else None) for k, j in enumerate(js)]
    inputs = PoseGraphHook(SETTINGS).inputs(trajectory, closures)
    metric = [c for c in inputs.constraints if not c.direction_only]
    assert len(metric) == (len(js) + 1) // 2
    for c in metric:
        i, j = int(np.argmin(np.abs(stamps - c.t_match))), int(np.argmin(np.abs(stamps - c.t_query)))
        assert np.allclose(c.pose, relative(gt[i], gt[j]), atol=1e-6)
        assert np.linalg.norm(c.translation) > 1.0  # metres, not a unit direction
    plain = PoseGraphHook(replace(SETTINGS, metric_closures=False)).inputs(trajectory, closures)
    assert all(c.direction_only for c in plain.constraints) and len(plain.constraints) == len(js)
    results, _ = evaluate_pose_graph(inputs.stamps, inputs.ground_truth, inputs.constraints,
                                     replace(SETTINGS, false_closure=False))
    assert results['closures']['direction_only'] == len(js) // 2
    assert results['ate_ratio'] < 0.25
