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
