"""Loop-closure acceptance rules: separation, score, temporal consistency, rate cap."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from vpr_ros.errors import ConfigError
from vpr_ros.matching.loop_closure import (
    FUNNEL_STAGES,
    RATE_BURST,
    LoopClosureConfig,
    LoopClosureFilter,
    LoopStatus,
)


@dataclass
class M:
    place_id: int
    score: float
    stamp: float


def run(flt: LoopClosureFilter, frames: list[tuple[float, list[M]]]) -> list[LoopStatus]:
    return [flt.update(t, matches).status for t, matches in frames]


def test_needs_consecutive_agreeing_frames() -> None:
    flt = LoopClosureFilter(LoopClosureConfig(consistency_frames=3, max_rate_hz=0))
    frames = [(100.0 + i, [M(10 + i, 0.9, 10.0 + i)]) for i in range(4)]
    assert run(flt, frames) == [LoopStatus.FAILED_TEMPORAL_CONSISTENCY] * 2 + [LoopStatus.LOOP_DETECTED] * 2
    d = flt.update(104.0, [M(14, 0.9, 14.0)])
    assert d.accepted and (d.t_query, d.t_match, d.place_id, d.streak) == (104.0, 14.0, 14, 5)


def test_a_jump_to_a_far_place_restarts_the_streak() -> None:
    flt = LoopClosureFilter(LoopClosureConfig(consistency_frames=2, consistency_place_window=3,
                                              consistency_stamp_window=3.0, max_rate_hz=0))
    assert run(flt, [(100.0, [M(10, 0.9, 10.0)]), (101.0, [M(50, 0.9, 50.0)]), (102.0, [M(51, 0.9, 60.0)]),
                     (103.0, [M(80, 0.9, 61.0)])]) == [
        LoopStatus.FAILED_TEMPORAL_CONSISTENCY, LoopStatus.FAILED_TEMPORAL_CONSISTENCY,
        LoopStatus.LOOP_DETECTED,   # ids 50 -> 51 agree
        LoopStatus.LOOP_DETECTED]   # ids 51 -> 80 do not, map stamps 60 -> 61 do


def test_low_score_and_recent_matches_fail_and_reset() -> None:
    flt = LoopClosureFilter(LoopClosureConfig(min_score=0.8, min_time_separation=30.0, consistency_frames=2,
                                              max_rate_hz=0))
    assert run(flt, [(100.0, [M(1, 0.9, 10.0)]), (101.0, [M(1, 0.5, 10.0)]), (102.0, [M(2, 0.9, 11.0)]),
                     (103.0, [M(9, 0.99, 90.0)]), (104.0, [])]) == [
        LoopStatus.FAILED_TEMPORAL_CONSISTENCY, LoopStatus.LOW_SCORE, LoopStatus.FAILED_TEMPORAL_CONSISTENCY,
        LoopStatus.TOO_RECENT, LoopStatus.NO_MATCHES]


def test_the_best_match_far_enough_in_time_is_the_candidate() -> None:
    flt = LoopClosureFilter(LoopClosureConfig(consistency_frames=1, max_rate_hz=0))
    d = flt.update(100.0, [M(9, 0.99, 95.0), M(2, 0.85, 20.0)])
    assert d.accepted and d.place_id == 2 and d.t_match == 20.0


def test_rate_cap_is_a_token_bucket_in_query_time() -> None:
    """At most max_rate_hz on average with bursts of RATE_BURST (LIO-SAM's queue); off by default."""
    assert LoopClosureConfig().max_rate_hz == 0
    flt = LoopClosureFilter(LoopClosureConfig(consistency_frames=1, max_rate_hz=1.0))
    statuses = run(flt, [(100.0 + 0.25 * i, [M(1, 0.9, 10.0)]) for i in range(13)])
    accepted = [i for i, s in enumerate(statuses) if s is LoopStatus.LOOP_DETECTED]
    # five at once, then one per second of query time (tokens refill 0.25 per frame): 5 + 3 in 3 s
    assert accepted == [*range(RATE_BURST + 1), 8, 12]
    assert statuses[RATE_BURST + 1] is LoopStatus.RATE_LIMITED


def test_a_jittered_camera_at_the_capped_rate_loses_nothing() -> None:
    """A 1 Hz camera whose stamps jitter by a millisecond is not cut to every other frame."""
    flt = LoopClosureFilter(LoopClosureConfig(consistency_frames=1, max_rate_hz=1.0))
    stamps = 100.0 + np.arange(40) + np.tile([0.0, -0.001], 20)
    assert set(run(flt, [(float(t), [M(1, 0.9, 10.0)]) for t in stamps])) == {LoopStatus.LOOP_DETECTED}


def test_time_going_backwards_resets() -> None:
    flt = LoopClosureFilter(LoopClosureConfig(consistency_frames=2, max_rate_hz=1.0))
    run(flt, [(100.0, [M(1, 0.9, 10.0)]), (100.1, [M(1, 0.9, 10.0)])])
    assert flt.update(50.0, [M(1, 0.9, 10.0)]).status is LoopStatus.FAILED_TEMPORAL_CONSISTENCY


@pytest.mark.parametrize('bad', [dict(consistency_frames=0), dict(verified_frames=0),
                                 dict(min_time_separation=-1.0), dict(max_rate_hz=-1.0),
                                 dict(consistency_stamp_window=-0.1)])
def test_invalid_config_is_refused(bad: dict) -> None:
    with pytest.raises(ConfigError):
        LoopClosureFilter(LoopClosureConfig(**bad))


@dataclass
class V:
    place_id: int
    verified: bool
    inliers: int = 0
    parallax_deg: float | None = None


def test_every_frame_is_verified_and_the_retrieval_streak_still_applies() -> None:
    """Every frame's candidates above min_score are verified, before the retrieval streak is complete;
    the one with the most inliers is the frame's verified place. A closure needs the streak too."""
    flt = LoopClosureFilter(LoopClosureConfig(consistency_frames=2, min_score=0.5, verified_frames=1))
    calls = []

    def verify(cands):
        calls.append([c.place_id for c in cands])
        return [V(11, True, 40), V(10, False, 3)] if len(calls) > 1 else [V(10, False, 2)]

    shortlist = [M(10, 0.9, 10.0), M(11, 0.8, 11.0), M(12, 0.4, 12.0)]
    frames = [(100.0, shortlist), (101.0, [*shortlist[:2], M(90, 0.9, 95.0)])]
    decisions = [flt.update(t, m, verify) for t, m in frames]
    assert [d.status for d in decisions] == [LoopStatus.FAILED_GEOMETRIC_VERIFICATION,
                                             LoopStatus.LOOP_DETECTED]
    assert calls[0] == [10, 11]  # only candidates above min_score, far enough in time (not 90: too recent)
    assert (decisions[1].place_id, decisions[1].t_match, decisions[1].verification.inliers) == (11, 11.0, 40)
    assert decisions[1].candidates == (10, 11) and decisions[1].verified_place == 11 and decisions[1].checked
    flt = LoopClosureFilter(LoopClosureConfig(consistency_frames=3, min_score=0.5, verified_frames=1))
    statuses = [flt.update(100.0 + i, shortlist, lambda cands: [V(11, True, 40)]).status for i in range(3)]
    assert statuses == [LoopStatus.FAILED_TEMPORAL_CONSISTENCY] * 2 + [LoopStatus.LOOP_DETECTED]


def test_a_closure_needs_consecutive_agreeing_verifications() -> None:
    """A look-alike that passes RANSAC once is not published; two agreeing verifications are."""
    flt = LoopClosureFilter(LoopClosureConfig(consistency_frames=1, max_rate_hz=0))  # verified_frames 2
    answers = iter([[V(10, True, 30)], [V(50, True, 60)],     # verified, then a far place: no agreement
                    [V(51, True, 40)],                         # agrees with 50: published
                    [V(52, False, 4)], [V(53, True, 40)],      # a failed attempt restarts the chain
                    [V(54, True, 40)]])
    # scores below any encoder's look-alike level: there is no score gate by default
    shortlist = [M(pid, 0.1, float(pid)) for pid in (10, 50, 51, 52, 53, 54)]
    decisions = [flt.update(100.0 + i, shortlist, lambda cands: next(answers)) for i in range(6)]
    S = LoopStatus
    assert [d.status for d in decisions] == [S.FAILED_TEMPORAL_CONSISTENCY, S.FAILED_TEMPORAL_CONSISTENCY,
                                             S.LOOP_DETECTED, S.FAILED_GEOMETRIC_VERIFICATION,
                                             S.FAILED_TEMPORAL_CONSISTENCY, S.LOOP_DETECTED]


def test_without_a_verifier_verified_frames_does_not_apply() -> None:
    flt = LoopClosureFilter(LoopClosureConfig(consistency_frames=1, max_rate_hz=0, verified_frames=5))
    assert flt.update(100.0, [M(10, 0.1, 10.0)]).status is LoopStatus.LOOP_DETECTED


def refined(candidate: V, neighbour_answers: list[V], neighbours: list[M], t_query: float = 100.0):
    """The published place of a frame whose verified candidate is ``candidate`` (verified_frames 1)."""
    flt = LoopClosureFilter(LoopClosureConfig(consistency_frames=1, max_rate_hz=0, verified_frames=1,
                                              min_time_separation=30.0))
    asked: list[list[int]] = []

    def verify(cands, top_k=None):
        asked.append([c.place_id for c in cands])
        return [candidate] if len(asked) == 1 else neighbour_answers

    d = flt.update(t_query, [M(candidate.place_id, 0.7, 20.0)], verify, lambda c: neighbours)
    assert d.accepted and d.score == 0.7  # the score stays the retrieved candidate's
    return d, asked


def test_a_closure_moves_to_the_neighbour_seen_from_nearer() -> None:
    """Of the verified time neighbours with enough inliers, the smallest parallax is published."""
    near = [M(19, 0.0, 18.5), M(21, 0.0, 21.5)]
    d, asked = refined(V(20, True, 54, 2.3), [V(19, True, 40, 0.5), V(21, True, 60, 4.0)], near)
    assert asked == [[20], [19, 21]] and (d.place_id, d.t_match, d.verification.inliers) == (19, 18.5, 40)
    # a neighbour with under half the inliers of the best view does not compete (its parallax is noise)
    d, _ = refined(V(20, True, 90, 2.3), [V(19, True, 20, 0.5)], near)
    assert d.place_id == 20 and d.verification.inliers == 90
    # a neighbour that does not verify never wins
    d, _ = refined(V(20, True, 54, 2.3), [V(19, False, 0, None)], near)
    assert d.place_id == 20


def test_without_parallax_the_most_inliers_win_and_ties_keep_the_candidate() -> None:
    near = [M(19, 0.0, 18.5), M(21, 0.0, 21.5)]
    d, _ = refined(V(20, True, 30), [V(21, True, 45), V(19, True, 25)], near)
    assert (d.place_id, d.t_match) == (21, 21.5)
    d, _ = refined(V(20, True, 45), [V(21, True, 45)], near)
    assert d.place_id == 20


def test_neighbours_too_recent_for_a_closure_are_not_verified() -> None:
    d, asked = refined(V(20, True, 40, 2.0), [], [M(21, 0.0, 75.0)])  # 25 s before the query
    assert asked == [[20]] and d.place_id == 20


def test_a_verified_neighbour_keyframe_of_the_place_is_a_second_view() -> None:
    """The candidate and its adjacent keyframe both verifying against one frame close the loop at
    that frame; a candidate whose neighbours do not verify waits for the next frame."""
    flt = LoopClosureFilter(LoopClosureConfig(min_time_separation=30.0, consistency_frames=1))
    answers = {20: V(20, True, 45, 2.0), 21: V(21, True, 50, 1.0), 19: V(19, False, 3)}

    def verify(cands, top_k=None):
        return sorted((answers[c.place_id] for c in cands), key=lambda v: (not v.verified, -v.inliers))

    near = [M(19, 0.0, 18.0), M(21, 0.0, 22.0)]
    d = flt.update(100.0, [M(20, 0.6, 20.0)], verify, lambda c: near)
    assert d.accepted and d.views == 2 and d.verified_place == 20 and d.place_id == 21  # nearer view
    answers[21] = V(21, False, 5)
    flt.reset()
    d = flt.update(100.0, [M(20, 0.6, 20.0)], verify, lambda c: near)
    assert d.status is LoopStatus.FAILED_TEMPORAL_CONSISTENCY and d.views == 1
    assert d.stages == FUNNEL_STAGES[:2]


def test_a_place_is_verified_by_its_best_matching_keyframe() -> None:
    """When no retrieved candidate verifies, the top candidate's adjacent keyframes are tried."""
    flt = LoopClosureFilter(LoopClosureConfig(min_time_separation=30.0, verified_frames=1,
                                              consistency_frames=1))
    answers = {20: V(20, False, 4), 30: V(30, False, 2), 19: V(19, False, 0), 21: V(21, True, 35),
               22: V(22, False, 0)}

    def verify(cands, top_k=None):
        return sorted((answers[c.place_id] for c in cands), key=lambda v: (not v.verified, -v.inliers))

    def neighbours(c):
        return [M(c.place_id - 1, 0.0, c.stamp - 2), M(c.place_id + 1, 0.0, c.stamp + 2)]

    d = flt.update(100.0, [M(20, 0.6, 20.0), M(30, 0.5, 30.0)], verify, neighbours)
    assert d.accepted and d.verified_place == 21 and d.place_id == 21 and d.t_match == 22.0
    answers[21] = V(21, False, 1)
    d = flt.update(101.0, [M(20, 0.6, 20.0), M(30, 0.5, 30.0)], verify, neighbours)
    assert d.status is LoopStatus.FAILED_GEOMETRIC_VERIFICATION and d.stages == FUNNEL_STAGES[:1]


def test_stages_of_the_funnel_follow_the_status() -> None:
    flt = LoopClosureFilter(LoopClosureConfig(consistency_frames=2, max_rate_hz=1.0))
    assert flt.update(100.0, [M(1, 0.9, 95.0)]).stages == ()  # too recent
    assert flt.update(101.0, [M(1, 0.9, 10.0)]).stages == FUNNEL_STAGES[:2]  # no streak yet
    assert flt.update(102.0, [M(1, 0.9, 10.0)]).stages == FUNNEL_STAGES
