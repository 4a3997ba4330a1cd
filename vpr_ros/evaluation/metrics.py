"""Retrieval and loop-closure metrics against ground-truth poses.

Recall@N follows the standard VPR protocol: a query is correct at N if any of its top-N places
lies within ``dist_threshold`` metres (and, optionally, ``yaw_threshold_deg`` degrees of
heading) of the query's ground-truth pose. Queries with no such place in the whole map cannot be
answered and are left out of the denominator (and counted).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vpr_ros.evaluation.results import FullPrecisionThreshold, PrecisionRecall, Recall, Retrieval, TimingStats
from vpr_ros.frames import Pose


@dataclass
class QueryRecord:
    """One query and what the system answered for it."""

    stamp: float
    pose: Pose | None
    place_ids: list[int]
    scores: list[float]
    encode_ms: float = 0.0
    search_ms: float = 0.0
    source: str = ''
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Thresholds:
    dist_m: float = 25.0
    yaw_deg: float | None = None


def _angle_diff_deg(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    d = (np.asarray(a) - np.asarray(b) + math.pi) % (2 * math.pi) - math.pi
    return np.degrees(np.abs(d))


def place_arrays(places: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions (P,3) NaN where unknown, yaws (P,), stamps (P,)) of map places."""
    pos = np.array([p.pose.position if p.pose else (np.nan,) * 3 for p in places], np.float64).reshape(-1, 3)
    yaw = np.array([p.pose.yaw if p.pose else np.nan for p in places], np.float64)
    stamps = np.array([p.stamp for p in places], np.float64)
    return pos, yaw, stamps


def positives_mask(query: Pose, pos: np.ndarray, yaw: np.ndarray,
                   th: Thresholds) -> tuple[np.ndarray, np.ndarray]:
    """(is_positive (P,), distance (P,)) of every map place for one query pose."""
    dist = np.linalg.norm(pos[:, :2] - np.asarray(query.position[:2]), axis=1)
    ok = dist <= th.dist_m
    if th.yaw_deg is not None:
        ok &= _angle_diff_deg(yaw, query.yaw) <= th.yaw_deg
    return ok & np.isfinite(dist), dist


def timing_stats(values_ms: Sequence[float]) -> TimingStats:
    """count, mean, p50, p95 and max of a list of durations in ms (just the count when empty)."""
    if not len(values_ms):
        return {'count': 0}
    x = np.asarray(values_ms, np.float64)
    return {'count': len(x), 'mean': round(float(x.mean()), 3), 'p50': round(float(np.percentile(x, 50)), 3),
            'p95': round(float(np.percentile(x, 95)), 3), 'max': round(float(x.max()), 3)}


def recall_text(recall: Recall) -> str:
    """``R@1 34.0%  R@5 ...``; a recall over no answerable query is printed as undefined, never 0 %."""
    if any(v is None for v in recall.values()):
        return 'recall undefined (no query has a map place within the thresholds)'
    return '  '.join(f'{k} {v * 100:.1f}%' for k, v in recall.items())


def evaluate_retrieval(records: Sequence[QueryRecord], places: Sequence[Any], th: Thresholds = Thresholds(),
                       ns: Sequence[int] = (1, 5, 10)) -> Retrieval:
    """Recall@N, per-query ground truth, and timing statistics."""
    pos, yaw, _ = place_arrays(places)
    max_n = max([len(r.place_ids) for r in records] + [max(ns)])
    hits = np.zeros((len(records), max_n), bool)
    answerable = np.zeros(len(records), bool)
    per_query = []
    for qi, rec in enumerate(records):
        entry: dict[str, Any] = {'stamp': rec.stamp, 'place_ids': list(map(int, rec.place_ids)),
                                 'scores': [round(float(s), 6) for s in rec.scores], 'source': rec.source}
        if rec.pose is not None and len(pos):
            ok, dist = positives_mask(rec.pose, pos, yaw, th)
            answerable[qi] = bool(ok.any())
            entry['gt_position'] = [float(v) for v in rec.pose.position]
            entry['gt_distances_m'] = [round(float(dist[p]), 3) for p in rec.place_ids]
            entry['nearest_place'] = int(np.nanargmin(dist)) if np.isfinite(dist).any() else None
            entry['nearest_distance_m'] = (round(float(np.nanmin(dist)), 3) if np.isfinite(dist).any()
                                           else None)
            if rec.place_ids:
                row = ok[np.asarray(rec.place_ids)]
                hits[qi, :len(row)] = row
            entry['correct_at_1'] = bool(hits[qi, 0])
        entry['answerable'] = bool(answerable[qi])
        entry.update(rec.extra)
        per_query.append(entry)
    cum = np.cumsum(hits, axis=1) > 0
    denom = int(answerable.sum())
    # Recall over no answerable query is undefined, not 0 %: None (and an empty curve), said so when printed.
    curve = [float(cum[answerable, n - 1].mean()) for n in range(1, max_n + 1)] if denom else []
    return {
        'queries': len(records), 'answerable_queries': denom,
        'thresholds': asdict(th),
        'recall': {f'R@{n}': round(curve[n - 1], 4) if denom else None for n in ns if n <= max_n},
        'recall_curve': [round(c, 4) for c in curve],
        'timing_ms': {'encode': timing_stats([r.encode_ms for r in records]),
                      'search': timing_stats([r.search_ms for r in records])},
        'per_query': per_query,
    }


def precision_recall_curve(records: Sequence[QueryRecord], places: Sequence[Any],
                           th: Thresholds = Thresholds()) -> PrecisionRecall:
    """Top-1 precision/recall as the acceptance score threshold varies (VPR loop-closure style).

    A query is *retrieved* when its top-1 score passes the threshold; a retrieved query is a
    true positive when its top-1 place is within the thresholds.
    """
    pos, yaw, _ = place_arrays(places)
    scores, correct, answerable = [], [], []
    for rec in records:
        if rec.pose is None or not rec.place_ids:
            continue
        ok, _ = positives_mask(rec.pose, pos, yaw, th)
        scores.append(rec.scores[0])
        correct.append(bool(ok[rec.place_ids[0]]))
        answerable.append(bool(ok.any()))
    if not scores or not any(answerable):  # no answerable query: recall is undefined
        return {'precision': [], 'recall': [], 'thresholds': [], 'auc': None, 'recall_at_100_precision': None}
    order = np.argsort(-np.asarray(scores))
    c = np.asarray(correct)[order]
    tp = np.cumsum(c)
    precision = tp / np.arange(1, len(c) + 1)
    positives = int(np.sum(answerable))
    recall = tp / positives
    auc = float(np.trapezoid(precision, recall)) if len(c) > 1 else float(precision[0] * recall[0])
    full = recall[precision >= 1.0 - 1e-12]
    return {'precision': [round(float(p), 4) for p in precision],
            'recall': [round(float(r), 4) for r in recall],
            'thresholds': [round(float(s), 5) for s in np.asarray(scores)[order]],
            'auc': round(auc, 4),
            'recall_at_100_precision': round(float(full.max()) if len(full) else 0.0, 4)}


def loop_closure_metrics(events: Sequence[tuple[float, float]], query_track: Any, places: Sequence[Any],
                         query_stamps: Sequence[float], min_separation_s: float = 30.0,
                         th: Thresholds = Thresholds()) -> dict[str, Any]:
    """Precision/recall of accepted loop closures (t_query, t_match) against ground truth.

    ``query_track``: something with ``at(stamp) -> Pose | None`` (a PoseTrack) for the queries.
    A closure is correct when the matched place (found by its stamp) is within the thresholds of
    the query's ground-truth pose. Recall counts the query frames that *could* close a loop (a
    positive place at least ``min_separation_s`` apart in time exists) and got a correct closure.
    """
    pos, yaw, stamps = place_arrays(places)
    correct = 0
    judged = []
    for t_q, t_m in events:
        pose = query_track.at(t_q)
        pid = int(np.argmin(np.abs(stamps - t_m))) if len(stamps) else -1
        ok = False
        if pose is not None and pid >= 0:
            mask, _ = positives_mask(pose, pos, yaw, th)
            ok = bool(mask[pid])
        correct += ok
        judged.append({'t_query': t_q, 't_match': t_m, 'place_id': pid, 'correct': ok})
    closable = 0
    closed = set()
    for t_q in query_stamps:
        pose = query_track.at(t_q)
        if pose is None:
            continue
        mask, _ = positives_mask(pose, pos, yaw, th)
        if (mask & (np.abs(stamps - t_q) >= min_separation_s)).any():
            closable += 1
    for j in judged:
        if j['correct']:
            closed.add(round(j['t_query'], 6))
    return {'events': len(events), 'correct': correct,
            'precision': round(correct / len(events), 4) if events else None,
            'closable_queries': closable,
            'recall': round(min(len(closed), closable) / closable, 4) if closable else None,
            'judged': judged}


def full_precision_threshold(scores: Sequence[float], correct: Sequence[bool],
                             positives: int) -> FullPrecisionThreshold:
    """The lowest score threshold at which every accepted candidate is correct, and the recall there.

    ``scores``/``correct``: one loop-closure candidate per frame (frames without one left out);
    ``positives``: frames that could close a loop (the recall denominator). Accepting candidates
    with score >= ``min_score`` then gives precision 1.0 on this run; ``min_score`` is None when
    even the best-scoring candidate is wrong.
    """
    order = np.argsort(-np.asarray(scores, np.float64), kind='stable')
    s = np.asarray(scores, np.float64)[order]
    c = np.asarray(correct, bool)[order]
    wrong = np.flatnonzero(~c)
    prefix = len(c) if not len(wrong) else int(wrong[0])
    while prefix and len(wrong) and s[prefix - 1] <= s[wrong[0]]:  # a tie with the first wrong one
        prefix -= 1
    tp = np.cumsum(c)
    precision = tp / np.arange(1, len(c) + 1) if len(c) else np.zeros(0)
    recall = tp / max(positives, 1)
    auc = float(np.trapezoid(precision, recall)) if len(c) > 1 else 0.0
    return {'min_score': round(float(s[prefix - 1]), 5) if prefix else None,
            'recall_at_100_precision': round(prefix / positives, 4) if positives else None,
            'first_wrong_score': round(float(s[wrong[0]]), 5) if len(wrong) else None,
            'candidates': len(c), 'correct': int(c.sum()), 'positives': int(positives), 'auc': round(auc, 4),
            'curve': {'precision': [round(float(v), 4) for v in precision],
                      'recall': [round(float(v), 4) for v in recall],
                      'scores': [round(float(v), 5) for v in s]}}


def loop_closure_comparison(published: Sequence[tuple[float, float]],
                            frames: Sequence[tuple[float, Sequence[tuple[int, float, float]]]],
                            query_pose: Any, match_pose: Any, pool: Sequence[tuple[float, Any]],
                            config: Any, dist_m: float) -> dict[str, Any]:
    """Published closures against the same frames' candidates accepted without verification.

    ``frames``: (query stamp, [(place id, score, map stamp), ...]) in time order, as the node
    published them; ``query_pose(t)`` / ``match_pose(t_match)``: ground-truth poses (None when
    unknown); ``pool``: (stamp, pose) of every place a query could have closed against (the loaded
    map, plus the run's own frames in incremental mode); ``config``: the node's LoopClosureConfig.
    A closure is correct when the two poses are within ``dist_m``; a loop frame has a pool place
    at least ``min_time_separation`` s away within ``dist_m``.
    """
    from vpr_ros.matching.loop_closure import LoopClosureFilter

    def correct(t_q: float, t_m: float) -> bool:
        a, b = query_pose(t_q), match_pose(t_m)
        return bool(a is not None and b is not None
                    and math.dist(a.position[:2], b.position[:2]) <= dist_m)

    sep = config.min_time_separation
    pool_t = np.array([t for t, p in pool if p is not None], np.float64)
    pool_xy = np.array([p.position[:2] for _, p in pool if p is not None], np.float64).reshape(-1, 2)
    loop_frames = set()
    for t, _ in frames:
        pose = query_pose(t)
        if pose is not None and len(pool_t):
            near = np.linalg.norm(pool_xy - np.asarray(pose.position[:2]), axis=1) <= dist_m
            if (near & (np.abs(pool_t - t) >= sep)).any():
                loop_frames.add(t)

    def summary(events: Sequence[tuple[float, float]]) -> dict[str, Any]:
        ok = [(t_q, t_m) for t_q, t_m in events if correct(t_q, t_m)]
        closed = {t_q for t_q, _ in ok} & loop_frames
        return {'published': len(events), 'correct': len(ok),
                'precision': round(len(ok) / len(events), 4) if events else None,
                'loop_frames_closed': len(closed),
                'recall': round(len(closed) / len(loop_frames), 4) if loop_frames else None}

    @dataclass
    class _Row:
        place_id: int
        score: float
        stamp: float

    flt = LoopClosureFilter(config)
    unverified = []
    scores, right = [], []
    for t, rows in frames:
        cands = [_Row(int(p), float(s), float(m)) for p, s, m in rows]
        decision = flt.update(t, cands)
        if decision.accepted:
            unverified.append((t, decision.t_match))
        eligible = [c for c in cands if abs(t - c.stamp) >= sep]
        if eligible:
            scores.append(eligible[0].score)
            right.append(correct(t, eligible[0].stamp))
    return {'loop_frames': len(loop_frames), 'dist_m': dist_m, 'published_by_node': summary(published),
            'without_verification': summary(unverified),
            'score_threshold': _without_curve(full_precision_threshold(scores, right, len(loop_frames)))}


def _without_curve(threshold: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in threshold.items() if k != 'curve'}


# Where a loop frame's closure is lost, in the order a frame passes them; 'published' counts frames
# whose published closure is correct.
LOOP_FUNNEL_STAGES = ('answered', 'retrieved', 'separated', 'verified', 'agreed', 'not_rate_limited',
                      'published')


def loop_frame_lost_at(answered: bool, retrieved: Sequence[int], decision: Any,
                       correct: Any) -> str | None:
    """The first funnel stage a loop frame fails (None: a correct closure was published).

    ``retrieved``: the frame's top-K place ids; ``decision``: its
    :class:`~vpr_ros.matching.loop_closure.LoopDecision`; ``correct(place_id)``: ground truth.
    Stages: answered (the vocabulary was fitted), retrieved (a correct place in the top-K),
    separated (... among the candidates far enough in time and above min_score), verified (the
    frame's verified place is correct; without verification, its top candidate), agreed (enough
    agreeing views or frames), not_rate_limited, published (the published place is correct).
    """
    from vpr_ros.matching.loop_closure import LoopStatus

    if not answered:
        return 'answered'
    if decision is not None and decision.accepted and correct(decision.place_id):
        return None  # the published place counts, whichever view of the place verified first
    if not any(correct(p) for p in retrieved):
        return 'retrieved'
    if decision is None or not any(correct(p) for p in decision.candidates):
        return 'separated'
    checked = decision.verified_place if decision.checked else decision.place_id
    if checked is None or not correct(checked):
        return 'verified'
    if decision.status not in (LoopStatus.RATE_LIMITED, LoopStatus.LOOP_DETECTED):
        return 'agreed'
    if decision.status is LoopStatus.RATE_LIMITED:
        return 'not_rate_limited'
    return None if correct(decision.place_id) else 'published'


def loop_funnel(lost_at: Sequence[str | None]) -> dict[str, int]:
    """Loop frames reaching each stage of LOOP_FUNNEL_STAGES (the first entry: all loop frames)."""
    out = {'loop_frames': len(lost_at)}
    remaining = len(lost_at)
    for stage in LOOP_FUNNEL_STAGES:
        remaining -= sum(1 for s in lost_at if s == stage)
        out[stage] = remaining
    return out
