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
