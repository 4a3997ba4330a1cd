"""Pose-graph ATE before/after on the sample world: does a SLAM back end get better from vpr_ros closures?

Renders the sample world (``--scale``), runs ``evaluate --loops`` once per traversal (the map grown
from empty; closures verified with the sample camera's intrinsics, ``sample_camera``: essential
matrix, relative rotation and direction), then, for each drift seed, the pose-graph experiment of
``evaluate --loops --pose-graph`` (vpr_ros/slam/evaluation.py) on the same published closures: ATE
(SE(3)-aligned RMSE, evo) of the drifted odometry and of the optimised graph, without the kernel, and
with one injected false closure (direction-only and metric) with and without the kernel. Prints one
markdown row per seed and a summary per traversal; target: ATE after <= 1/5 of ATE before with the
default drift model.

    .venv/bin/python benchmarks/bench_pose_graph.py [--scale 1] [--traversals mapping query]
        [--seeds 10] [--encoder anyloc_vlad] [--sample DIR] [--out DIR]
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
from vpr_ros.slam.evaluation import PoseGraphHook, PoseGraphSettings, evaluate_pose_graph, plot_experiment  # noqa: E402
from vpr_ros.slam.graph import PoseGraphConfig  # noqa: E402
from vpr_ros.slam.odometry import DriftModel  # noqa: E402
from vpr_ros.sources.bag import BagSource  # noqa: E402

TARGET_RATIO = 0.2


def closures_of(bag: str, encoder: str, dist: float):
    """The graph inputs of one evaluate --loops run (the published verified closures and the frames)."""
    settings = LoopEvaluationSettings(camera=sample_camera())
    hook, recorded = PoseGraphHook(), []

    def record(trajectory, decisions, out_dir):
        recorded.append(hook.inputs(trajectory, decisions))
        return {}

    loops = evaluate_loops(create_encoder(encoder), BagSource(bag), None, settings, Thresholds(dist),
                           progress=False, pose_graph=record)['loops']
    return recorded[0], loops['with_verification']


def ate(res: dict, key: str = 'after') -> float:
    return res[key]['ate_m']['rmse']


def summary(label: str, rows: list[tuple[float, float]]) -> str:
    before, after = np.array(rows).T
    ratios = after / before
    return (f'{label}: median after/before {np.median(ratios):.3f}, mean ATE {before.mean():.2f} -> '
            f'{after.mean():.2f} m (ratio of means {after.mean() / before.mean():.3f}); '
            f'target <= {TARGET_RATIO} met on {int((ratios <= TARGET_RATIO).sum())}/{len(ratios)} seeds')


def seed_table(name: str, inp, seeds: int, out: str | None) -> list[tuple[float, float]]:
    """One markdown row per seed of the default drift model; returns (ATE before, after) per seed."""
    print('| seed | ATE before [m] | after [m] | after/before | no kernel [m] | DCS kernel [m] | '
          '+ false dir.-only: kernel / none [m] | + false metric: kernel / none [m] | optimise ms |')
    print('|---|---|---|---|---|---|---|---|---|')
    rows = []
    for seed in range(seeds):
        t0 = time.perf_counter()
        res, runs = evaluate_pose_graph(inp.stamps, inp.ground_truth, inp.constraints,
                                        PoseGraphSettings(DriftModel(seed=seed)))
        ms = (time.perf_counter() - t0) * 1e3 / max(len(runs) - 1, 1)
        if seed == 0 and out:
            os.makedirs(out, exist_ok=True)
            plot_experiment(res, runs, inp, os.path.join(out, f'pose_graph_{name}.png'))
        if 'after' not in res:
            print(f'| {seed} | {ate(res, "before"):.2f} | no closure published |')
            continue
        dcs, _ = evaluate_pose_graph(inp.stamps, inp.ground_truth, inp.constraints,
                                     PoseGraphSettings(DriftModel(seed=seed), PoseGraphConfig('dcs'),
                                                       false_closure=False))
        fc = res.get('false_closure', {})
        cells = [' / '.join(f"{fc[v][k]['ate_m']['rmse']:.2f}" for k in ('with_kernel', 'without_kernel'))
                 if v in fc else 'n/a' for v in ('direction_only', 'metric')]
        print(f"| {seed} | {ate(res, 'before'):.2f} | {ate(res):.2f} | {res['ate_ratio']:.3f} | "
              f"{ate(res, 'after_without_kernel'):.2f} | {ate(dcs):.2f} | {cells[0]} | {cells[1]} | "
              f'{ms:.0f} |')
        rows.append((ate(res, 'before'), ate(res)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scale', type=float, default=1.0)
    parser.add_argument('--traversals', nargs='+', default=['mapping', 'query'])
    parser.add_argument('--seeds', type=int, default=10)
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
            inp, verified = closures_of(os.path.join(root, name), args.encoder, args.dist)
            print(f'\n{name}: {len(inp.stamps)} frames, {len(inp.constraints)} published closures '
                  f"({verified['correct']} correct at {args.dist:g} m), encoder {args.encoder}\n")
            rows = seed_table(name, inp, args.seeds, args.out)
            if rows:
                print('\n' + summary(f'{name}, default drift', rows))
            if rows and args.stronger_yaw > 0:
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
