import pytest

from vpr_ros.evaluation.metrics import (
    QueryRecord,
    Thresholds,
    evaluate_retrieval,
    loop_closure_metrics,
    precision_recall_curve,
)
from vpr_ros.frames import Pose
from vpr_ros.mapdb.store import Place
from vpr_ros.sources.bag import PoseTrack

PLACES = [Place(i, 100.0 + i, Pose.from_xy_yaw(30.0 * i, 0, 0)) for i in range(4)]


def rec(x, ids, scores=None, yaw=0.0):
    return QueryRecord(0.0, Pose.from_xy_yaw(x, 0, yaw), ids,
                       scores or [1.0 - 0.1 * i for i in range(len(ids))])


def test_recall_at_n_known_answer():
    records = [rec(0, [0, 1]), rec(31, [2, 1]), rec(61, [0, 3]), rec(500, [1, 2])]  # last: no positive
    res = evaluate_retrieval(records, PLACES, Thresholds(25.0), ns=(1, 2))
    assert res['answerable_queries'] == 3
    assert res['recall'] == {'R@1': pytest.approx(1 / 3, abs=1e-4), 'R@2': pytest.approx(2 / 3, abs=1e-4)}
    assert res['per_query'][1]['gt_distances_m'] == [pytest.approx(29.0), pytest.approx(1.0)]


def test_yaw_threshold():
    res = evaluate_retrieval([rec(0, [0], yaw=3.0)], PLACES, Thresholds(25.0, yaw_deg=30.0), ns=(1,))
    assert res['answerable_queries'] == 0


def test_precision_recall_curve():
    records = [rec(0, [0], [0.9]), rec(30, [0], [0.8]), rec(60, [2], [0.7])]
    pr = precision_recall_curve(records, PLACES)
    assert pr['precision'] == [1.0, 0.5, pytest.approx(0.6667)]
    assert pr['recall_at_100_precision'] == pytest.approx(1 / 3, abs=1e-3)


def test_loop_closure_metrics():
    track = PoseTrack([200.0, 210.0], [Pose.from_xy_yaw(0, 0, 0), Pose.from_xy_yaw(30, 0, 0)])
    events = [(200.0, 100.0), (210.0, 103.0)]  # first correct (place 0), second wrong (place 3)
    res = loop_closure_metrics(events, track, PLACES, [200.0, 210.0], min_separation_s=30.0)
    assert res['precision'] == 0.5 and res['closable_queries'] == 2 and res['recall'] == 0.5


def test_loop_closure_comparison_replays_the_unverified_filter() -> None:
    from vpr_ros.evaluation.metrics import loop_closure_comparison
    from vpr_ros.frames import Pose
    from vpr_ros.matching.loop_closure import LoopClosureConfig

    poses = {float(t): Pose.from_xy_yaw(10.0 * t, 0.0, 0.0) for t in range(10)}  # a first pass
    poses.update({100.0 + k: Pose.from_xy_yaw(10.0 * k, 1.0, 0.0) for k in range(4)})  # revisits of 0..3
    poses[104.0] = Pose.from_xy_yaw(500.0, 0.0, 0.0)  # somewhere new, that looks like place 9
    frames = [(100.0 + k, [(k, 0.9, float(k))]) for k in range(4)] + [(104.0, [(9, 0.95, 9.0)])]
    cfg = LoopClosureConfig(min_score=0.5, consistency_frames=1, max_rate_hz=0)
    out = loop_closure_comparison([(100.0 + k, float(k)) for k in range(4)], frames, poses.get, poses.get,
                                  [(t, p) for t, p in poses.items() if t < 100], cfg, 5.0)
    assert out['loop_frames'] == 4
    assert out['published_by_node'] == {'published': 4, 'correct': 4, 'precision': 1.0,
                                        'loop_frames_closed': 4, 'recall': 1.0}
    assert out['without_verification']['published'] == 5 and out['without_verification']['precision'] == 0.8
    assert out['score_threshold']['min_score'] is None  # the wrong one scores highest


def test_a_loop_frame_is_lost_at_the_first_stage_it_fails() -> None:
    from vpr_ros.evaluation.metrics import loop_frame_lost_at, loop_funnel
    from vpr_ros.matching.loop_closure import LoopDecision, LoopStatus

    def correct(pid: int) -> bool:
        return pid in (3, 4)

    def decision(status: LoopStatus, place: int = 3, verified: int | None = 3, candidates=(7, 3)):
        return LoopDecision(status, 100.0, 1.0, place, 0.5, candidates=candidates, verified_place=verified,
                            checked=True)

    S = LoopStatus
    cases = [(loop_frame_lost_at(False, [], None, correct), 'answered'),
             (loop_frame_lost_at(True, [7, 8], decision(S.LOOP_DETECTED, place=8), correct), 'retrieved'),
             (loop_frame_lost_at(True, [3], decision(S.TOO_RECENT, candidates=()), correct), 'separated'),
             (loop_frame_lost_at(True, [3], decision(S.FAILED_GEOMETRIC_VERIFICATION, verified=None),
                                 correct), 'verified'),
             (loop_frame_lost_at(True, [3], decision(S.RATE_LIMITED, verified=7), correct), 'verified'),
             (loop_frame_lost_at(True, [3], decision(S.FAILED_TEMPORAL_CONSISTENCY), correct), 'agreed'),
             (loop_frame_lost_at(True, [3], decision(S.RATE_LIMITED), correct), 'not_rate_limited'),
             (loop_frame_lost_at(True, [3], decision(S.LOOP_DETECTED, place=9), correct), 'published'),
             (loop_frame_lost_at(True, [3], decision(S.LOOP_DETECTED, place=4), correct), None)]
    assert [got for got, _ in cases] == [want for _, want in cases]
    # without verification the top candidate stands in for the verified place
    unchecked = LoopDecision(S.LOOP_DETECTED, 100.0, 1.0, 3, 0.5, candidates=(3,))
    assert loop_frame_lost_at(True, [3], unchecked, correct) is None
    # a correct published place counts even when a neighbour keyframe, not a retrieved one, verified it
    assert loop_frame_lost_at(True, [7], decision(S.LOOP_DETECTED, place=4, verified=7), correct) is None
    funnel = loop_funnel([got for got, _ in cases])
    assert list(funnel.values()) == [9, 8, 7, 6, 4, 3, 2, 1]


def test_reliability_diagram(tmp_path) -> None:
    from vpr_ros.evaluation.report import plot_reliability
    from vpr_ros.matching.confidence import expected_calibration_error

    right = [True] * 19 + [False] + [True] * 3 + [False] * 7
    cal = expected_calibration_error([0.95] * 20 + [0.3] * 10, right)
    cal['dist_m'] = 25.0
    plot_reliability(cal, str(tmp_path / 'r.png'), 'test')
    assert (tmp_path / 'r.png').stat().st_size > 1000
