"""``evaluate --loops --pose-graph``: does a SLAM back end get better from vpr_ros's closures?

One node per frame of the traversal (its ground-truth pose for the metrics, its odometry pose as the
initial guess), odometry factors between consecutive nodes, and a factor (set) per closure that the
loop-closure filter published with verification: the same decisions ``evaluate --loops`` counts and
the node publishes, each with the constraint the node publishes
(:func:`vpr_ros.slam.constraints.published`: metric when its PnP solve is good, else direction-only).
The odometry is the ground truth drifted by the stated, seeded
:class:`~vpr_ros.slam.odometry.DriftModel`, or a real odometry track of the bag. Reported, with evo:

* ``before``: the odometry; ``after``: the optimised graph (robust kernel as configured), and
  ``after_without_kernel`` (plain least squares) to show what the kernel costs on true closures;
* ``false_closure``: the same graph with one injected false closure between two frames at least
  ``false_min_distance_m`` apart (a seeded random pair), once as a direction-only constraint as today's
  verification would give it and once as a metric one (what a wrong metric solve would give), each
  with and without the kernel: the kernel must contain it.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from vpr_ros.errors import ConfigError, SourceError
from vpr_ros.slam import metrics
from vpr_ros.slam.constraints import (
    ROTATION_SIGMA_RAD,
    LoopConstraint,
    direction_only_covariance,
    published,
)
from vpr_ros.slam.graph import GraphResult, PoseGraphConfig, describe, optimise
from vpr_ros.slam.odometry import DriftModel, drift
from vpr_ros.slam.poses import BODY_FROM_OPTICAL, pose_matrix, positions, relative, rotation_angle, yaw_of

if TYPE_CHECKING:
    from vpr_ros.frames import Pose
    from vpr_ros.geometry.metric import MetricPose
    from vpr_ros.matching.loop_closure import LoopDecision
    from vpr_ros.sources.bag import PoseTrack

# The injected false closure: what a look-alike place typically yields, the query seen just ahead of the
# place looking the same way; the metric variant puts it FALSE_RANGE_M ahead with a PnP-like covariance.
FALSE_RANGE_M = 2.0
FALSE_METRIC_SIGMA_M = 0.5
STAMP_TOLERANCE_S = 1e-6


@dataclass
class PoseGraphSettings:
    drift: DriftModel = field(default_factory=DriftModel)
    graph: PoseGraphConfig = field(default_factory=PoseGraphConfig)
    false_closure: bool = True
    false_min_distance_m: float = 50.0
    min_time_separation: float = 30.0   # the injected pair is at least this far apart in time, as real ones
    metric_closures: bool = True        # False: every closure direction-only, even with a good metric solve

    def validate(self) -> None:
        self.drift.validate()
        self.graph.validate()
        if self.false_min_distance_m <= 0:
            raise ConfigError('pose graph: false_min_distance_m must be > 0')


@dataclass
class Run:
    """One optimisation of the experiment, kept for the plots."""

    name: str
    poses: list[np.ndarray]
    errors: dict[str, Any]
    graph: GraphResult | None = None


def node_index(stamps: np.ndarray, t: float) -> int | None:
    i = int(np.argmin(np.abs(stamps - t)))
    return i if abs(stamps[i] - t) <= STAMP_TOLERANCE_S else None


def false_pair(gt: Sequence[np.ndarray], stamps: np.ndarray,
               settings: PoseGraphSettings) -> tuple[int, int] | None:
    """A seeded random (earlier, later) node pair, far apart in time and space; None when none exists."""
    xyz = positions(gt)
    rng = np.random.default_rng(settings.drift.seed + 1)
    for j in rng.permutation(len(stamps)):
        ok = np.flatnonzero((np.linalg.norm(xyz - xyz[j], axis=1) >= settings.false_min_distance_m)
                            & (stamps[j] - stamps >= settings.min_time_separation))
        if len(ok):
            return int(ok[rng.integers(len(ok))]), int(j)
    return None


def false_constraint(t_query: float, t_match: float, metric: bool) -> LoopConstraint:
    ahead = np.array([1.0, 0.0, 0.0])
    if not metric:
        return LoopConstraint(t_query, t_match, np.eye(3), ahead, direction_only_covariance(np.eye(3), ahead))
    cov = np.diag([FALSE_METRIC_SIGMA_M ** 2] * 3 + [ROTATION_SIGMA_RAD ** 2] * 3)
    return LoopConstraint(t_query, t_match, np.eye(3), FALSE_RANGE_M * ahead, cov)


def closure_accuracy(c: LoopConstraint, gt_place: np.ndarray, gt_query: np.ndarray) -> dict[str, float]:
    """How far a measured constraint is from the ground-truth relative pose (rotation, direction, range)."""
    truth = relative(gt_place, gt_query)
    out = {'rotation_error_deg': round(math.degrees(rotation_angle(truth[:3, :3].T @ c.rotation)), 3),
           'range_m': round(float(np.linalg.norm(truth[:3, 3])), 3)}
    norm = float(np.linalg.norm(truth[:3, 3]))
    if not c.direction_only:
        out['translation_error_m'] = round(float(np.linalg.norm(c.translation - truth[:3, 3])), 3)
    if norm > 1e-6:
        cos = float(truth[:3, 3] @ c.translation / (norm * np.linalg.norm(c.translation)))
        out['direction_error_deg'] = round(math.degrees(math.acos(max(-1.0, min(1.0, cos)))), 3)
    return out


def evaluate_pose_graph(stamps: Sequence[float], ground_truth: Sequence[np.ndarray],
                        constraints: Sequence[LoopConstraint],
                        settings: PoseGraphSettings = PoseGraphSettings(),
                        odometry: Sequence[np.ndarray] | None = None) -> tuple[dict[str, Any], list[Run]]:
    """The experiment of the module docstring on one trajectory: results and the runs to plot."""
    settings.validate()
    t = np.asarray(stamps, np.float64)
    if len(t) < 2 or len(ground_truth) != len(t) or (odometry is not None and len(odometry) != len(t)):
        raise ConfigError('pose graph: needs one ground-truth (and odometry) pose per stamp, at least two')
    odo = list(odometry) if odometry is not None else drift(ground_truth, settings.drift)
    ref = metrics.trajectory(t, ground_truth)
    edges, accuracy, unmatched = [], [], 0
    for c in constraints:
        i, j = node_index(t, c.t_match), node_index(t, c.t_query)
        if i is None or j is None or i == j:
            unmatched += 1
            continue
        edges.append((i, j, c))
        accuracy.append(closure_accuracy(c, ground_truth[i], ground_truth[j]))

    def run(name: str, closures: list, config: PoseGraphConfig) -> Run:
        result = optimise(odo, closures, settings.drift, config)
        errors = metrics.trajectory_errors(ref, metrics.trajectory(t, result.poses))
        return Run(name, result.poses, errors, result)

    kernel = settings.graph
    plain = replace(kernel, robust_kernel='none', kernel_parameter=None)
    runs = [Run('before', odo, metrics.trajectory_errors(ref, metrics.trajectory(t, odo)))]
    results: dict[str, Any] = {
        'nodes': len(t), 'odometry': 'given' if odometry is not None else 'drifted ground truth',
        'drift_model': settings.drift.describe(), 'graph': describe(kernel),
        'closures': {'given': len(constraints), 'used': len(edges), 'not_on_a_node': unmatched,
                     'direction_only': sum(c.direction_only for _, _, c in edges),
                     'metric': sum(not c.direction_only for _, _, c in edges),
                     'accuracy_vs_ground_truth': _accuracy_summary(accuracy),
                     'metric_accuracy_vs_ground_truth': _accuracy_summary(
                         [a for a, (_, _, c) in zip(accuracy, edges) if not c.direction_only])},
        'before': runs[0].errors,
    }
    if edges:
        runs.append(run('after', edges, kernel))
        runs.append(run('after_without_kernel', edges, plain))
        results['after'] = runs[1].errors
        results['after_without_kernel'] = runs[2].errors
        results['optimiser'] = runs[1].graph.summary()
        before, after = runs[0].errors['ate_m']['rmse'], runs[1].errors['ate_m']['rmse']
        results['ate_ratio'] = round(after / before, 4) if before > 0 else None
    pair = false_pair(ground_truth, t, settings) if settings.false_closure else None
    if pair is not None:
        i, j = pair
        truth = relative(ground_truth[i], ground_truth[j])
        section: dict[str, Any] = {
            'place_node': i, 'query_node': j, 't_match': float(t[i]), 't_query': float(t[j]),
            'distance_m': round(float(np.linalg.norm(truth[:3, 3])), 2),
            'yaw_difference_deg': round(math.degrees(abs(yaw_of(truth))), 2)}
        for variant, metric in (('direction_only', False), ('metric', True)):
            wrong = (i, j, false_constraint(float(t[j]), float(t[i]), metric))
            with_kernel = run(f'false_{variant}', edges + [wrong], kernel)
            without = run(f'false_{variant}_without_kernel', edges + [wrong], plain)
            runs += [with_kernel, without]
            a, b = with_kernel.errors['ate_m']['rmse'], without.errors['ate_m']['rmse']
            weights = {k: v for k, v in with_kernel.graph.closures[-1].items() if k.endswith('_weight')}
            section[variant] = {'with_kernel': with_kernel.errors, 'without_kernel': without.errors,
                                'false_closure_weights': weights,
                                'ate_without_over_with_kernel': round(b / a, 3) if a > 0 else None}
        results['false_closure'] = section
    return results, runs


def _accuracy_summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {'count': len(rows)}
    for key in ('rotation_error_deg', 'direction_error_deg', 'translation_error_m', 'range_m'):
        values = [r[key] for r in rows if key in r]
        if values:
            out[key] = {name: round(float(np.percentile(values, q)), 3)
                        for name, q in (('median', 50), ('p90', 90), ('max', 100))}
    return out


STYLES = {'before': ('tab:red', '-'), 'after': ('tab:blue', '-'), 'after_without_kernel': ('tab:cyan', ':'),
          'false_direction_only': ('tab:blue', '-'),
          'false_direction_only_without_kernel': ('tab:orange', '-'),
          'false_metric': ('tab:green', '--'), 'false_metric_without_kernel': ('tab:purple', '-')}


def plot_runs(runs: Sequence[Run], ground_truth: Sequence[np.ndarray], edges: Sequence[tuple[int, int]],
              false: tuple[int, int] | None, path: str) -> None:
    """Top view: ground truth, odometry and optimised trajectories, the closures drawn between their two
    nodes on the odometry (the drift they must remove); a second panel with the injected false closure
    (drawn on the ground truth), with and without the kernel."""
    from vpr_ros.evaluation.report import _plt

    plt = _plt()
    by = {r.name: r for r in runs}
    gt = positions(ground_truth)
    panels = [('published closures', ['before', 'after', 'after_without_kernel'], edges, None)]
    if false is not None and 'false_direction_only' in by:
        names = [n for n in STYLES if n.startswith('false')]
        panels.append(('with one injected false closure', names, [], false))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 6.5), squeeze=False)
    for ax, (title, names, drawn, wrong) in zip(axes[0], panels):
        ax.plot(gt[:, 0], gt[:, 1], color='black', lw=2.5, alpha=0.35, label='ground truth')
        for name in names:
            if name in by:
                xyz = positions(by[name].poses)
                colour, style = STYLES[name]
                ax.plot(xyz[:, 0], xyz[:, 1], color=colour, ls=style, lw=1.2,
                        label=f"{name.replace('_', ' ')} (ATE {by[name].errors['ate_m']['rmse']:.2f} m)")
        odo = positions(by['before'].poses)
        for k, (i, j) in enumerate(drawn):
            ax.plot(odo[[i, j], 0], odo[[i, j], 1], color='tab:green', lw=0.8,
                    label=f'closures on the odometry ({len(drawn)})' if k == 0 else None)
        if wrong is not None:
            i, j = wrong
            ax.plot(gt[[i, j], 0], gt[[i, j], 1], 'o--', color='red', lw=1.5, ms=5,
                    label='injected false closure')
        ax.set_aspect('equal', adjustable='datalim')
        ax.set_xlabel('x [m]')
        ax.set_ylabel('y [m]')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc='best')
        ax.set_title(f'{title} (not aligned: all start at the first pose; ATE is SE(3)-aligned)', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class GraphInputs:
    stamps: np.ndarray
    ground_truth: list[np.ndarray]
    odometry: list[np.ndarray] | None
    constraints: list[LoopConstraint]
    frames_without_odometry: int = 0


# A published closure as evaluate_loops records it: the decision, the metric solve against its place (None:
# none was tried) and the place's map pose.
Published = tuple['LoopDecision', 'MetricPose | None', 'Pose | None']


class PoseGraphHook:
    """What ``evaluate_loops`` calls at the end (``pose_graph=``): frames' (stamp, ground-truth pose) in
    order and the closures the verified filter published -> results section, plots into ``out_dir``.
    Each closure's constraint is the one the node publishes (:func:`vpr_ros.slam.constraints.published`)."""

    def __init__(self, settings: PoseGraphSettings | None = None, odometry: 'PoseTrack | None' = None,
                 body_from_camera: np.ndarray = BODY_FROM_OPTICAL) -> None:
        self.settings = settings or PoseGraphSettings()
        self.settings.validate()
        self.odometry = odometry
        self.body_from_camera = body_from_camera

    def inputs(self, trajectory: Sequence[tuple[float, 'Pose']],
               closures: Sequence[Published]) -> GraphInputs:
        """The nodes (frames with a ground-truth pose, and an odometry pose when a track is given) and the
        constraints of the verified decisions."""
        stamps, gt, odo, dropped = [], [], [], 0
        for t, pose in trajectory:
            o = self.odometry.at(t) if self.odometry is not None else None
            if pose is None or (self.odometry is not None and o is None):
                dropped += 1
                continue
            stamps.append(t)
            gt.append(pose_matrix(pose))
            if o is not None:
                odo.append(pose_matrix(o))
        if len(stamps) < 2:
            raise SourceError('pose graph: fewer than two frames have both a ground-truth and an odometry '
                              'pose')
        metric = self.settings.metric_closures
        constraints = [published(d, solved if metric else None,
                                 pose_matrix(place) if place is not None else None, self.body_from_camera)
                       for d, solved, place in closures if d.accepted and d.verification is not None]
        return GraphInputs(np.asarray(stamps), gt, odo if self.odometry is not None else None, constraints,
                           dropped)

    def __call__(self, trajectory: Sequence[tuple[float, 'Pose']], closures: Sequence[Published],
                 out_dir: str | None) -> dict[str, Any]:
        inp = self.inputs(trajectory, closures)
        results, runs = evaluate_pose_graph(inp.stamps, inp.ground_truth, inp.constraints, self.settings,
                                            inp.odometry)
        results['frames_without_odometry'] = inp.frames_without_odometry
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            path = os.path.join(out_dir, 'pose_graph.png')
            plot_experiment(results, runs, inp, path)
            results['files'] = [path]
        return results


def plot_experiment(results: dict[str, Any], runs: Sequence[Run], inp: GraphInputs, path: str) -> None:
    """plot_runs of one experiment: its closures on their nodes and its false closure."""
    edges = [(node_index(inp.stamps, c.t_match), node_index(inp.stamps, c.t_query)) for c in inp.constraints]
    fc = results.get('false_closure')
    plot_runs(runs, inp.ground_truth, [(i, j) for i, j in edges if i is not None and j is not None],
              (fc['place_node'], fc['query_node']) if fc else None, path)


__all__ = ['GraphInputs', 'PoseGraphHook', 'Published', 'PoseGraphSettings', 'Run', 'evaluate_pose_graph',
           'false_constraint', 'false_pair', 'plot_experiment', 'plot_runs']
