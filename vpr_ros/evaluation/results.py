"""The sections of results.json that other modules read (the report's plots, the CLI's summaries, the demo,
the benchmarks), as typed dictionaries.

They are plain dicts at run time, written to JSON unchanged; the types say which keys a section has, so
a reader names keys a type checker knows and the test that runs ``evaluate`` checks a real results.json
against them (test/evaluation/test_results.py). Keys only some runs have are in the ``total=False`` part.
"""
from __future__ import annotations

from typing import Any, TypedDict

Recall = dict[str, float | None]   # 'R@1' -> fraction of the answerable queries; None: none answerable


class _TimingCount(TypedDict):
    count: int


class TimingStats(_TimingCount, total=False):
    """Milliseconds (:func:`vpr_ros.evaluation.metrics.timing_stats`); just ``count`` when there were none."""

    mean: float
    p50: float
    p95: float
    max: float


class ThresholdsDict(TypedDict):
    dist_m: float
    yaw_deg: float | None


class Retrieval(TypedDict):
    """``retrieval``: Recall@N of the answers (:func:`vpr_ros.evaluation.metrics.evaluate_retrieval`)."""

    queries: int
    answerable_queries: int
    thresholds: ThresholdsDict
    recall: Recall
    recall_curve: list[float]
    # offline: encode, search (TimingStats); live: end_to_end_latency, node_processing
    timing_ms: dict[str, Any]
    per_query: list[dict[str, Any]]


class PrecisionRecall(TypedDict):
    """``precision_recall``: top-1 precision/recall over the score threshold."""

    precision: list[float]
    recall: list[float]
    thresholds: list[float]
    auc: float | None
    recall_at_100_precision: float | None


class _SequenceCounts(TypedDict):
    settings: dict[str, Any]
    enabled: bool
    frames_matched_by_sequence: int | None
    frames_single_frame: int | None


class SequenceSection(_SequenceCounts, total=False):
    """``sequence``; with sequence matching on, the single-frame recall of the same run."""

    single_frame_recall: Recall
    single_frame_recall_curve: list[float]
    sequence_ms: TimingStats


class ReliabilityBin(TypedDict):
    low: float
    high: float
    count: int
    confidence: float
    accuracy: float


class CalibrationError(TypedDict):
    """:func:`vpr_ros.matching.confidence.expected_calibration_error` (None: no answer had a confidence)."""

    ece: float | None
    answers: int
    without_confidence: int
    mean_confidence: float | None
    accuracy: float | None
    brier: float | None
    bins: list[ReliabilityBin]


class Calibration(CalibrationError):
    """``calibration``: how well the confidence predicted a right top-1 on these queries."""

    dist_m: float
    unanswerable: int
    model: dict[str, Any] | None


class _EvaluationCore(TypedDict):
    encoder: dict[str, Any]
    map_places: int
    top_k: int
    retrieval: Retrieval
    precision_recall: PrecisionRecall
    sequence: SequenceSection
    skipped: dict[str, int]
    wall_time_s: float


class EvaluationResults(_EvaluationCore, total=False):
    """results.json of ``vpr-ros evaluate`` (and, with ``live`` and ``loop_closure``, of ``replay``)."""

    calibration: Calibration
    files: list[str]
    live: dict[str, Any]
    loop_closure: dict[str, Any]


class ClosureSummary(TypedDict):
    """Published closures judged at one distance; precision/recall None when there is nothing to divide."""

    published: int
    correct: int
    precision: float | None
    loop_frames_closed: int
    loop_frames: int
    recall: float | None


class ScoreCurve(TypedDict):
    precision: list[float]
    recall: list[float]
    scores: list[float]


class FullPrecisionThreshold(TypedDict):
    """:func:`vpr_ros.evaluation.metrics.full_precision_threshold`."""

    min_score: float | None
    recall_at_100_precision: float | None
    first_wrong_score: float | None
    candidates: int
    correct: int
    positives: int
    auc: float
    curve: ScoreCurve


class LoopRun(ClosureSummary):
    """One filter of ``evaluate --loops`` (``without_verification``, ``with_verification``)."""

    at_dist: dict[str, ClosureSummary]
    statuses: dict[str, int]
    funnel: dict[str, int]          # loop frames left after each stage (the first: all loop frames)
    loop_frames_lost_at: list[dict[str, Any]]
    score_threshold: FullPrecisionThreshold
    events: list[dict[str, Any]]


class LoopsSection(TypedDict):
    """``loops`` of ``evaluate --loops``."""

    frames: int
    keyframes: int
    loop_frames: int
    vocabulary: str
    settings: dict[str, Any]
    verification_ms_per_candidate: TimingStats
    without_verification: LoopRun
    with_verification: LoopRun


class _LoopEvaluationCore(TypedDict):
    encoder: dict[str, Any]
    mode: str
    loops: LoopsSection
    skipped: dict[str, int]
    wall_time_s: float


class LoopEvaluationResults(_LoopEvaluationCore, total=False):
    """results.json of ``vpr-ros evaluate --loops``."""

    pose_graph: dict[str, Any]
    files: list[str]


__all__ = ['Calibration', 'CalibrationError', 'ClosureSummary', 'EvaluationResults', 'FullPrecisionThreshold',
           'LoopEvaluationResults', 'LoopRun', 'LoopsSection', 'PrecisionRecall', 'Recall', 'ReliabilityBin',
           'Retrieval', 'ScoreCurve', 'SequenceSection', 'ThresholdsDict', 'TimingStats']
