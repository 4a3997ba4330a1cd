"""SeqSLAM-style sequence matching on synthetic similarity matrices."""
from __future__ import annotations

import numpy as np
import pytest

from test.helpers import assert_same_ranking
from vpr_ros.errors import ConfigError
from vpr_ros.matching.sequence import (
    SequenceConfig,
    SequenceMatcher,
    contrast_normalise,
    sequence_match,
    shortlist_row,
    trajectory_costs,
)

PLACES = 300
QUERIES = 80
START = 100


def _trajectory(velocity: float, queries: int = QUERIES, start: int = START) -> np.ndarray:
    return np.rint(start + velocity * np.arange(queries)).astype(int)


def _noisy(truth: np.ndarray, signal: float, seed: int = 0, places: int = PLACES,
           velocity: float = 1.0) -> np.ndarray:
    """Similarity rows: unit Gaussian noise plus ``signal`` peaking at each query's true position
    (neighbouring places look alike, so the peak spreads over about one place either side)."""
    rng = np.random.default_rng(seed)
    sims = rng.normal(0.0, 1.0, (len(truth), places))
    exact = truth[0] + velocity * np.arange(len(truth))
    sims += signal * np.exp(-0.5 * ((np.arange(places)[None, :] - exact[:, None]) / 0.7) ** 2)
    return sims


def _recall(results, truth: np.ndarray, tol: int = 2) -> float:
    hits = [abs(r[0].place_id - t) <= tol for r, t in zip(results, truth) if r]
    return float(np.mean(hits))


def _single_frame_recall(sims: np.ndarray, truth: np.ndarray, tol: int = 2) -> float:
    return float(np.mean(np.abs(np.argmax(sims, axis=1) - truth) <= tol))


def test_diagonal_found_under_noise_where_single_frame_fails() -> None:
    truth = _trajectory(1.0)
    sims = _noisy(truth, signal=2.0)
    cfg = SequenceConfig(length=10)
    results = sequence_match(sims, np.arange(PLACES, dtype=float), cfg, k=3)
    assert all(r is None for r in results[:9]) and all(r is not None for r in results[9:])
    single = _single_frame_recall(sims[9:], truth[9:])
    seq = _recall(results[9:], truth[9:])
    assert single < 0.35
    assert seq > 0.9
    assert results[-1][0].velocity == pytest.approx(1.0)


@pytest.mark.parametrize('velocity', [0.8, 1.2])
def test_slopes_within_the_range_are_found_and_reported(velocity: float) -> None:
    truth = _trajectory(velocity)
    sims = _noisy(truth, signal=2.2, seed=1, velocity=velocity)
    results = sequence_match(sims, np.arange(PLACES, dtype=float), SequenceConfig(length=10))
    assert _recall(results[9:], truth[9:]) > 0.85
    velocities = [r[0].velocity for r, t in zip(results[9:], truth[9:]) if abs(r[0].place_id - t) <= 1]
    assert np.median(velocities) == pytest.approx(velocity, abs=0.1 + 1e-9)


def test_a_slope_outside_the_range_is_not_followed() -> None:
    truth = _trajectory(1.2)
    sims = _noisy(truth, signal=2.2, seed=2, velocity=1.2)
    inside = sequence_match(sims, np.arange(PLACES, dtype=float), SequenceConfig(length=20))
    outside = sequence_match(sims, np.arange(PLACES, dtype=float),
                             SequenceConfig(length=20, min_velocity=0.5, max_velocity=0.6))
    assert _recall(inside[19:], truth[19:], tol=1) > 0.9
    assert _recall(outside[19:], truth[19:], tol=1) < 0.5


def test_a_velocity_scale_follows_a_map_sampled_every_other_frame() -> None:
    """A map grown one keyframe per two frames advances 0.5 places per frame: outside 0.8-1.2, found
    once the velocities are scaled by that keyframe rate."""
    truth = _trajectory(0.5)
    sims = _noisy(truth, signal=2.2, seed=4, velocity=0.5)
    stamps = np.arange(PLACES, dtype=float)
    recall = {}
    for scale in (1.0, 0.5):
        matcher = SequenceMatcher(SequenceConfig(length=20))
        results = []
        for q, row in enumerate(sims):
            matcher.push(float(q), row)
            results.append(matcher.rank(stamps, 1, velocity_scale=scale))
        recall[scale] = _recall(results[19:], truth[19:], tol=1)
        if scale == 0.5:  # the reported velocity is in places per frame
            assert results[-1][0].velocity == pytest.approx(0.5, abs=0.05 + 1e-9)
    assert recall[0.5] > 0.9 and recall[1.0] < 0.5, recall


def test_places_are_ordered_by_stamp_not_by_id() -> None:
    truth = _trajectory(1.0)
    sims = _noisy(truth, signal=2.0, seed=3)
    perm = np.random.default_rng(0).permutation(PLACES)   # place id perm[i] is the i-th in time
    shuffled = np.empty_like(sims)
    shuffled[:, perm] = sims
    stamps = np.empty(PLACES)
    stamps[perm] = np.arange(PLACES, dtype=float)
    results = sequence_match(shuffled, stamps, SequenceConfig(length=10))
    assert _recall([[type(r[0])(int(np.flatnonzero(perm == r[0].place_id)[0]), 0, 0, 0)] if r else None
                    for r in results][9:], truth[9:]) > 0.9


def test_the_local_window_removes_a_smooth_bias_along_the_map_that_the_whole_map_one_keeps() -> None:
    """A region of the map that resembles every query (e.g. the same lighting) wins unless the
    normalisation is local: what OpenSeqSLAM's window (opt-in, contrast_window 10) is for."""
    truth = _trajectory(1.0)
    sims = _noisy(truth, signal=2.0, seed=4)
    bias = 4.0 * np.exp(-0.5 * ((np.arange(PLACES) - 30) / 15.0) ** 2)
    rng = np.random.default_rng(5)
    sims = sims + bias[None, :] + rng.normal(0, 3.0, (QUERIES, 1))  # per-frame offsets too
    stamps = np.arange(PLACES, dtype=float)
    local = sequence_match(sims, stamps, SequenceConfig(length=10, contrast_window=10))
    whole_map = sequence_match(sims, stamps, SequenceConfig(length=10))
    assert _recall(local[9:], truth[9:]) > 0.9
    assert _recall(whole_map[9:], truth[9:]) < 0.2


def test_contrast_normalise_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(6)
    d = rng.normal(size=(3, 40))
    d[1, 7] = np.nan
    out = contrast_normalise(d, 10)
    for r in range(3):
        for i in range(40):
            if not np.isfinite(d[r, i]):
                assert np.isnan(out[r, i])
                continue
            win = d[r, max(0, i - 5):i + 6]
            win = win[np.isfinite(win)]
            assert out[r, i] == pytest.approx((d[r, i] - win.mean()) / win.std(ddof=1), abs=1e-9)
    flat = contrast_normalise(np.ones((1, 12)), 10)
    assert np.all(flat == 0.0)
    whole = contrast_normalise(d, 0)  # window 0: the whole row
    for r in range(3):
        known = np.isfinite(d[r])
        want = (d[r, known] - d[r, known].mean()) / d[r, known].std(ddof=1)
        np.testing.assert_allclose(whole[r, known], want, atol=1e-9)
        assert np.isnan(whole[r, ~known]).all()
    assert np.all(contrast_normalise(np.ones((1, 12)), 0) == 0.0)


def test_trajectory_costs_follow_the_slope_and_need_the_whole_trajectory_in_the_map() -> None:
    norm = np.zeros((4, 10))
    for lag, pos in enumerate([9, 8, 7, 6]):       # lag 0 is the newest row (last)
        norm[3 - lag, pos] = -1.0
    cost, vi = trajectory_costs(norm, np.array([0.5, 1.0, 2.0]))
    assert int(np.argmin(cost)) == 9 and cost[9] == pytest.approx(-1.0) and vi[9] == 1
    # at least half of the 4 steps must lie in the map: the slowest (0.5: offsets 0, 0, 1, 2)
    # has 2 steps at the first place, so every end is a candidate; with 1.0 only from place 1 on
    assert np.all(np.isfinite(cost))
    fast, _ = trajectory_costs(norm, np.array([1.0]))
    assert np.isinf(fast[0]) and np.all(np.isfinite(fast[1:]))
    norm[0, 4] = np.nan                              # unknown entries are left out of the mean
    cost_nan, _ = trajectory_costs(norm, np.array([1.0]))
    assert np.isfinite(cost_nan[7]) and np.isnan(trajectory_costs(norm[::-1], np.array([1.0]))[0][4])


def test_online_matcher_equals_offline_and_falls_back_on_short_history() -> None:
    truth = _trajectory(1.0, queries=30)
    sims = _noisy(truth, signal=1.5, seed=7)
    stamps = np.arange(PLACES, dtype=float)
    cfg = SequenceConfig(length=8, single_frame_weight=0.25)
    offline = sequence_match(sims, stamps, cfg, k=5)
    online = SequenceMatcher(cfg)
    for q, row in enumerate(sims):
        online.push(float(q), row)
        got = online.rank(stamps, 5)
        if q < 7:
            assert got is None and online.history == q + 1
            continue
        # incremental vs whole-matrix sums: the same answer to float rounding (near ties may swap)
        assert_same_ranking([(m.place_id, m.score) for m in got], [(m.place_id, m.score) for m in offline[q]])
        np.testing.assert_allclose([m.cost for m in got], [m.cost for m in offline[q]], atol=1e-5)
    assert online.history == 8  # bounded
    online.push(-1.0, sims[0])  # time went backwards: a new run
    assert online.history == 1 and online.rank(stamps, 5) is None


def test_top_k_are_distinct_hypotheses_and_exclusions_hold() -> None:
    truth = _trajectory(1.0)
    sims = _noisy(truth, signal=1.5, seed=8)
    stamps = np.arange(PLACES, dtype=float)
    results = sequence_match(sims, stamps, SequenceConfig(length=10), k=5)
    for r in results[9:]:
        ids = sorted(m.place_id for m in r)
        assert len(ids) == 5 and np.all(np.diff(ids) > 5)
        costs = [m.cost for m in r]
        assert costs == sorted(costs)
    q = QUERIES - 1
    banned = set(range(truth[q] - 20, truth[q] + 21))
    excl = [set() for _ in range(QUERIES)]
    excl[q] = banned
    got = sequence_match(sims, stamps, SequenceConfig(length=10), k=5, exclude=excl)[q]
    assert not banned & {m.place_id for m in got}


def test_growing_map_rows_count_new_places_as_unknown() -> None:
    """Incremental mode: a place added after a frame is unknown (NaN) in that frame's row."""
    truth = _trajectory(1.0, queries=20, start=50)
    sims = _noisy(truth, signal=2.0, seed=9, places=120)
    stamps = np.arange(120, dtype=float)
    matcher = SequenceMatcher(SequenceConfig(length=10))
    for q in range(20):
        matcher.push(float(q), sims[q, :100 + q])   # the map grows by one place per frame
    got = matcher.rank(stamps[:119], 3)
    assert abs(got[0].place_id - truth[-1]) <= 2
    assert all(np.isfinite(m.score) for m in got)


def test_reported_score_is_the_mean_similarity_along_the_trajectory() -> None:
    sims = np.zeros((5, 50))
    for q in range(5):
        sims[q, 20 + q] = 0.9
    got = sequence_match(sims, np.arange(50, dtype=float), SequenceConfig(length=5))[-1]
    assert got[0].place_id == 24 and got[0].score == pytest.approx(0.9)
    blended = sequence_match(sims, np.arange(50, dtype=float),
                             SequenceConfig(length=5, single_frame_weight=0.5))[-1]
    assert blended[0].place_id == 24 and blended[0].score == pytest.approx(0.9)


def test_shortlist_row_fills_with_the_lowest_listed_score() -> None:
    row = shortlist_row([3, 1], [0.9, 0.7], 5)
    np.testing.assert_allclose(row, [0.7, 0.7, 0.7, 0.9, 0.7])
    assert np.isnan(shortlist_row([], [], 3)).all()


@pytest.mark.parametrize('bad', [{'length': -1}, {'length': 3, 'min_velocity': 0.0},
                                 {'length': 3, 'min_velocity': 1.5, 'max_velocity': 1.0},
                                 {'length': 3, 'velocity_step': 0.0}, {'length': 3, 'contrast_window': -1},
                                 {'length': 3, 'single_frame_weight': 1.5}, {'length': 3, 'shortlist': -2}])
def test_invalid_settings_are_refused(bad) -> None:
    with pytest.raises(ConfigError):
        SequenceConfig(**bad).validate()
    assert list(SequenceConfig().velocities().round(6)) == [0.8, 0.9, 1.0, 1.1, 1.2]
