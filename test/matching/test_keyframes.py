"""Online keyframe gates: time, distance, novelty."""
from __future__ import annotations

import numpy as np
import pytest

from vpr_ros.matching.keyframes import KeyframeGate, set_similarity


def unit(*v: float) -> np.ndarray:
    a = np.asarray([v], np.float32)
    return a / np.linalg.norm(a)


def test_time_gate() -> None:
    gate = KeyframeGate(min_interval=1.0)
    v = unit(1, 0)
    assert [gate.accept(t, None, v) for t in (0.0, 0.5, 1.0, 1.2, 2.1)] == [True, False, True, False, True]


def test_distance_gate_only_with_positions() -> None:
    gate = KeyframeGate(min_interval=0.0, min_distance=2.0)
    v = unit(1, 0)
    assert gate.accept(0.0, (0.0, 0.0, 0.0), v)
    assert not gate.accept(1.0, (1.0, 0.0, 0.0), v)
    assert gate.accept(2.0, None, v)          # no odometry for this frame: the gate cannot judge
    assert gate.accept(3.0, (0.5, 0.0, 0.0), v)  # the last keyframe had no position either
    assert gate.accept(4.0, (3.0, 0.0, 0.0), v)


def test_novelty_gate() -> None:
    gate = KeyframeGate(min_interval=0.0, max_similarity=0.9)
    assert gate.accept(0.0, None, unit(1, 0))
    assert not gate.accept(1.0, None, unit(1, 0.1))
    assert gate.accept(2.0, None, unit(1, 1))


def test_set_similarity_is_cosine_for_single_vectors() -> None:
    assert set_similarity(unit(1, 0), unit(1, 1)) == pytest.approx(np.sqrt(0.5), rel=1e-6)
    assert set_similarity(np.concatenate([unit(1, 0), unit(0, 1)]), unit(1, 0)) == pytest.approx(0.5)
