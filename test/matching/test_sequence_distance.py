"""Distance-spaced sequences (SMART): a query replayed at another speed than the mapping run.

A synthetic route: map places every ``SPACING_M`` metres whose descriptors change smoothly along
it; a query frame at path position x sees the descriptor of the place nearest x plus independent
noise (strong enough that single frames are often wrong). Replays: twice the mapping speed
(every other place) and with stops (positions held for several frames). With odometry the
distance-spaced answer must be right where single frames are not; with a +-10 % odometry scale
error (the drift model: every travelled increment scaled by 0.9 or 1.1, plus 5 % per-frame noise)
it must stay within ``DRIFT_MARGIN`` of that; without odometry it must equal frame spacing.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from test.helpers import assert_same_ranking
from vpr_ros.errors import ConfigError
from vpr_ros.matching.sequence import (
    MapPath,
    SequenceConfig,
    SequenceMatcher,
    distance_trajectory_costs,
    row_weights,
    select_by_distance,
    sequence_match,
)

PLACES = 200
SPACING_M = 2.0
LENGTH = 10
TOLERANCE = 1        # places either side that count as right
DISTANCE_RECALL = 0.95  # Recall@1 the distance-spaced answer reaches with exact odometry
DRIFT_MARGIN = 0.05     # what a +-10 % odometry scale error may cost against exact odometry


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def route(seed: int) -> np.ndarray:
    """Map descriptors (PLACES, 128): a common part plus a part changing smoothly along the route."""
    rng = np.random.default_rng(seed)
    along = gaussian_filter1d(rng.standard_normal((PLACES, 128)), 2.0, axis=0)
    return _unit(0.5 * rng.standard_normal(128) + along / along.std())


def replay(kind: str) -> np.ndarray:
    """Query path positions [m]: twice the mapping speed, or the mapping speed with stops."""
    if kind == '2x':
        return SPACING_M * np.arange(0, PLACES, 2, dtype=float)
    held = [[i] * (8 if i % 25 == 24 else 1) for i in range(PLACES)]  # a stop of 8 frames every 25 places
    return SPACING_M * np.concatenate(held).astype(float)


def queries(mapped: np.ndarray, x: np.ndarray, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities (Q, PLACES), true place per query) of frames at path positions ``x``."""
    rng = np.random.default_rng(seed + 1)
    truth = np.rint(x / SPACING_M).astype(int)
    desc = _unit(mapped[truth] + noise * rng.standard_normal((len(x), mapped.shape[1])) / np.sqrt(128))
    return desc @ mapped.T, truth


def odometry(x: np.ndarray, scale_error: float, seed: int) -> np.ndarray:
    """3-D odometry positions along a straight line: true increments times (1 + scale_error),
    times 1 + N(0, 5 %) per frame (a held frame stays held)."""
    rng = np.random.default_rng(seed + 2)
    steps = np.diff(x) * (1.0 + scale_error) * (1.0 + 0.05 * rng.standard_normal(len(x) - 1))
    along = np.concatenate([[0.0], np.cumsum(steps)])
    return np.stack([along, np.zeros_like(along), np.zeros_like(along)], axis=1)


def map_positions() -> np.ndarray:
    x = SPACING_M * np.arange(PLACES, dtype=float)
    return np.stack([x, np.zeros_like(x), np.zeros_like(x)], axis=1)


def top1(sims: np.ndarray, config: SequenceConfig, qpos: np.ndarray | None) -> np.ndarray:
    ranked = sequence_match(sims, np.arange(PLACES, dtype=float), config,
                            query_positions=qpos, place_positions=None if qpos is None else map_positions())
    return np.array([r[0].place_id if r else -1 for r in ranked])


def recall(answer: np.ndarray, truth: np.ndarray, answered: np.ndarray) -> float:
    return float(np.mean(np.abs(answer[answered] - truth[answered]) <= TOLERANCE))


@pytest.mark.parametrize('kind', ['2x', 'stops'])
@pytest.mark.parametrize('seed', [0, 1])
def test_distance_spacing_follows_speed_changes_that_frame_spacing_cannot(kind: str, seed: int) -> None:
    mapped = route(seed)
    x = replay(kind)
    sims, truth = queries(mapped, x, noise=3.0, seed=seed)
    single = np.argmax(sims, axis=1)
    exact = top1(sims, SequenceConfig(length=LENGTH), odometry(x, 0.0, seed))
    answered = exact >= 0
    assert answered.mean() > 0.8  # single-frame only until the odometry covers the sequence
    r_single = recall(single, truth, answered)
    r_exact = recall(exact, truth, answered)
    assert r_single < 0.85, r_single  # single frames are noisy here ...
    assert r_exact >= DISTANCE_RECALL, (r_single, r_exact)  # ... the distance-spaced answer is right
    frames = top1(sims, SequenceConfig(length=LENGTH, spacing='frames'), None)
    both = answered & (frames >= 0)
    assert recall(frames, truth, both) < recall(exact, truth, both) - 0.1  # what it is for
    for error in (-0.1, 0.1):
        drifted = top1(sims, SequenceConfig(length=LENGTH), odometry(x, error, seed))
        r_drifted = recall(drifted, truth, drifted >= 0)
        assert r_drifted >= r_exact - DRIFT_MARGIN, (error, r_drifted, r_exact)


def _pairs(matches) -> list[tuple[int, float]]:
    return [(m.place_id, m.score) for m in matches]


def test_without_odometry_distance_spacing_is_frame_spacing() -> None:
    mapped = route(3)
    sims, _ = queries(mapped, replay('stops'), noise=3.0, seed=3)
    stamps = np.arange(PLACES, dtype=float)
    by_frames = sequence_match(sims, stamps, SequenceConfig(length=5, spacing='frames'), k=3)
    for positions in (None, np.full((len(sims), 3), np.nan)):  # none at all, or none for any frame
        default = sequence_match(sims, stamps, SequenceConfig(length=5), k=3, query_positions=positions,
                                 place_positions=map_positions())
        for got, want in zip(default, by_frames):  # the online matcher keeps float32 rows
            assert (got is None) == (want is None)
            if got is not None:
                assert_same_ranking(_pairs(got), _pairs(want), atol=1e-6)
    # a map without poses: frame spacing too, even with odometry
    unposed = sequence_match(sims, stamps, SequenceConfig(length=5), k=3,
                             query_positions=odometry(replay('stops'), 0.0, 3),
                             place_positions=np.full((PLACES, 3), np.nan))
    top = [[r[0].place_id if r else None for r in answers] for answers in (unposed, by_frames)]
    assert top[0] == top[1]


def test_a_frame_without_odometry_falls_back_to_frames_and_restarts_the_distance_history() -> None:
    matcher = SequenceMatcher(SequenceConfig(length=3))
    stamps = np.arange(PLACES, dtype=float)
    row = np.linspace(0.0, 1.0, PLACES)
    for k in range(6):
        matcher.push(float(k), row, (SPACING_M * k, 0.0, 0.0))
        matcher.rank(stamps, 1, place_positions=map_positions())
    assert matcher.last_spacing == 'distance'
    matcher.push(6.0, row, None)
    assert matcher.rank(stamps, 1, place_positions=map_positions()) is not None
    assert matcher.last_spacing == 'frames'
    matcher.push(7.0, row, (100.0, 0.0, 0.0))  # odometry again: the travelled distance starts over
    assert matcher.rank(stamps, 1, place_positions=map_positions()) is None
    assert matcher.last_spacing == 'distance'


def test_a_long_stop_keeps_the_history_bounded_and_the_frames_before_it() -> None:
    matcher = SequenceMatcher(SequenceConfig(length=5))
    stamps = np.arange(PLACES, dtype=float)
    rows = np.eye(PLACES)
    for k in range(10):  # moving: one frame per place
        matcher.push(float(k), rows[k], (SPACING_M * k, 0.0, 0.0))
        matcher.rank(stamps, 1, place_positions=map_positions())
    for k in range(10, 1010):  # standing at place 9 for 1000 frames
        matcher.push(float(k), rows[9], (SPACING_M * 9, 0.0, 0.0))
    assert len(matcher._by_distance) <= 4 * 5 + 4
    best = matcher.rank(stamps, 1, place_positions=map_positions())
    assert best is not None and best[0].place_id == 9 and best[0].score == pytest.approx(1.0)


def test_select_by_distance_picks_fixed_intervals_each_frame_once() -> None:
    travelled = [0.0, 1.0, 2.0, 2.0, 4.0, 6.0, 6.5]
    assert select_by_distance(travelled, 2.0, 4) == [1, 3, 4, 6]  # 0.5, 2.5, 4.5, 6.5 m; ties: the newer
    assert select_by_distance(travelled, 2.0, 10) is None  # covers 6.5 m of the 18 m needed
    assert select_by_distance([0.0, 0.0, 0.0], 2.0, 3) is None  # standing still from the start


def test_map_path_places_and_gaps() -> None:
    positions = np.array([[0, 0, 0], [2, 0, 0], [4, 0, 0], [104, 0, 0], [106, 0, 0]], float)
    path = MapPath.of(positions)
    assert path is not None and path.spacing == pytest.approx(2.0)
    got = path.places_at(np.array([-5.0, 0.4, 3.1, 50.0, 105.5, 200.0]))
    assert got.tolist() == [-1, 0, 2, -1, 4, -1]  # before the start, inside a gap, past the end: none
    assert MapPath.of(np.zeros((4, 3))) is None  # places that never move have no path
    assert MapPath.of(np.array([[0, 0, 0], [np.nan] * 3])) is None


def test_spacing_is_validated() -> None:
    with pytest.raises(ConfigError, match='spacing'):
        SequenceConfig(length=3, spacing='time').validate()
    with pytest.raises(ConfigError, match='distance_step_m'):
        SequenceConfig(length=3, distance_step_m=-1.0).validate()


def test_without_odometry_single_frame_answers_nothing_but_distance_spaced_sequences() -> None:
    cfg = SequenceConfig(length=3, without_odometry='single_frame')
    assert cfg.needs_odometry and not SequenceConfig(length=3).needs_odometry
    sims, _ = queries(route(4), replay('2x'), noise=3.0, seed=4)
    stamps = np.arange(PLACES, dtype=float)
    assert sequence_match(sims, stamps, cfg, query_positions=np.full((len(sims), 3), np.nan),
                          place_positions=map_positions()) == [None] * len(sims)
    with_odometry = sequence_match(sims, stamps, cfg, query_positions=odometry(replay('2x'), 0.0, 4),
                                   place_positions=map_positions())
    assert sum(r is not None for r in with_odometry) > len(sims) // 2
    with pytest.raises(ConfigError, match='without_odometry'):
        SequenceConfig(length=3, without_odometry='never').validate()


def test_row_weights_fall_with_the_uncertainty_of_a_rows_map_point() -> None:
    w = row_weights(np.array([0.0, 10.0, 20.0]), np.array([0.8, 1.0, 1.2]), 2.0)
    np.testing.assert_allclose(w, [1.0, 1 / 2.0, 1 / 3.0], rtol=1e-12)  # 0.2 * back / 2 m place spacing
    np.testing.assert_allclose(row_weights(np.array([0.0, 50.0]), np.array([1.0]), 2.0), [1.0, 1.0])


def _end_place(weighted: bool) -> int:
    """End place of the best velocity-1.0 line through rows whose true velocity is 1.2 (odometry 17 %
    short): similarity bumps (sigma 2 places) at the true places, 1 m place spacing, rows 4 m apart."""
    path = MapPath.of(np.column_stack([np.arange(200.0), np.zeros(200), np.zeros(200)]))
    back = 4.0 * np.arange(9, -1, -1)
    end = 150
    rows = [-np.exp(-0.5 * ((np.arange(200) - (end - 1.2 * b)) / 2.0) ** 2) for b in back]
    prepared = [(r, np.ones(200)) for r in rows]
    velocities = np.array([0.8, 1.0])
    if weighted:
        cost, _ = distance_trajectory_costs(path, back, velocities, prepared, 5, rows[-1])
    else:  # the plain mean over rows (an independent few lines)
        cost = np.full(200, np.inf)
        for v in velocities:
            idx = [path.places_at(path.along - v * b) for b in back]
            total = sum(np.where(i >= 0, r[np.maximum(i, 0)], 0.0) for i, r in zip(idx, rows))
            count = sum((i >= 0).astype(float) for i in idx)
            cost = np.minimum(cost, np.where(count >= 5, total / np.maximum(count, 1), np.inf))
    return int(np.argmin(cost)) - end


def test_a_wrong_velocity_moves_the_end_place_less_with_row_weights() -> None:
    """A line whose velocity is off by the odometry's scale error pivots about its weighted middle:
    with every row weighing the same the end lands 4 places behind (~0.2 x the mean 18 m back), with
    the row weights 2."""
    plain, weighted = _end_place(False), _end_place(True)
    assert plain <= -3 and abs(weighted) <= abs(plain) - 1, (plain, weighted)
