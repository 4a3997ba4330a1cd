"""Loop-closure acceptance rules: separation, score, temporal consistency, rate cap."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from vpr_ros.errors import ConfigError
from vpr_ros.matching.loop_closure import (
    FUNNEL_STAGES,
    MAX_HELD,
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


def chain_filter() -> LoopClosureFilter:
    return LoopClosureFilter(LoopClosureConfig(min_time_separation=30.0, consistency_frames=3,
                                               verified_frames=2))


def by_inliers(answers: dict[int, V]):
    def verify(cands, top_k=None):
        return sorted((answers.get(c.place_id, V(c.place_id, False)) for c in cands),
                      key=lambda v: (not v.verified, -v.inliers))
    return verify


def test_frames_lacking_only_the_streak_are_published_when_their_chain_completes_it() -> None:
    """The top-1 of the first frame jumps to a look-alike that fails verification, so the retrieval streak
    restarts at the revisit; the frames that verified the place with two views each are held and
    published once the streak holds, each with its own place and verification."""
    flt = chain_filter()
    answers = {20: V(20, True, 60), 21: V(21, True, 50), 19: V(19, True, 40), 80: V(80, False, 3)}
    near = {20: [M(19, 0.0, 19.0), M(21, 0.0, 21.0)], 21: [M(20, 0.0, 20.0), M(22, 0.0, 22.0)]}
    frames = [(100.0, [M(80, 0.9, 60.0), M(20, 0.8, 20.0)]),  # top-1 a look-alike: the streak restarts
              (100.5, [M(20, 0.9, 20.0)]), (101.0, [M(20, 0.9, 20.0)]), (101.5, [M(21, 0.9, 21.0)])]
    decisions = [flt.update(t, m, by_inliers(answers), lambda c: near.get(c.place_id, [])) for t, m in frames]
    S = LoopStatus
    assert [d.status for d in decisions] == [S.FAILED_TEMPORAL_CONSISTENCY] * 3 + [S.LOOP_DETECTED]
    assert [d.held for d in decisions] == [True, True, True, False] and flt.held_stamps == set()
    assert [d.streak for d in decisions] == [1, 1, 2, 3]
    confirmed = decisions[-1].confirms
    assert [d.t_query for d in confirmed] == [100.0, 100.5, 101.0]
    assert all(d.accepted and d.stages == FUNNEL_STAGES and d.verified_place == 20 for d in confirmed)
    assert not any(d.confirms for d in decisions[:-1])


def test_a_far_look_alike_verified_once_per_frame_is_never_published() -> None:
    """A look-alike 250 m away that verifies on three frames in a row (one view each: its adjacent
    keyframes do not) while retrieval's top-1 jumps never gets a streak; its held frames are dropped
    when the chain moves to the true revisit, which completes its own streak without publishing them."""
    flt = chain_filter()
    answers = {34: V(34, True, 62), 0: V(0, True, 50), 1: V(1, True, 40)}
    near = {0: [M(1, 0.0, 1.0)], 34: [M(33, 0.0, 33.0), M(35, 0.0, 35.0)]}
    look_alike = [(100.0, [M(33, 0.9, 33.0), M(31, 0.8, 31.0), M(34, 0.7, 34.0)]),
                  (100.5, [M(75, 0.9, 75.0), M(1, 0.8, 1.0), M(34, 0.7, 34.0)]),
                  (101.0, [M(34, 0.9, 34.0)])]
    revisit = [(101.5 + i / 2, [M(0, 0.9, 0.0)]) for i in range(3)]
    decisions = [flt.update(t, m, by_inliers(answers), lambda c: near.get(c.place_id, []))
                 for t, m in look_alike + revisit]
    published = [d for d in decisions if d.accepted] + [c for d in decisions for c in d.confirms]
    assert published and all(d.place_id in (0, 1) for d in published)
    assert [d.held for d in decisions[:3]] == [False, True, True]  # two frames in a row are two views
    assert flt.held_stamps == set()


def test_held_frames_are_dropped_when_the_chain_breaks() -> None:
    answers = {20: V(20, True, 60), 21: V(21, True, 50), 60: V(60, True, 50), 61: V(61, True, 45)}
    near = {20: [M(21, 0.0, 21.0)], 60: [M(61, 0.0, 61.0)]}
    for breaker in ([M(60, 0.9, 60.0)], [M(90, 0.9, 90.0)]):  # another verified place; nothing verifies
        flt = chain_filter()
        verify, nb = by_inliers(answers), (lambda c: near.get(c.place_id, []))
        assert flt.update(100.0, [M(20, 0.9, 20.0)], verify, nb).held and flt.held_stamps == {100.0}
        flt.update(100.5, breaker, verify, nb)
        assert 100.0 not in flt.held_stamps
        later = [flt.update(101.0 + i / 2, [M(20, 0.9, 20.0)], verify, nb) for i in range(3)]
        assert later[-1].accepted and all(d.t_query != 100.0 for d in later[-1].confirms)


def test_held_frames_pass_the_rate_cap_and_are_bounded() -> None:
    answers = {20: V(20, True, 60), 21: V(21, True, 50), 80: V(80, False, 2)}
    near = {20: [M(21, 0.0, 21.0)]}
    flt = LoopClosureFilter(LoopClosureConfig(min_time_separation=30.0, consistency_frames=3,
                                              max_rate_hz=0.1))
    verify, nb = by_inliers(answers), (lambda c: near.get(c.place_id, []))
    # every other frame's top-1 is a look-alike, so the streak stays at 1 and frames keep being held
    frames = [(100.0 + i / 2, [M(80, 0.9, 60.0), M(20, 0.8, 20.0)] if i % 2 else [M(20, 0.9, 20.0)])
              for i in range(2 * MAX_HELD + 2)]
    for t, m in frames:
        assert flt.update(t, m, verify, nb).held
    assert len(flt.held_stamps) == MAX_HELD
    final = [flt.update(200.0 + i / 2, [M(20, 0.9, 20.0)], verify, nb) for i in range(3)]
    assert final[-1].accepted  # the streak completes: one token for it, RATE_BURST - 1 for the held frames
    assert len(final[-1].confirms) == RATE_BURST - 1


def test_a_frame_whose_candidates_are_all_look_alikes_verifies_the_place_its_chain_is_at() -> None:
    """Retrieval's top-3 of the second frame are look-alikes (and so are their neighbours): the place the
    previous frame verified, and its adjacent keyframes, are tried, so the chain (and its held frames)
    goes on instead of restarting."""
    answers = {20: V(20, True, 60), 21: V(21, True, 50), 19: V(19, True, 30)}
    asked: list[list[int]] = []

    def verify(cands, top_k=None):
        asked.append([c.place_id for c in cands])
        return by_inliers(answers)(cands)

    def neighbours(c):
        return [M(c.place_id - 1, 0.0, c.stamp - 1), M(c.place_id + 1, 0.0, c.stamp + 1)]

    flt = chain_filter()
    first = flt.update(100.0, [M(20, 0.9, 20.0)], verify, neighbours)
    assert first.held and first.verified_place == 20
    asked.clear()
    look_alikes = [M(70, 0.9, 60.0), M(50, 0.8, 50.0), M(90, 0.7, 65.0)]
    second = flt.update(100.5, look_alikes, verify, neighbours)
    assert asked[:3] == [[70, 50, 90], [69, 71], [20, 19, 21]]  # candidates, top's neighbours, the chain
    assert second.verified_place == 20 and second.held and flt.held_stamps == {100.0, 100.5}
    # with no chain (a fresh filter) the same frame fails: the chain's place is what rescued it
    fresh = chain_filter().update(100.5, look_alikes, verify, neighbours)
    assert fresh.status is LoopStatus.FAILED_GEOMETRIC_VERIFICATION
