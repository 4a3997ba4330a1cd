"""Sequence vs single-frame Recall@1 on the sample world, at tight and loose thresholds (issue 24).

Renders the sample world (seed 0), describes the ``mapping`` traversal as the map and the
``query`` (appearance change) and ``viewpoint`` (5-6 m aside, yawed ~32 deg) traversals as
queries with each ``--encoders`` entry (the vocabulary of anyloc_vlad is fitted on the mapping
frames, as build-map does), then prints Recall@1 of single frames and of sequences of each
``--lengths`` entry, at each ``--dists`` threshold (metres; queries with no map place that close
are left out, as in ``evaluate``). Sequence answers are what the Localizer gives a user: the
first ``length - 1`` frames are answered single-frame. Rows per traversal: the default settings,
OpenSeqSLAM's local contrast window (``contrast_window`` 10; the previous default), and two
speed changes the constant-velocity model must survive: ``stops`` (every 40th frame held for 10
frames: a robot waiting) and ``2x`` (every other frame: twice the mapping speed).

Each sequence row is printed twice: frame-spaced (``spacing: frames``, SeqSLAM) and
distance-spaced (``spacing: distance``, SMART) with the query odometry of a seeded drift model,
not the ground truth: every travelled increment of the true poses scaled by ``1 + s`` (``s`` =
``--odom-scale-errors``, default -10 % and +10 %), times ``1 + N(0, 5 %)`` per frame, plus
``N(0, 2 cm)`` per axis per frame (odometry jitter, which also moves a robot that stands still).
The map places' poses are the mapping run's.

    .venv/bin/python benchmarks/bench_sequence_recall.py [--encoders anyloc_vlad effnet_gem]
        [--lengths 1 3 5 10] [--dists 5 10 25] [--scale 1.0] [--cache DIR]
        [--odom-scale-errors -0.1 0.1] [--seed 0]

``--cache DIR`` keeps the descriptors (``DIR/<encoder>_<scale>.npz``) for re-runs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from vpr_ros.encoders import create_encoder  # noqa: E402
from vpr_ros.matching.sequence import SequenceConfig, sequence_match  # noqa: E402
from vpr_ros.sample import render_traversal  # noqa: E402

TRAVERSALS = ('query', 'viewpoint')
SPEEDS = ('as recorded', 'stops', '2x')


def describe_world(encoder_name: str, scale: float, cache: str | None) -> dict[str, np.ndarray]:
    path = os.path.join(cache, f'{encoder_name}_{scale}.npz') if cache else None
    if path and os.path.exists(path):
        return dict(np.load(path))
    encoder = create_encoder(encoder_name, {})
    frames = {name: render_traversal(name, seed=0, scale=scale)[0] for name in ('mapping', *TRAVERSALS)}
    if encoder.requires_fit:
        encoder.fit([f.rgb for f in frames['mapping']])
    out = {}
    for name, fr in frames.items():
        vectors = [v[0] for i in range(0, len(fr), 8) for v in encoder.describe([f.rgb for f in fr[i:i + 8]])]
        out[f'{name}_desc'] = np.stack(vectors).astype(np.float32)
        out[f'{name}_stamp'] = np.array([f.stamp for f in fr])
        out[f'{name}_pos'] = np.array([f.pose.position for f in fr])
    if path:
        os.makedirs(cache, exist_ok=True)
        np.savez(path, **out)
    return out


def speed_change(n: int, kind: str) -> np.ndarray:
    """Query frame indices replayed in order: as recorded, held at stops, or every other one."""
    if kind == 'stops':
        return np.concatenate([[i] * (10 if i % 40 == 39 else 1) for i in range(n)]).astype(int)
    if kind == '2x':
        return np.arange(0, n, 2)
    return np.arange(n)


def drifted_odometry(positions: np.ndarray, scale_error: float, seed: int) -> np.ndarray:
    """Odometry positions of a drift model: true increments scaled by ``1 + scale_error``, times
    ``1 + N(0, 0.05)`` per frame, plus ``N(0, 0.02 m)`` per axis per frame, integrated from the start."""
    rng = np.random.default_rng(seed)
    steps = np.diff(positions, axis=0)
    steps = steps * (1.0 + scale_error) * (1.0 + 0.05 * rng.standard_normal((len(steps), 1)))
    steps = steps + 0.02 * rng.standard_normal(steps.shape)
    return np.concatenate([positions[:1], positions[:1] + np.cumsum(steps, axis=0)])


def top1(sims: np.ndarray, stamps: np.ndarray, config: SequenceConfig | None,
         odometry: np.ndarray | None = None, place_positions: np.ndarray | None = None) -> np.ndarray:
    single = np.argmax(sims, axis=1)
    if config is None:
        return single
    ranked = sequence_match(sims, stamps, config, query_positions=odometry, place_positions=place_positions)
    return np.array([r[0].place_id if r else s for r, s in zip(ranked, single)])


def recall_at_1(answer: np.ndarray, dist: np.ndarray, threshold: float) -> float:
    """NaN when no query has a map place within ``threshold``."""
    answerable = (dist <= threshold).any(axis=1)
    right = dist[np.arange(len(answer)), answer] <= threshold
    return float(right[answerable].mean()) if answerable.any() else float('nan')


def _cells(values: list[float], reference: list[float] | None = None) -> str:
    out = []
    for i, r in enumerate(values):
        below = reference is not None and r < reference[i] - 1e-9
        out.append(f'{"-":>7} ' if np.isnan(r) else f'{r:7.3f}{"<" if below else " "}')
    return ' '.join(out)


def run_traversal(world: dict[str, np.ndarray], traversal: str, kind: str, lengths: list[int],
                  dists: list[float], scale_errors: list[float], seed: int) -> list[tuple[float, str]]:
    """Print one traversal's rows; return (sequence - single Recall@1, where) of the default rows
    (frame-spaced, and distance-spaced for every odometry scale error)."""
    mapped = world['mapping_desc'].astype(np.float64)
    stamps = world['mapping_stamp']
    frames = speed_change(len(world[f'{traversal}_desc']), kind)
    sims = world[f'{traversal}_desc'][frames].astype(np.float64) @ mapped.T
    qpos = world[f'{traversal}_pos'][frames]
    # the drift model runs on the replayed frames: a held frame is a robot standing still
    odometry = {err: drifted_odometry(qpos, err, seed) for err in scale_errors}
    dist = np.linalg.norm(qpos[:, None, :2] - world['mapping_pos'][None, :, :2], axis=2)
    single = [recall_at_1(top1(sims, stamps, None), dist, d) for d in dists]
    title = f'{traversal} ({kind}, {len(frames)} frames)'
    print(f'  {title:<36}' + ' '.join(f'{f"{d:g} m":>7} ' for d in dists))
    print(f'    {"single frame":<34}' + _cells(single))
    settings: list[tuple[str, dict, float | None]] = [('frames, ', {'spacing': 'frames'}, None)]
    settings += [(f'distance, odom {err:+.0%}, ', {}, err) for err in scale_errors]
    if kind == 'as recorded':
        settings.append(('frames, local window 10, ', {'spacing': 'frames', 'contrast_window': 10}, None))
    gaps = []
    for length in lengths:
        for label, extra, err in settings:
            answers = top1(sims, stamps, SequenceConfig(length=length, **extra),
                           None if err is None else odometry[err], world['mapping_pos'])
            rec = [recall_at_1(answers, dist, d) for d in dists]
            print(f'    {label + f"sequence {length}":<34}' + _cells(rec, single))
            if 'contrast_window' not in extra:
                gaps += [(r - s, f'{traversal} {kind}, {label}length {length}, {d:g} m')
                         for r, s, d in zip(rec, single, dists) if not np.isnan(r)]
    return gaps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--encoders', nargs='+', default=['anyloc_vlad', 'effnet_gem'])
    p.add_argument('--lengths', type=int, nargs='+', default=[1, 3, 5, 10])
    p.add_argument('--dists', type=float, nargs='+', default=[5.0, 10.0, 25.0])
    p.add_argument('--scale', type=float, default=1.0, help='sample-world size (1 = ~1.2 km loop)')
    p.add_argument('--cache', default=None, help='directory to keep descriptors in')
    p.add_argument('--odom-scale-errors', type=float, nargs='+', default=[-0.1, 0.1],
                   help='odometry distance scale errors of the drift model (distance-spaced rows)')
    p.add_argument('--seed', type=int, default=0, help='seed of the odometry drift model')
    args = p.parse_args(argv)
    for encoder_name in args.encoders:
        t0 = time.perf_counter()
        world = describe_world(encoder_name, args.scale, args.cache)
        print(f'\n{encoder_name}: map {len(world["mapping_desc"])} places (described in '
              f'{time.perf_counter() - t0:.0f} s); Recall@1, "<" = below single frames, "-" = no positives')
        gaps = {kind: [] for kind in SPEEDS}
        for traversal in TRAVERSALS:
            for kind in SPEEDS:
                gaps[kind] += run_traversal(world, traversal, kind, args.lengths, args.dists,
                                            args.odom_scale_errors, args.seed)
        for kind, found in gaps.items():
            for spacing in ('frames', 'distance'):
                gap, where = min(g for g in found if f', {spacing},' in g[1])
                print(f'  {encoder_name}, {kind}, {spacing}-spaced: worst sequence - single-frame '
                      f'Recall@1 {gap:+.3f} ({where})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
