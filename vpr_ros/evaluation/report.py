"""Writing an evaluation to a folder: results.json plus PNG plots people would rather look at."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vpr_ros.evaluation.metrics import place_arrays
from vpr_ros.evaluation.results import Calibration, EvaluationResults, FullPrecisionThreshold, PrecisionRecall


def _plt():
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def _integer_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def write_json(path: str, data: Any) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as fh:
        json.dump(data, fh, indent=1, default=_json_default)
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f'not JSON serialisable: {type(obj).__name__}')


def plot_recall_curves(curves: Mapping[str, Sequence[float]], path: str, title: str = 'Recall@N') -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, curve in curves.items():
        if not len(curve):  # no answerable query: recall undefined, nothing to draw
            ax.plot([], [], label=f'{name} (recall undefined: no answerable query)')
            continue
        n = np.arange(1, len(curve) + 1)
        ax.plot(n, np.asarray(curve) * 100, marker='o', ms=3, label=f'{name} (R@1 {curve[0] * 100:.1f}%)')
    ax.set_xlabel('N (top-N retrieved places)')
    ax.set_ylabel('Recall@N [%]')
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(loc='lower right', fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_trajectory(places: Sequence[Any], per_query: Sequence[Mapping[str, Any]], path: str,
                    title: str = 'Map and queries') -> None:
    plt = _plt()
    pos, _, _ = place_arrays(places)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    ax.plot(pos[:, 0], pos[:, 1], '.', color='0.6', ms=3, label=f'map places ({len(places)})')
    groups = {'correct': ([], [], 'tab:green'), 'wrong': ([], [], 'tab:red'),
              'no positive in map': ([], [], 'k')}
    for q in per_query:
        if 'gt_position' not in q:
            continue
        if not q['answerable']:
            key = 'no positive in map'
        else:
            key = 'correct' if q.get('correct_at_1') else 'wrong'
        groups[key][0].append(q['gt_position'][0])
        groups[key][1].append(q['gt_position'][1])
        if key == 'wrong' and q['place_ids']:
            m = pos[q['place_ids'][0]]
            ax.plot([q['gt_position'][0], m[0]], [q['gt_position'][1], m[1]], '-', color='tab:red', lw=0.4,
                    alpha=0.35)
    for name, (xs, ys, color) in groups.items():
        if xs:
            ax.plot(xs, ys, 'o' if name != 'no positive in map' else 'x', color=color, ms=3.5,
                    label=f'query: {name} ({len(xs)})')
    ax.set_aspect('equal', adjustable='datalim')
    ax.set_xlabel('x [m]')
    ax.set_ylabel('y [m]')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='best')
    ax.set_title(title + ' (red lines: wrong top-1 match)')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_pairs(pairs: Sequence[tuple[np.ndarray, np.ndarray | None, str, bool]], path: str) -> None:
    """Rows of (query image, matched map thumbnail, caption, correct)."""
    if not pairs:
        return
    plt = _plt()
    fig, axes = plt.subplots(len(pairs), 2, figsize=(6, 2.1 * len(pairs)), squeeze=False)
    for row, (query, match, caption, ok) in zip(axes, pairs):
        row[0].imshow(query)
        row[0].set_title('query', fontsize=8)
        if match is not None:
            row[1].imshow(match)
        row[1].set_title(caption, fontsize=8, color='tab:green' if ok else 'tab:red')
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pr(pr: PrecisionRecall, path: str, marks: int = 6) -> None:
    """Top-1 precision/recall over the score threshold, with a few thresholds marked on the curve
    (what a user reads it for: which score to cut at)."""
    if not pr.get('precision'):
        return
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    recall, precision = np.asarray(pr['recall']) * 100, np.asarray(pr['precision']) * 100
    ax.plot(recall, precision)
    thresholds = pr.get('thresholds') or []
    if len(thresholds) == len(recall) and len(recall) > 1:
        for i in np.unique(np.linspace(0, len(recall) - 1, marks).astype(int)):
            ax.plot(recall[i], precision[i], 'o', color='tab:orange', ms=4)
            ax.annotate(f'{thresholds[i]:.3g}', (recall[i], precision[i]), textcoords='offset points',
                        xytext=(4, -10), fontsize=7, color='tab:orange')
        ax.plot([], [], 'o', color='tab:orange', ms=4, label='score threshold')
        ax.legend(fontsize=7, loc='lower left')
    ax.set_xlabel('recall [%]')
    ax.set_ylabel('precision [%]')
    ax.set_xlim(0, 101)
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.set_title(f"Top-1 precision/recall over the score threshold\n(AUC {pr['auc']:.3f})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_loop_closures(places: Sequence[Any], judged: Sequence[Mapping[str, Any]], query_track: Any,
                       path: str, title: str = 'Loop closures') -> None:
    """The map's places with every published loop closure drawn from the query's ground-truth
    position to the matched place (green correct, red wrong)."""
    plt = _plt()
    pos, _, _ = place_arrays(places)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    if len(pos):
        ax.plot(pos[:, 0], pos[:, 1], '.', color='0.6', ms=3, label=f'map places ({len(places)})')
    counts = {True: 0, False: 0}
    for j in judged:
        query = query_track.at(j['t_query'])
        pid = j.get('place_id', -1)
        if query is None or not 0 <= pid < len(pos):
            continue
        ok = bool(j['correct'])
        counts[ok] += 1
        colour = 'tab:green' if ok else 'tab:red'
        ax.plot([query.position[0], pos[pid, 0]], [query.position[1], pos[pid, 1]], '-', color=colour,
                lw=0.8, alpha=0.7)
        ax.plot(query.position[0], query.position[1], 'o', color=colour, ms=3)
    for ok, name in ((True, 'correct'), (False, 'wrong')):
        ax.plot([], [], '-o', color='tab:green' if ok else 'tab:red', ms=3, label=f'{name} ({counts[ok]})')
    ax.set_aspect('equal', adjustable='datalim')
    ax.set_xlabel('x [m]')
    ax.set_ylabel('y [m]')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='best')
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_latency(latencies_ms: Sequence[float], path: str, title: str = 'End-to-end latency') -> None:
    """Histogram of per-frame latencies with p50 and p95 marked."""
    if not len(latencies_ms):
        return
    plt = _plt()
    values = np.asarray(latencies_ms, np.float64)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.hist(values, bins=min(50, max(5, len(values) // 5)), color='tab:blue', alpha=0.8)
    for q, style in ((50, '-'), (95, '--')):
        v = float(np.percentile(values, q))
        ax.axvline(v, color='k', ls=style, lw=1, label=f'p{q} {v:.0f} ms')
    ax.set_xlabel('latency [ms]')
    ax.set_ylabel('frames')
    ax.yaxis.set_major_locator(_integer_ticks())
    ax.legend(fontsize=8)
    ax.set_title(f'{title} ({len(values)} frames)', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out_dir: str, results: EvaluationResults, places: Sequence[Any],
                 pairs: Sequence[tuple[np.ndarray, np.ndarray | None, str, bool]] = (),
                 label: str = 'vpr_ros') -> list[str]:
    """results.json + recall_at_n.png + trajectory.png + pr_curve.png (+ matches.png); returns paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, 'results.json')]
    write_json(paths[0], results)
    retrieval = results['retrieval']
    plot_recall_curves({label: retrieval['recall_curve']}, os.path.join(out_dir, 'recall_at_n.png'))
    plot_trajectory(places, retrieval['per_query'], os.path.join(out_dir, 'trajectory.png'))
    paths += [os.path.join(out_dir, 'recall_at_n.png'), os.path.join(out_dir, 'trajectory.png')]
    if 'precision_recall' in results and results['precision_recall'].get('precision'):
        plot_pr(results['precision_recall'], os.path.join(out_dir, 'pr_curve.png'))
        paths.append(os.path.join(out_dir, 'pr_curve.png'))
    if (results.get('calibration') or {}).get('bins'):
        plot_reliability(results['calibration'], os.path.join(out_dir, 'reliability.png'), label)
        paths.append(os.path.join(out_dir, 'reliability.png'))
    if pairs:
        plot_pairs(pairs, os.path.join(out_dir, 'matches.png'))
        paths.append(os.path.join(out_dir, 'matches.png'))
    return paths


def plot_reliability(calibration: Calibration, path: str, label: str = '') -> None:
    """Reliability diagram: accuracy of the top-1 against the stated confidence, per confidence bin."""
    plt = _plt()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 5.5), sharex=True, height_ratios=[3, 1])
    bins = calibration['bins']
    mid = [(b['low'] + b['high']) / 2 for b in bins]
    width = [b['high'] - b['low'] for b in bins]
    ax.bar(mid, [b['accuracy'] for b in bins], width, edgecolor='k', alpha=0.7, label='accuracy of the top-1')
    ax.plot([b['confidence'] for b in bins], [b['accuracy'] for b in bins], 'o', color='C3', ms=4,
            label="accuracy at the bin's mean confidence")
    ax.plot([0, 1], [0, 1], '--', color='0.4', label='perfect calibration')
    ax.set_ylabel('accuracy')
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc='upper left')
    ax.set_title(f"{label} confidence: ECE {calibration['ece']} ({calibration['answers']} answers, "
                 f"{calibration['dist_m']:g} m)", fontsize=9)
    hist.bar(mid, [b['count'] for b in bins], width, edgecolor='k', color='0.6')
    hist.set_xlabel('confidence (P(top-1 right), calibrated on the map)')
    hist.set_ylabel('answers')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def query_match_pairs(per_query: Sequence[Mapping[str, Any]], frames: Any, thumbnail: Any,
                      count: int = 6) -> list[tuple[np.ndarray, np.ndarray | None, str, bool]]:
    """(query image, top-1 map thumbnail, caption, correct) for a few chosen queries.

    ``frames``: an iterable of Frames (one decode-only pass picks the chosen ones by stamp);
    ``thumbnail``: place id -> RGB preview or None (``VprMap.thumbnail``).
    """
    chosen = {per_query[i]['stamp']: i for i in choose_pair_indices(per_query, count)}
    images = {f.stamp: f.rgb for f in frames if f.stamp in chosen}
    pairs = []
    for stamp, qi in sorted(chosen.items(), key=lambda kv: kv[1]):
        q = per_query[qi]
        pid = q['place_ids'][0]
        caption = f"top-1 place {pid}: {q['gt_distances_m'][0]:.1f} m away, score {q['scores'][0]:.3f}"
        pairs.append((images.get(stamp, np.zeros((8, 8, 3), np.uint8)), thumbnail(pid), caption,
                      bool(q['correct_at_1'])))
    return pairs


def choose_pair_indices(per_query: Sequence[Mapping[str, Any]], count: int = 6) -> list[int]:
    """A few queries worth looking at: evenly spread, with failures included when there are any."""
    answerable = [i for i, q in enumerate(per_query) if q.get('answerable') and q.get('place_ids')]
    if not answerable:
        return []
    wrong = [i for i in answerable if not per_query[i].get('correct_at_1')]
    right = [i for i in answerable if per_query[i].get('correct_at_1')]
    n_wrong = min(len(wrong), count // 3 if right else count)
    pick = [wrong[int(j)] for j in np.linspace(0, len(wrong) - 1, n_wrong)] if n_wrong else []
    rest = count - len(pick)
    if right and rest > 0:
        pick += [right[int(j)] for j in np.linspace(0, len(right) - 1, min(rest, len(right)))]
    return sorted(set(pick))


def plot_loop_pr(curves: Mapping[str, FullPrecisionThreshold], path: str) -> None:
    """Loop-closure precision/recall over the candidate score threshold, one line per variant."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, th in curves.items():
        curve = th['curve']
        if not curve['precision']:
            continue
        r100 = th['recall_at_100_precision']
        ax.plot(np.asarray(curve['recall']) * 100, np.asarray(curve['precision']) * 100,
                label=f"{name.replace('_', ' ')} (R@100%P {r100 * 100 if r100 is not None else 0:.1f}%, "
                      f"min_score {th['min_score']})")
    ax.set_xlabel('recall of loop frames [%]')
    ax.set_ylabel('precision [%]')
    ax.set_xlim(0, 101)
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='lower left')
    ax.set_title('loop-closure candidates over the score threshold')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_loop_funnel(funnels: Mapping[str, Mapping[str, int]], path: str, title: str = '') -> None:
    """Loop frames left after each stage of the recall funnel, one bar group per variant."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    names = list(funnels)
    stages = [k for k in next(iter(funnels.values()))] if funnels else []
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(stages))
    for i, name in enumerate(names):
        counts = [funnels[name][s] for s in stages]
        bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, counts, width, label=name.replace('_', ' '))
        ax.bar_label(bars, fontsize=6)
    ax.set_xticks(x, [s.replace('_', ' ') for s in stages], rotation=25, ha='right', fontsize=8)
    ax.set_ylabel('loop frames')
    ax.grid(alpha=0.3, axis='y')
    ax.legend(fontsize=7)
    ax.set_title(title or 'loop-closure recall funnel: loop frames left after each stage')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
