"""Loop-closure acceptance: which retrieval results become [t_query, t_match] pairs for SLAM.

A frame's candidate is its best-scoring match that lies at least ``min_time_separation`` seconds
from the query (LIO-SAM drops pairs closer than its ``historyKeyframeSearchTimeDiff``, 30 s).
The candidate must score at least ``min_score`` (-1, the default, is no score gate: scores mean
different things per encoder, and verification decides); then it must agree with the candidates of the
previous ``consistency_frames - 1`` frames (their place ids within ``consistency_place_window`` or
their map stamps within ``consistency_stamp_window`` seconds of each other): the temporal check
that keeps one lucky frame from closing a loop. Accepted pairs are capped at ``max_rate_hz``
(query time), since LIO-SAM consumes one pair per second from a queue of five.

Finally, when a verifier is given (the default in the node and in ``evaluate --loops``), the
eligible candidates scoring at least ``min_score`` are geometrically verified
(:mod:`vpr_ros.matching.verification`) and the one with the most inliers is the frame's verified
candidate; when none verifies, the frame is ``FAILED_GEOMETRIC_VERIFICATION`` (the retrieval streak
is kept, so the next frame may try again). A closure is published only when ``verified_frames``
consecutive verification attempts (2 by default) verified agreeing candidates, the geometric form
of the temporal check: ORB-SLAM3 likewise confirms a verified loop candidate with further
keyframes before it closes the loop. A look-alike place that happens to pass RANSAC once (a
repeated facade, the same model of car) rarely does so again from the next viewpoint. Verification
runs last, like DLoopDetector's, so it costs time only for frames that would otherwise be published
(two per closure).

Before a verified closure is published, the keyframes just before and after its place in map time
(``neighbours``) are verified too, and of those that verify the one taken nearest to the query
becomes the match, as DLoopDetector picks the best entry of an island of consecutive matches:
retrieval and inlier counts alone sometimes favour the keyframe one further along the same street
(it sees the same facades, magnified). With an essential matrix, nearest is the smallest
rotation-compensated parallax (:mod:`vpr_ros.matching.verification`) among the views with at
least ``PARALLAX_SUPPORT`` of the best view's inliers (a parallax measured on a handful of
inliers is noise); without intrinsics, the most inliers. It costs at most two verifications per
published closure.

Every frame gets a :class:`LoopStatus`, modelled on Kimera-VIO's LCD status enum, so the node can
report why nothing was published.
"""
from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from vpr_ros.errors import ConfigError

if TYPE_CHECKING:
    from vpr_ros.matching.verification import Verification


PARALLAX_SUPPORT = 0.5  # a neighbour competes on parallax with at least this share of the best inlier count


class LoopStatus(enum.Enum):
    LOOP_DETECTED = 'loop_detected'
    NO_MATCHES = 'no_matches'                              # empty map or nothing retrieved
    TOO_RECENT = 'too_recent'                              # every match is within min_time_separation
    LOW_SCORE = 'low_score'                                # the eligible match scores below min_score
    FAILED_TEMPORAL_CONSISTENCY = 'failed_temporal_consistency'  # not yet N agreeing frames
    RATE_LIMITED = 'rate_limited'                          # accepted, but max_rate_hz was reached
    FAILED_GEOMETRIC_VERIFICATION = 'failed_geometric_verification'  # no candidate verified


class Candidate(Protocol):
    """What the filter reads from a retrieval match (vpr_ros.mapdb.store.Match satisfies it)."""

    place_id: int
    score: float
    stamp: float


@dataclass
class LoopClosureConfig:
    min_score: float = -1.0  # -1 = no score gate
    min_time_separation: float = 30.0
    consistency_frames: int = 3
    consistency_place_window: int = 3
    consistency_stamp_window: float = 3.0
    max_rate_hz: float = 1.0
    verified_frames: int = 2  # consecutive agreeing verifications (with a verifier)

    def validate(self) -> None:
        if self.min_time_separation < 0:
            raise ConfigError('loop closure: min_time_separation must be >= 0')
        if self.consistency_frames < 1:
            raise ConfigError('loop closure: consistency_frames must be >= 1')
        if self.consistency_place_window < 0 or self.consistency_stamp_window < 0:
            raise ConfigError('loop closure: consistency windows must be >= 0')
        if self.max_rate_hz < 0:
            raise ConfigError('loop closure: max_rate_hz must be >= 0 (0 = no cap)')
        if self.verified_frames < 1:
            raise ConfigError('loop closure: verified_frames must be >= 1')


@dataclass(frozen=True)
class LoopDecision:
    status: LoopStatus
    t_query: float
    t_match: float | None = None
    place_id: int | None = None
    score: float | None = None
    streak: int = 0  # consecutive agreeing frames, this one included
    verification: 'Verification | None' = None  # of the published (or best rejected) candidate
    # place_id/t_match: the published place (after neighbour refinement); score: the retrieval score
    # of the candidate it was found from

    @property
    def accepted(self) -> bool:
        return self.status is LoopStatus.LOOP_DETECTED


class LoopClosureFilter:
    """Stateful per-frame decision; feed frames in query-time order through :meth:`update`."""

    def __init__(self, config: LoopClosureConfig | None = None) -> None:
        self.config = config or LoopClosureConfig()
        self.config.validate()
        self.reset()

    def reset(self) -> None:
        self._previous: Candidate | None = None
        self._streak = 0
        self._last_query: float | None = None
        self._last_published: float | None = None
        self._reset_verified()

    def _reset_verified(self) -> None:
        self._verified: Candidate | None = None
        self._verified_streak = 0

    def _separated(self, t_query: float, matches: Sequence[Candidate]) -> list[Candidate]:
        """The matches far enough in time from the query to close a loop with it."""
        return [m for m in matches if abs(t_query - float(m.stamp)) >= self.config.min_time_separation]

    def _agrees(self, a: Candidate, b: Candidate) -> bool:
        cfg = self.config
        return (abs(int(a.place_id) - int(b.place_id)) <= cfg.consistency_place_window
                or abs(float(a.stamp) - float(b.stamp)) <= cfg.consistency_stamp_window)

    def update(self, t_query: float, matches: Sequence[Candidate],
               verify: 'Callable[..., list[Verification]] | None' = None,
               neighbours: Callable[[Candidate], Sequence[Candidate]] | None = None) -> LoopDecision:
        """``verify(candidates, top_k=None)``: their verifications (at most top_k; None: the verifier's
        own limit), re-ranked best first; None: no verification. ``neighbours(candidate)``: the map
        places just before and after it in time (None: no refinement)."""
        cfg = self.config
        if self._last_query is not None and t_query < self._last_query:
            self.reset()  # time went backwards: a bag restarted or the clock was reset
        self._last_query = t_query
        if not matches:
            return self._fail(LoopStatus.NO_MATCHES, t_query)
        candidates = self._separated(t_query, matches)
        eligible = candidates[0] if candidates else None
        if eligible is None:
            return self._fail(LoopStatus.TOO_RECENT, t_query)
        if float(eligible.score) < cfg.min_score:
            return self._fail(LoopStatus.LOW_SCORE, t_query, eligible)
        agrees = self._previous is not None and self._agrees(self._previous, eligible)
        self._streak = self._streak + 1 if agrees else 1
        self._previous = eligible
        status = LoopStatus.LOOP_DETECTED
        if self._streak < cfg.consistency_frames:
            status = LoopStatus.FAILED_TEMPORAL_CONSISTENCY
        elif (cfg.max_rate_hz > 0 and self._last_published is not None
              and t_query - self._last_published < 1.0 / cfg.max_rate_hz):
            status = LoopStatus.RATE_LIMITED
        verification = None
        if status is LoopStatus.LOOP_DETECTED and verify is not None:
            verifications = verify([m for m in candidates if float(m.score) >= cfg.min_score])
            verification = verifications[0] if verifications else None
            if verification is None or not verification.verified:
                status = LoopStatus.FAILED_GEOMETRIC_VERIFICATION
                self._reset_verified()
            else:
                eligible = next(m for m in candidates if int(m.place_id) == verification.place_id)
                agrees = self._verified is not None and self._agrees(self._verified, eligible)
                self._verified_streak = self._verified_streak + 1 if agrees else 1
                self._verified = eligible
                if self._verified_streak < cfg.verified_frames:
                    status = LoopStatus.FAILED_TEMPORAL_CONSISTENCY
        published = eligible
        if status is LoopStatus.LOOP_DETECTED:
            self._last_published = t_query
            if verify is not None and neighbours is not None and verification is not None:
                published, verification = self._refine(t_query, eligible, verification, verify, neighbours)
        return LoopDecision(status, t_query, float(published.stamp), int(published.place_id),
                            float(eligible.score), self._streak, verification)

    def _refine(self, t_query: float, candidate: Candidate, verification: 'Verification',
                verify: 'Callable[..., list[Verification]]',
                neighbours: Callable[[Candidate], Sequence[Candidate]]) -> 'tuple[Candidate, Verification]':
        """The candidate or the time neighbour that verifies nearest to the query (see the module doc)."""
        near = {int(m.place_id): m for m in self._separated(t_query, neighbours(candidate))
                if int(m.place_id) != int(candidate.place_id)}
        if not near:
            return candidate, verification
        options = [verification] + [v for v in verify(list(near.values()), top_k=len(near)) if v.verified]
        # the candidate comes first, so it wins ties
        if all(v.parallax_deg is not None for v in options):
            support = PARALLAX_SUPPORT * max(v.inliers for v in options)
            best = min((v for v in options if v.inliers >= support), key=lambda v: v.parallax_deg)
        else:
            best = max(options, key=lambda v: v.inliers)
        return (candidate, verification) if best is verification else (near[best.place_id], best)

    def _fail(self, status: LoopStatus, t_query: float, match: Candidate | None = None) -> LoopDecision:
        self._previous, self._streak = None, 0
        self._reset_verified()
        if match is None:
            return LoopDecision(status, t_query)
        return LoopDecision(status, t_query, float(match.stamp), int(match.place_id), float(match.score))


def recent_places(session_places: Sequence[tuple[int, float]], t: float, separation: float) -> set[int]:
    """Places a run added (``(place id, stamp)`` in time order) within ``separation`` s of ``t``.

    In incremental mode they are never loop-closure candidates: searching without them lets an
    older revisit reach the top-K.
    """
    recent = set()
    for pid, stamp in reversed(session_places):
        if t - stamp >= separation:
            break
        if abs(t - stamp) < separation:
            recent.add(pid)
    return recent


__all__ = ['PARALLAX_SUPPORT', 'Candidate', 'LoopClosureConfig', 'LoopClosureFilter', 'LoopDecision',
           'LoopStatus', 'recent_places']
