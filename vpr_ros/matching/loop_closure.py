"""Loop-closure acceptance: which retrieval results become [t_query, t_match] pairs for SLAM.

A frame's candidate is its best-scoring match that lies at least ``min_time_separation`` seconds
from the query (LIO-SAM drops pairs closer than its ``historyKeyframeSearchTimeDiff``, 30 s).
The candidate must score at least ``min_score`` (-1, the default, is no score gate: scores mean
different things per encoder, and verification decides). It must then agree with the
candidates of the previous ``consistency_frames - 1`` frames (their place ids within
``consistency_place_window`` or their map stamps within ``consistency_stamp_window`` seconds of
each other): the temporal check that keeps one lucky frame from closing a loop.

With a verifier (the default in the node and in ``evaluate --loops``), every frame's eligible
candidates scoring at least ``min_score`` (at most ``verification.top_k``) are geometrically
verified (:mod:`vpr_ros.matching.verification`), not only those of frames that already passed the
retrieval streak, so that the verified evidence is there when the streak completes; the one with the
most inliers is the frame's verified candidate. When none verifies, the keyframes just before and
after the top candidate in map time are tried: the verification of a place uses its best-matching
keyframe, as retrieval often ranks the keyframe one further along the same street first, whose wider
baseline fails RANSAC. Then the place the previous frame verified (the chain's place, below) and its
adjacent keyframes: the revisit goes on even when retrieval's top candidates of one frame are all
look-alikes (a guided search, as ORB-SLAM tracks a loop candidate's covisible keyframes). When nothing
verifies, the frame is ``FAILED_GEOMETRIC_VERIFICATION``.

A closure needs ``verified_frames`` agreeing verified *views* (2 by default) on top of the retrieval
streak (``consistency_frames``): DLoopDetector likewise requires temporally consistent retrieval
*and* a geometric check, and ORB-SLAM3 confirms a verified loop candidate with further keyframes
before it closes the loop. A view is either a previous frame's verified, agreeing candidate (the
chain restarts at a frame where nothing verifies) or another keyframe of the same place, just before
or after it in map time, that verifies against this frame as well: two map images taken metres apart
whose geometry both agree with the query are evidence much as two query frames are, and a frame
whose own verification failed does not cost the revisit its closure. A look-alike place that happens
to pass RANSAC once (a repeated facade, the same model of car) rarely does so twice.

A frame that has all the verified views a closure needs but not yet the retrieval streak is *held*:
when the streak completes on the same chain of agreeing verified places (frames in a row, none failing
verification), the held frames are published with the frame that completes it (``LoopDecision.confirms``,
at most ``MAX_HELD``). The streak was all they lacked, and it now holds for the place they verified:
the top-1 retrieval of one frame in a chain often jumps to a look-alike that fails verification, which
restarts the streak while the verified places keep agreeing. Frames with a single verified view are
never held: their own geometry is not enough for a closure, streak or not.

Of the verified views of this frame, the one taken nearest to the query becomes the match, as
DLoopDetector picks the best entry of an island of consecutive matches: retrieval and inlier counts
alone sometimes favour the keyframe one further along the same street (it sees the same facades,
magnified). With an essential matrix, nearest is the smallest rotation-compensated parallax
(:mod:`vpr_ros.matching.verification`) among the views with at least ``PARALLAX_SUPPORT`` of the
best view's inliers (a parallax measured on a handful of inliers is noise); without intrinsics,
the most inliers. A frame costs at most ``verification.top_k`` + 2 verifications, + 3 more (the
chain's place and its neighbours) when nothing else verifies right after a verified frame.

``max_rate_hz`` (0, no cap, by default) is a token bucket in query time: on average at most that
many closures per second, bursts of at most ``RATE_BURST`` (LIO-SAM keeps the newest five pairs in
its queue and consumes one per ``loopClosureFrequency``). A cap drops detected closures before any
back end sees them, and LIO-SAM copes with more on its own, so it is off by default; set it for a
back end that cannot.

Every frame gets a :class:`LoopStatus`, modelled on Kimera-VIO's LCD status enum, so the node can
report why nothing was published.
"""
from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from vpr_ros.errors import ConfigError
from vpr_ros.settings import setting

if TYPE_CHECKING:
    from vpr_ros.matching.verification import Verification


PARALLAX_SUPPORT = 0.5  # a neighbour competes on parallax with at least this share of the best inlier count
FUNNEL_STAGES = ('separated', 'verified', 'agreed', 'published')  # what a frame passes, in order
RATE_BURST = 5  # closures a max_rate_hz cap lets through at once: LIO-SAM's loop queue holds five
MAX_HELD = 10  # frames held for their chain's retrieval streak (the oldest go first): 5 s of a 2 Hz camera


class LoopStatus(enum.Enum):
    LOOP_DETECTED = 'loop_detected'
    NO_MATCHES = 'no_matches'                              # empty map or nothing retrieved
    TOO_RECENT = 'too_recent'                              # every match is within min_time_separation
    LOW_SCORE = 'low_score'                                # the eligible match scores below min_score
    FAILED_TEMPORAL_CONSISTENCY = 'failed_temporal_consistency'  # not yet N agreeing frames / views
    RATE_LIMITED = 'rate_limited'                          # accepted, but max_rate_hz was reached
    FAILED_GEOMETRIC_VERIFICATION = 'failed_geometric_verification'  # no candidate verified


class Candidate(Protocol):
    """What the filter reads from a retrieval match (vpr_ros.mapdb.store.Match satisfies it)."""

    place_id: int
    score: float
    stamp: float


@dataclass
class LoopClosureConfig:
    """When a frame's candidate becomes a loop closure; the node's ``loop_closure.*`` parameters."""

    SETTINGS_PREFIX = 'loop_closure'

    min_score: float = setting(
        -1.0, 'Minimum score of the loop-closure candidate; -1 = no score gate (geometric verification '
        'decides). Scores are encoder dependent: without verification set it from `vpr-ros evaluate --loops` '
        '(min_score for 100% precision).')
    min_time_separation: float = setting(
        30.0, 'Minimum |t_query - t_match| [s]; LIO-SAM rejects pairs closer than its '
        'historyKeyframeSearchTimeDiff (30 s).', low=0.0, high=1.0e9)
    consistency_frames: int = setting(  # without a verifier: consecutive agreeing retrieval candidates
        3, 'Consecutive processed frames whose candidates must agree before a loop closure is published (1 = '
        'no temporal check); with verification, verified_frames must hold as well.', low=1, high=1000)
    consistency_place_window: int = setting(
        3, 'Candidates agree when their place ids differ by at most this ...', low=0, high=1_000_000_000)
    consistency_stamp_window: float = setting(
        3.0, '... or their map stamps differ by at most this [s].', low=0.0, high=1.0e9)
    max_rate_hz: float = setting(  # 0 = no cap; otherwise a token bucket of RATE_BURST
        0.0, 'Cap on published loop closures per second of query time, a token bucket with bursts of '
        f'{RATE_BURST} (LIO-SAM queues five and consumes one per loopClosureFrequency, dropping the oldest '
        'itself); 0 = no cap.', low=0.0, high=1000.0)
    verified_frames: int = setting(
        2, 'Agreeing verified views before a closure is published (with verification): verified candidates '
        'of consecutive frames, or adjacent keyframes of the same place that verify against the same frame; '
        '1 = the first verified candidate.', low=1, high=100)

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
    streak: int = 0  # consecutive agreeing retrieval candidates, this one included
    verification: 'Verification | None' = None  # of the published (or best rejected) candidate
    # place_id/t_match: the published place (after neighbour refinement); score: the retrieval score
    # of the candidate it was found from
    candidates: tuple[int, ...] = ()  # eligible (separated, score >= min_score) candidate place ids
    verified_place: int | None = None  # the frame's verified place (None: nothing verified / no verifier)
    views: int = 0  # agreeing verified views counted for this frame (previous frames' included)
    checked: bool = False  # geometric verification ran for this frame
    held: bool = False  # verified views enough, waiting for the retrieval streak (may be confirmed later)
    confirms: tuple['LoopDecision', ...] = ()  # held earlier frames of this chain, published with this one

    @property
    def accepted(self) -> bool:
        return self.status is LoopStatus.LOOP_DETECTED

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages of the recall funnel this frame passed (no ground truth: the node's diagnostics)."""
        if not self.candidates:
            return ()
        if self.status is LoopStatus.FAILED_GEOMETRIC_VERIFICATION:
            return FUNNEL_STAGES[:1]
        if self.status is LoopStatus.FAILED_TEMPORAL_CONSISTENCY:
            return FUNNEL_STAGES[:2]
        return FUNNEL_STAGES[:3] if self.status is LoopStatus.RATE_LIMITED else FUNNEL_STAGES


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
        self._tokens = float(RATE_BURST)
        self._tokens_at: float | None = None
        self._reset_verified()

    def _reset_verified(self) -> None:
        self._verified: Candidate | None = None
        self._verified_streak = 0
        self._held: list[LoopDecision] = []

    @property
    def held_stamps(self) -> set[float]:
        """Query stamps of the frames held for their chain's retrieval streak (a flow keeps what it needs
        to publish them, e.g. their local features, only for these)."""
        return {d.t_query for d in self._held}

    def _separated(self, t_query: float, matches: Sequence[Candidate]) -> list[Candidate]:
        """The matches far enough in time from the query to close a loop with it."""
        return [m for m in matches if abs(t_query - float(m.stamp)) >= self.config.min_time_separation]

    def _agrees(self, a: Candidate, b: Candidate) -> bool:
        cfg = self.config
        return (abs(int(a.place_id) - int(b.place_id)) <= cfg.consistency_place_window
                or abs(float(a.stamp) - float(b.stamp)) <= cfg.consistency_stamp_window)

    def _rate_allows(self, t_query: float) -> bool:
        """Token bucket in query time (no cap at max_rate_hz 0); spends a token when it allows."""
        rate = self.config.max_rate_hz
        if rate <= 0:
            return True
        if self._tokens_at is not None:
            self._tokens = min(float(RATE_BURST), self._tokens + (t_query - self._tokens_at) * rate)
        self._tokens_at = t_query
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def update(self, t_query: float, matches: Sequence[Candidate],
               verify: 'Callable[..., list[Verification]] | None' = None,
               neighbours: Callable[[Candidate], Sequence[Candidate]] | None = None) -> LoopDecision:
        """``verify(candidates, top_k=None)``: their verifications (at most top_k; None: the verifier's
        own limit), re-ranked best first; None: no verification. ``neighbours(candidate)``: the map
        places just before and after it in time (None: only the retrieved candidates are verified)."""
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
        scored = [m for m in candidates if float(m.score) >= cfg.min_score]
        ids = tuple(int(m.place_id) for m in scored)
        if verify is None:
            status = LoopStatus.LOOP_DETECTED
            if self._streak < cfg.consistency_frames:
                status = LoopStatus.FAILED_TEMPORAL_CONSISTENCY
            elif not self._rate_allows(t_query):
                status = LoopStatus.RATE_LIMITED
            return LoopDecision(status, t_query, float(eligible.stamp), int(eligible.place_id),
                                float(eligible.score), self._streak, candidates=ids)
        return self._verified_decision(t_query, eligible, scored, ids, verify, neighbours)

    def _verified_decision(self, t_query: float, eligible: Candidate, scored: list[Candidate],
                           ids: tuple[int, ...], verify: 'Callable[..., list[Verification]]',
                           neighbours: Callable[[Candidate], Sequence[Candidate]] | None) -> LoopDecision:
        cfg = self.config
        verifications = verify(scored)
        best = verifications[0] if verifications else None
        by_id = {int(m.place_id): m for m in scored}
        if (best is None or not best.verified) and neighbours is not None:
            # the top candidate's adjacent keyframes, then the place this frame's chain is at and its own
            for around, itself in ((eligible, False), (self._verified, True)):
                if around is None:
                    continue
                near = self._near(t_query, around, neighbours)
                if itself and self._separated(t_query, [around]):
                    near = {int(around.place_id): around, **near}
                tried = verify(list(near.values()), top_k=len(near)) if near else []
                if tried and tried[0].verified:  # verified first
                    best = tried[0]
                    by_id.update(near)
                    break
        if best is None or not best.verified:
            self._reset_verified()
            return LoopDecision(LoopStatus.FAILED_GEOMETRIC_VERIFICATION, t_query, float(eligible.stamp),
                                int(eligible.place_id), float(eligible.score), self._streak, best, ids,
                                checked=True)
        place = by_id[best.place_id]
        views = [(place, best)]
        if neighbours is not None:
            near = self._near(t_query, place, neighbours)
            if near:
                views += [(near[v.place_id], v) for v in verify(list(near.values()), top_k=len(near))
                          if v.verified]
        agrees = self._verified is not None and self._agrees(self._verified, place)
        self._verified_streak = self._verified_streak + 1 if agrees else 1
        if not agrees:
            self._held = []  # a new chain: the held frames verified another place
        self._verified = place
        count = self._verified_streak - 1 + len(views)
        status = LoopStatus.LOOP_DETECTED
        if count < cfg.verified_frames or self._streak < cfg.consistency_frames:
            status = LoopStatus.FAILED_TEMPORAL_CONSISTENCY
        elif not self._rate_allows(t_query):
            status = LoopStatus.RATE_LIMITED
        published, verification = self._nearest_view(views)
        hold = status is LoopStatus.FAILED_TEMPORAL_CONSISTENCY and count >= cfg.verified_frames
        decision = LoopDecision(status, t_query, float(published.stamp), int(published.place_id),
                                float(eligible.score), self._streak, verification, ids, int(place.place_id),
                                count, checked=True, held=hold)
        if hold:
            self._held = [*self._held, decision][-MAX_HELD:]
        elif status is LoopStatus.LOOP_DETECTED and self._held:
            decision = replace(decision, confirms=self._confirm_held(t_query))
        return decision

    def _confirm_held(self, t_query: float) -> tuple[LoopDecision, ...]:
        """The held frames of the chain, published now (each within the rate cap), oldest first."""
        held, self._held = self._held, []
        return tuple(replace(d, status=LoopStatus.LOOP_DETECTED, held=False) for d in held
                     if self._rate_allows(t_query))

    def _near(self, t_query: float, candidate: Candidate,
              neighbours: Callable[[Candidate], Sequence[Candidate]]) -> dict[int, Candidate]:
        """The candidate's time neighbours (adjacent keyframes) far enough in time from the query."""
        return {int(m.place_id): m for m in self._separated(t_query, neighbours(candidate))
                if int(m.place_id) != int(candidate.place_id)}

    @staticmethod
    def _nearest_view(views: 'list[tuple[Candidate, Verification]]') -> 'tuple[Candidate, Verification]':
        """Of the verified views (the candidate first: it wins ties), the one taken nearest to the query."""
        options = [v for _, v in views]
        if all(v.parallax_deg is not None for v in options):
            support = PARALLAX_SUPPORT * max(v.inliers for v in options)
            best = min((v for v in options if v.inliers >= support), key=lambda v: v.parallax_deg)
        else:
            best = max(options, key=lambda v: v.inliers)
        return next(view for view in views if view[1] is best)

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


__all__ = ['FUNNEL_STAGES', 'MAX_HELD', 'PARALLAX_SUPPORT', 'RATE_BURST', 'Candidate', 'LoopClosureConfig',
           'LoopClosureFilter', 'LoopDecision', 'LoopStatus', 'recent_places']
