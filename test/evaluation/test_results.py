"""vpr_ros.evaluation.results: the typed results.json sections, and the checker the evaluate tests use to
hold real results to them (test_cli, test_pipeline_loops)."""
from __future__ import annotations

from typing import Any, TypedDict

from test.helpers import type_mismatches
from vpr_ros.evaluation.metrics import QueryRecord, Thresholds, evaluate_retrieval, full_precision_threshold
from vpr_ros.evaluation.results import CalibrationError, FullPrecisionThreshold, Retrieval, TimingStats
from vpr_ros.frames import Pose
from vpr_ros.matching.confidence import expected_calibration_error


class _Inner(TypedDict):
    n: int


class _Outer(TypedDict, total=False):
    inner: _Inner
    values: list[float | None]
    anything: Any


def test_the_checker_finds_missing_extra_and_mistyped_keys() -> None:
    assert type_mismatches({'inner': {'n': 1}, 'values': [1.5, None, 2], 'anything': object()}, _Outer) == []
    assert type_mismatches({}, _Outer) == []  # total=False: every key optional
    assert type_mismatches({'inner': {}}, _Outer) == ["$.inner: _Inner lacks 'n'"]
    assert type_mismatches({'inner': {'n': 1, 'm': 2}}, _Outer) == ["$.inner: 'm' is not a key of _Inner"]
    assert type_mismatches({'inner': {'n': True}}, _Outer) == ['$.inner.n: True is not int']
    assert len(type_mismatches({'values': ['x']}, _Outer)) == 1


class _Place:
    def __init__(self, x: float) -> None:
        self.pose, self.stamp = Pose.from_xy_yaw(x, 0.0, 0.0), x


def test_the_metric_functions_return_their_types() -> None:
    places = [_Place(10.0 * i) for i in range(4)]
    records = [QueryRecord(float(i), Pose.from_xy_yaw(10.0 * i + 1, 0.0, 0.0), [i, (i + 1) % 4], [0.9, 0.5],
                           encode_ms=1.0, search_ms=0.1) for i in range(4)]
    assert type_mismatches(evaluate_retrieval(records, places, Thresholds(5.0)), Retrieval) == []
    assert type_mismatches({'count': 0}, TimingStats) == []
    assert type_mismatches(expected_calibration_error([0.9, 0.2, float('nan')], [True, False, True]),
                           CalibrationError) == []
    assert type_mismatches(expected_calibration_error([], []), CalibrationError) == []
    assert type_mismatches(full_precision_threshold([0.9, 0.8, 0.4], [True, False, True], 2),
                           FullPrecisionThreshold) == []
