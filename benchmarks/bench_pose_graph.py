"""Pose-graph ATE before/after on the sample world: does a SLAM back end get better from vpr_ros closures?

Renders the sample world (``--scale``), runs ``evaluate --loops`` once per traversal (the map grown
from empty; closures verified with the sample camera's intrinsics, ``sample_camera``), each closure the
constraint the node publishes (``vpr_ros.slam.constraints.published``: metric when the PnP solve against
the place is good, else direction-only). Then, for each drift seed, the pose-graph experiment of
``evaluate --loops --pose-graph`` (vpr_ros/slam/evaluation.py) on the same closures: ATE (SE(3)-aligned
RMSE, evo) of the drifted odometry and of the optimised graph; the same graph with every closure
direction-only; with *exact* closures at the same node pairs (the ground-truth relative pose, metric,
sigma 1 cm: what no measurement can beat, so the floor set by where the closures are); without the
kernel; and with one injected false closure (direction-only and metric) with and without the kernel.
Prints one markdown row per seed and a summary per traversal; target: ATE after <= 1/5 of ATE before
with the default drift model. ``--exact-seeds N`` also counts, over N seeds, how often exact closures
and the published closures reach the target (the graph only, no false closure).

    .venv/bin/python benchmarks/bench_pose_graph.py [--scale 1] [--traversals mapping query]
        [--seeds 10] [--exact-seeds 100] [--keyframe-interval 1.0] [--encoder anyloc_vlad]
        [--sample DIR] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from vpr_ros.encoders import create_encoder  # noqa: E402
from vpr_ros.evaluation.metrics import Thresholds  # noqa: E402
from vpr_ros.pipeline import LoopEvaluationSettings, evaluate_loops  # noqa: E402
from vpr_ros.sample import generate_sample, sample_camera  # noqa: E402
from vpr_ros.slam import metrics  # noqa: E402
from vpr_ros.slam.constraints import LoopConstraint  # noqa: E402
from vpr_ros.slam.evaluation import (  # noqa: E402
    GraphInputs,
    PoseGraphHook,
    PoseGraphSettings,
    evaluate_pose_graph,
    node_index,
    plot_experiment,
)
from vpr_ros.slam.graph import PoseGraphConfig, optimise  # noqa: E402
from vpr_ros.slam.odometry import DriftModel, drift  # noqa: E402
from vpr_ros.slam.poses import positions, relative  # noqa: E402
from vpr_ros.sources.bag import BagSource  # noqa: E402

TARGET_RATIO = 0.2
EXACT_SIGMA_M, EXACT_SIGMA_RAD = 0.01, 0.002


def closures_of(bag: str, encoder: str, dist: float,
                keyframe_interval: float) -> tuple[GraphInputs, GraphInputs, dict, dict]:
    """The graph inputs of one evaluate --loops run (the frames and the published verified closures) as the
    node publishes them and all direction-only; the verified filter's loop summary; the solve statuses."""
    settings = LoopEvaluationSettings(camera=sample_camera(), keyframe_min_interval=keyframe_interval)
    recorded = []

    def record(trajectory, closures, out_dir):
        recorded.append((trajectory, closures))
        return {}

    loops = evaluate_loops(create_encoder(encoder), BagSource(bag), None, settings, Thresholds(dist),
                           progress=False, pose_graph=record)['loops']
    trajectory, closures = recorded[0]
    statuses: dict[str, int] = {}
    for _, solved, _ in closures:
        key = solved.status if solved is not None else 'not tried'
        statuses[key] = statuses.get(key, 0) + 1
    as_published = PoseGraphHook().inputs(trajectory, closures)
    direction = PoseGraphHook(PoseGraphSettings(metric_closures=False)).inputs(trajectory, closures)
    return as_published, direction, loops['with_verification'], statuses


def exact_closures(inp: GraphInputs) -> list:
    """(place node, query node, constraint) at the published closures' node pairs with the ground-truth
    relative pose as a metric constraint of sigma 1 cm / 0.1 deg."""
    cov = np.diag([EXACT_SIGMA_M ** 2] * 3 + [EXACT_SIGMA_RAD ** 2] * 3)
    out = []
    for c in inp.constraints:
        i, j = node_index(inp.stamps, c.t_match), node_index(inp.stamps, c.t_query)
        if i is not None and j is not None and i != j:
            T = relative(inp.ground_truth[i], inp.ground_truth[j])
            out.append((i, j, LoopConstraint(c.t_query, c.t_match, T[:3, :3], T[:3, 3], cov)))
    return out


def published_edges(inp: GraphInputs) -> list:
    """(place node, query node, constraint) of the published closures."""
    out = [(node_index(inp.stamps, c.t_match), node_index(inp.stamps, c.t_query), c) for c in inp.constraints]
    return [(i, j, c) for i, j, c in out if i is not None and j is not None and i != j]


def graph_ate(inp: GraphInputs, edges: list, model: DriftModel) -> tuple[float, float]:
    """(ATE before, ATE after) of the graph with ``edges`` on the odometry drifted by ``model``."""
    ref = metrics.trajectory(inp.stamps, inp.ground_truth)
    odo = drift(inp.ground_truth, model)
    after = optimise(odo, edges, model).poses
    return (metrics.ate(ref, metrics.trajectory(inp.stamps, odo))['rmse'],
            metrics.ate(ref, metrics.trajectory(inp.stamps, after))['rmse'])


def path_span(inp: GraphInputs, nodes: list[int]) -> str:
    """Where along the ground-truth path [m] the nodes lie (first - last)."""
    xyz = positions(inp.ground_truth)
    along = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(xyz, axis=0), axis=1))]
    return f'{along[min(nodes)]:.0f}-{along[max(nodes)]:.0f} m of {along[-1]:.0f} m'


def ate(res: dict, key: str = 'after') -> float:
    return res[key]['ate_m']['rmse']


def summary(label: str, rows: list[tuple[float, float]]) -> str:
    before, after = np.array(rows).T
    ratios = after / before
    return (f'{label}: median after/before {np.median(ratios):.3f}, mean ATE {before.mean():.2f} -> '
            f'{after.mean():.2f} m (ratio of means {after.mean() / before.mean():.3f}); '
            f'target <= {TARGET_RATIO} met on {int((ratios <= TARGET_RATIO).sum())}/{len(ratios)} seeds')


def seed_table(name: str, inp: GraphInputs, direction: GraphInputs, seeds: int,
               out: str | None) -> dict[str, list[tuple[float, float]]]:
    """One markdown row per seed of the default drift model; returns (ATE before, after) per seed for the
    closures as published, all direction-only and exact."""
    print('| seed | ATE before [m] | after [m] | after/before | all direction-only [m] | '
          'exact closures [m] | no kernel [m] | DCS kernel [m] | + false dir.-only: kernel / none [m] | '
          '+ false metric: kernel / none [m] | optimise ms |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    rows: dict[str, list[tuple[float, float]]] = {'published': [], 'direction_only': [], 'exact': []}
    exact = exact_closures(inp)
    for seed in range(seeds):
        model = DriftModel(seed=seed)
        t0 = time.perf_counter()
        res, runs = evaluate_pose_graph(inp.stamps, inp.ground_truth, inp.constraints,
                                        PoseGraphSettings(model))
        ms = (time.perf_counter() - t0) * 1e3 / max(len(runs) - 1, 1)
        if seed == 0 and out:
            os.makedirs(out, exist_ok=True)
            plot_experiment(res, runs, inp, os.path.join(out, f'pose_graph_{name}.png'))
        if 'after' not in res:
            print(f'| {seed} | {ate(res, "before"):.2f} | no closure published |')
            continue
        quiet = PoseGraphSettings(model, false_closure=False)
        dcs, _ = evaluate_pose_graph(inp.stamps, inp.ground_truth, inp.constraints,
                                     PoseGraphSettings(model, PoseGraphConfig('dcs'), false_closure=False))
        plain, _ = evaluate_pose_graph(direction.stamps, direction.ground_truth, direction.constraints, quiet)
        floor = graph_ate(inp, exact, model)[1]
        fc = res.get('false_closure', {})
        cells = [' / '.join(f"{fc[v][k]['ate_m']['rmse']:.2f}" for k in ('with_kernel', 'without_kernel'))
                 if v in fc else 'n/a' for v in ('direction_only', 'metric')]
        print(f"| {seed} | {ate(res, 'before'):.2f} | {ate(res):.2f} | {res['ate_ratio']:.3f} | "
              f"{ate(plain):.2f} | {floor:.2f} | {ate(res, 'after_without_kernel'):.2f} | {ate(dcs):.2f} | "
              f'{cells[0]} | {cells[1]} | {ms:.0f} |')
        rows['published'].append((ate(res, 'before'), ate(res)))
        rows['direction_only'].append((ate(res, 'before'), ate(plain)))
        rows['exact'].append((ate(res, 'before'), floor))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scale', type=float, default=1.0)
    parser.add_argument('--traversals', nargs='+', default=['mapping', 'query'])
    parser.add_argument('--seeds', type=int, default=10)
    parser.add_argument('--keyframe-interval', type=float,
                        default=LoopEvaluationSettings.keyframe_min_interval,
                        help='seconds between keyframes of the grown map (evaluate --keyframe-interval, '
                             'default %(default)s): denser keyframes give the metric solve more landmarks')
    parser.add_argument('--exact-seeds', type=int, default=100,
                        help='seeds over which the published and exact closures are counted against the '
                             'target (the graph only; 0: no)')
    parser.add_argument('--encoder', default='anyloc_vlad')
    parser.add_argument('--dist', type=float, default=10.0, help='a closure is correct within this distance')
    parser.add_argument('--stronger-yaw', type=float, default=0.4, metavar='DEG',
                        help='also summarise a drift with this yaw sigma [deg/sqrt(m)] (0: no)')
    parser.add_argument('--sample', help='reuse the bags in this folder (vpr-ros sample DIR)')
    parser.add_argument('--out', help='write the seed-0 plot of each traversal here')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.sample or os.path.join(tmp, 'sample')
        if not args.sample:
            generate_sample(root, scale=args.scale, traversals=tuple(args.traversals), progress=False)
        print(f'drift model: {DriftModel().describe()}; load {os.getloadavg()[0]:.1f} (2 cores, shared)')
        for name in args.traversals:
            inp, direction, verified, statuses = closures_of(os.path.join(root, name), args.encoder,
                                                             args.dist, args.keyframe_interval)
            metric = sum(not c.direction_only for c in inp.constraints)
            nodes = [node_index(inp.stamps, t) for c in inp.constraints for t in (c.t_match, c.t_query)]
            print(f'\n{name}: {len(inp.stamps)} frames, {len(inp.constraints)} published closures '
                  f"({verified['correct']} correct at {args.dist:g} m), {metric} metric; metric solves "
                  f'against the place: {dict(sorted(statuses.items()))}; encoder {args.encoder}')
            if nodes:
                places = [node_index(inp.stamps, c.t_match) for c in inp.constraints]
                queries = [node_index(inp.stamps, c.t_query) for c in inp.constraints]
                print(f'closures: places at {path_span(inp, places)}, queries at {path_span(inp, queries)} '
                      'along the path\n')
            rows = seed_table(name, inp, direction, args.seeds, args.out)
            if rows['published']:
                print()
                for key, label in (('published', 'as published'), ('direction_only', 'all direction-only'),
                                   ('exact', 'exact closures')):
                    print(summary(f'{name}, default drift, {label}', rows[key]))
            if inp.constraints and args.exact_seeds:
                runs = (('as published', published_edges(inp)), ('exact closures', exact_closures(inp)))
                for label, edges in runs:
                    many = [graph_ate(inp, edges, DriftModel(seed=seed)) for seed in range(args.exact_seeds)]
                    print(summary(f'{name}, default drift, {label}, {args.exact_seeds} seeds', many))
            if rows['published'] and args.stronger_yaw > 0:
                strong = []
                for seed in range(args.seeds):
                    model = DriftModel(yaw_sigma_deg=args.stronger_yaw, seed=seed)
                    res, _ = evaluate_pose_graph(inp.stamps, inp.ground_truth, inp.constraints,
                                                 PoseGraphSettings(model, false_closure=False))
                    strong.append((ate(res, 'before'), ate(res)))
                print(summary(f'{name}, yaw sigma {args.stronger_yaw} deg/sqrt(m)', strong))
    return 0


if __name__ == '__main__':
    sys.exit(main())
