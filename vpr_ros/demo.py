"""`vpr-ros demo` / `make demo`: the whole job on the embedded sample world.

Sample bags -> map (default encoder) -> offline evaluation of the query traversal, next to the
raw-pixel baseline -> live replay of the query bag through the ROS node over DDS -> a summary.
Everything lands in one folder; re-running reuses the sample bags already there.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from vpr_ros import deps
from vpr_ros.errors import VprError
from vpr_ros.evaluation.metrics import recall_text
from vpr_ros.evaluation.report import plot_recall_curves, write_json
from vpr_ros.evaluation.results import EvaluationResults
from vpr_ros.ros.replay_config import ReplayConfig


def _build_and_evaluate(sample: dict[str, str], encoder_name: str,
                        out: str) -> tuple[EvaluationResults, dict[str, Any], str]:
    """(the evaluation's results, the map build's figures, the map's path)."""
    from vpr_ros.encoders import create_encoder
    from vpr_ros.localization import Localizer
    from vpr_ros.pipeline import build_map, evaluate
    from vpr_ros.sources import open_source

    map_path = os.path.join(out, 'maps', encoder_name)
    encoder = create_encoder(encoder_name)
    _, stats = build_map(open_source(sample['mapping']), encoder, map_path,
                         description='demo mapping traversal')
    localizer = Localizer.from_map(map_path, top_k=10)
    results = evaluate(localizer, open_source(sample['query']), os.path.join(out, 'offline', encoder_name))
    build = {'places': stats.places, 'seconds': round(stats.total_s, 2),
             'images_per_s': round(stats.images_per_s, 2)}
    return results, build, map_path


def _replay(config: ReplayConfig) -> int:
    """The live replay's exit code, as `vpr-ros replay` would end: a missing ROS package or a user error
    is one line and 2 (the demo's summary records the code and carries on)."""
    if deps.require('vpr-ros demo (live replay)', ros=True):
        return deps.EXIT_MISSING
    from vpr_ros.ros.replay import run

    try:
        return int(run(config))
    except VprError as exc:
        print(f'vpr-ros demo: replay: error: {exc}', file=sys.stderr)
        return 2


def run_demo(args: argparse.Namespace) -> int:
    from vpr_ros.sample import generate_sample

    t0 = time.perf_counter()
    out = args.out
    os.makedirs(out, exist_ok=True)
    sample_dir = os.path.join(out, 'sample')
    traversals = ('mapping', 'query')
    bags = {name: os.path.join(sample_dir, name) for name in traversals}
    if not all(os.path.isdir(p) for p in bags.values()):
        print(f'[1/4] rendering the sample world into {sample_dir}')
        info = generate_sample(sample_dir, scale=args.scale, traversals=traversals)
        bags = dict(info.bags)
    else:
        print(f'[1/4] reusing the sample bags in {sample_dir}')
    summary: dict[str, Any] = {'encoders': {}}
    curves = {}
    for step, name in (('2/4', args.encoder), ('3/4', 'raw_pixels')):
        print(f'[{step}] map + offline evaluation with {name}')
        res, build, map_path = _build_and_evaluate(bags, name, out)
        r = res['retrieval']
        summary['encoders'][name] = {'recall': r['recall'], 'timing_ms': r['timing_ms'], 'build': build,
                                     'map': map_path, 'report': os.path.join(out, 'offline', name)}
        curves[name] = r['recall_curve']
    plot_recall_curves(curves, os.path.join(out, 'recall_comparison.png'),
                       'Sample world: query traversal vs mapping traversal')
    if not args.no_replay:
        print('[4/4] live replay of the query bag through the localizer node over DDS')
        replay_out = os.path.join(out, 'replay')
        code = _replay(ReplayConfig(bags['query'], summary['encoders'][args.encoder]['map'], out=replay_out))
        summary['replay'] = {'exit_code': code, 'report': replay_out}
        results_path = os.path.join(replay_out, 'results.json')
        if code == 0 and os.path.isfile(results_path):
            import json

            with open(results_path, encoding='utf-8') as fh:
                live: EvaluationResults = json.load(fh)
            summary['replay'].update({k: live.get(k) for k in ('live', 'loop_closure') if k in live})
            summary['replay']['recall'] = live['retrieval']['recall']
        elif code != 0:
            print(f'live replay failed with exit code {code}')
    summary['wall_time_s'] = round(time.perf_counter() - t0, 1)
    write_json(os.path.join(out, 'summary.json'), summary)
    print('\n=== vpr_ros demo summary ===')
    for name, s in summary['encoders'].items():
        print(f"offline {name:12s} {recall_text(s['recall'])}   "
              f"encode {s['timing_ms']['encode']['mean']:.1f} ms/frame, "
              f"map build {s['build']['images_per_s']:.1f} img/s")
    if 'replay' in summary and summary['replay'].get('recall'):
        print(f"live    {args.encoder:12s} {recall_text(summary['replay']['recall'])}")
    print(f"reports in {out}/ (summary.json, recall_comparison.png, offline/*, replay/), "
          f"{summary['wall_time_s']:.0f} s in total")
    return 0 if summary.get('replay', {}).get('exit_code', 0) == 0 else 1
