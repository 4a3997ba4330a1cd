"""Calibration of the confidence on the sample world, per encoder, traversal and threshold (issue 24).

Describes the sample world (seed 0) as ``bench_sequence_recall.py`` does (same ``--cache`` files),
builds a map of the ``mapping`` traversal, fits its confidence model for each ``--dists`` threshold
on the map alone (``Localizer.calibrate``, as ``build-map`` / ``evaluate --dist`` do), then runs the
``query`` and ``viewpoint`` traversals through the ``Localizer`` in time order and prints, over the
*answerable* queries (a map place within the threshold; the confidence is P(top-1 right) for a
query of a mapped place):

* ``ECE``: expected calibration error (10 equal-width bins), mean confidence and top-1 accuracy;
* ``floor``: the ECE a perfectly calibrated confidence would show on the same answers (outcomes
  drawn as Bernoulli(confidence), median and 90th percentile of 200 draws), i.e. what binning a
  few hundred answers measures by chance;
* with ``--sequence-length L`` also the answers of distance-spaced sequences (ground-truth poses as
  odometry), whose confidence must be finite on every answer.

The model never sees the queries' labels.

    .venv/bin/python benchmarks/bench_confidence.py [--encoders anyloc_vlad effnet_gem]
        [--dists 5 10 25] [--scale 1.0] [--cache DIR] [--sequence-length 10]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, os.path.dirname(__file__))

from bench_sequence_recall import TRAVERSALS, describe_world  # noqa: E402

from vpr_ros.frames import Pose  # noqa: E402
from vpr_ros.localization import IdentityOnly, Localizer  # noqa: E402
from vpr_ros.mapdb.store import VprMap  # noqa: E402
from vpr_ros.matching.confidence import expected_calibration_error  # noqa: E402
from vpr_ros.matching.sequence import SequenceConfig  # noqa: E402


def build_map(world: dict[str, np.ndarray], name: str) -> VprMap:
    desc = world['mapping_desc']
    vmap = VprMap.empty({'name': name, 'dim': int(desc.shape[1]), 'config': {}})
    for stamp, p, v in zip(world['mapping_stamp'], world['mapping_pos'], desc):
        vmap.add(float(stamp), Pose.from_xy_yaw(float(p[0]), float(p[1]), 0.0), v[None])
    return vmap


def ece_floor(confidence: np.ndarray, draws: int = 200, seed: int = 0) -> tuple[float, float]:
    """(median, 90th percentile) ECE of outcomes drawn from the confidences themselves."""
    rng = np.random.default_rng(seed)
    eces = [expected_calibration_error(confidence, rng.random(len(confidence)) < confidence)['ece']
            for _ in range(draws)]
    return float(np.median(eces)), float(np.percentile(eces, 90))


def run(localizer: Localizer, world: dict[str, np.ndarray], traversal: str, dist_m: float,
        sequence: SequenceConfig | None) -> dict[str, float] | None:
    localizer.configure_sequence(sequence or SequenceConfig())
    place_xy = world['mapping_pos'][:, :2]
    conf, right, answerable = [], [], []
    frames = zip(world[f'{traversal}_stamp'], world[f'{traversal}_pos'], world[f'{traversal}_desc'])
    for stamp, p, v in frames:
        odometry = Pose.from_xy_yaw(float(p[0]), float(p[1]), 0.0) if sequence is not None else None
        loc = localizer.search(float(stamp), v[None], odometry=odometry)
        d = np.linalg.norm(place_xy - p[:2], axis=1)
        answerable.append(bool((d <= dist_m).any()))
        right.append(bool(d[loc.matches[0].place_id] <= dist_m))
        conf.append(loc.confidence)
    a = np.asarray(answerable)
    if not a.any():
        return None
    c, y = np.asarray(conf)[a], np.asarray(right)[a]
    out = expected_calibration_error(c, y)
    median, p90 = ece_floor(c[np.isfinite(c)])
    return {'n': int(a.sum()), 'ece': out['ece'], 'conf': out['mean_confidence'], 'acc': out['accuracy'],
            'nan': int((~np.isfinite(c)).sum()), 'floor': median, 'floor90': p90}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--encoders', nargs='+', default=['anyloc_vlad', 'effnet_gem'])
    p.add_argument('--dists', type=float, nargs='+', default=[5.0, 10.0, 25.0])
    p.add_argument('--scale', type=float, default=1.0, help='sample-world size (1 = ~1.2 km loop)')
    p.add_argument('--cache', default=None, help='directory to keep descriptors in')
    p.add_argument('--sequence-length', type=int, default=0,
                   help='also rate distance-spaced sequence answers')
    args = p.parse_args(argv)
    print(f'load {os.getloadavg()[0]:.1f}; ECE over answerable queries; floor = ECE of a calibrated '
          'confidence on the same answers (median / p90)')
    for encoder_name in args.encoders:
        world = describe_world(encoder_name, args.scale, args.cache)
        vmap = build_map(world, encoder_name)
        for dist in args.dists:
            localizer = Localizer(vmap, IdentityOnly(vmap.meta.encoder), top_k=10)
            t0 = time.perf_counter()
            model = localizer.calibrate(dist)
            fit_s = time.perf_counter() - t0
            trained = 'no model' if model is None else \
                f'{model.correct}/{model.examples} self-retrievals right, window {model.exclude_s:g}'
            print(f'\n{encoder_name}, {dist:g} m: map {len(vmap)} places, {trained} (fit {fit_s:.2f} s)')
            modes = [('single frame', None)]
            if args.sequence_length:
                modes.append((f'sequence {args.sequence_length}',
                              SequenceConfig(length=args.sequence_length)))
            for traversal in TRAVERSALS:
                for label, seq in modes:
                    r = run(localizer, world, traversal, dist, seq)
                    if r is None:
                        print(f'  {traversal:<10} {label:<12} no answerable query')
                        continue
                    print(f'  {traversal:<10} {label:<12} n {r["n"]:4d}  ECE {r["ece"]:.3f}'
                          f'  conf {r["conf"]:.3f}  acc {r["acc"]:.3f}'
                          f'  floor {r["floor"]:.3f} / {r["floor90"]:.3f}'
                          + (f'  NaN {r["nan"]}' if r['nan'] else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
