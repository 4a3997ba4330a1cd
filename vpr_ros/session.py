"""One run over a map, frame by frame: the flow the localizer node and ``evaluate --loops`` share.

An :class:`IncrementalSession` has the two steps of the node's two threads:

* :meth:`~IncrementalSession.localize` (the frame thread): encode and search the map, the places
  this run added within ``min_time_separation`` of the frame excluded (they are never loop-closure
  candidates, and without them an older revisit can reach the top-K); then the keyframe gate decides
  whether the frame becomes a new place (``grow``, the node's incremental mode). While the encoder
  has no vocabulary yet, a frame only feeds the :class:`~vpr_ros.vocabulary.VocabularyBootstrap`
  (the gated keyframes are kept for the fit) and nothing is answered.
* :meth:`~IncrementalSession.decide_loop` (the loop thread): the frame's loop-closure decision by the
  :class:`~vpr_ros.matching.loop_closure.LoopClosureFilter`, its candidates and their adjacent
  keyframes (then the place the previous frame verified) verified geometrically against the map's
  local features when a verifier is given. A frame the filter *holds* (verified views enough, the
  retrieval streak not yet) keeps its local features here until a later frame of its chain confirms
  it; the outcome then lists it, with its own features, before the confirming frame among the
  closures to publish (:attr:`LoopOutcome.closures`).

Once the vocabulary is fitted, the bootstrap keyframes it was fitted on are loop-closure queries too
(:meth:`~vpr_ros.vocabulary.VocabularyBootstrap.loop_queries`): the frame that completed the fit
carries them (:attr:`SessionFrame.loop_queries`), to be decided in time order before any later
frame, as the node does in its frame thread (its loop thread has had nothing to decide before).

Each step is called from one thread at a time, frames in time order. The two may run at once on two
threads: every access to the map holds ``map_lock`` (encode, search and the new place on the frame
thread; the verifier's place features and the time neighbours on the loop thread). The session's
places are only touched by :meth:`~IncrementalSession.localize`, the loop filter only by
:meth:`~IncrementalSession.decide_loop`. Results are plain objects, :class:`SessionFrame` and
:class:`LoopOutcome`; the callers publish or score them.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from vpr_ros import features as lf
from vpr_ros.frames import Pose
from vpr_ros.localization import Localization, Localizer
from vpr_ros.mapdb.store import Match
from vpr_ros.matching.keyframes import KeyframeGate
from vpr_ros.matching.loop_closure import LoopClosureFilter, LoopDecision, LoopStatus, recent_places
from vpr_ros.matching.verification import Verification, Verifier
from vpr_ros.vocabulary import VocabularyBootstrap

R = TypeVar('R')
NO_VECTORS = np.zeros((0, 1), np.float32)  # the novelty gate's input before anything can be encoded


def _no_features() -> None:
    """A confirmed held frame whose features were not kept (never, while the filter holds it)."""
    return None


@dataclass
class LoopQuery:
    """One loop-closure query (the input of ``decide_loop``): a frame's stamp, its retrieved places
    (best first) and its local features (extracted on first call)."""

    stamp: float
    matches: list[Match]
    features: Callable[[], lf.LocalFeatures | None] = field(repr=False)


@dataclass
class SessionFrame:
    """What :meth:`IncrementalSession.localize` made of one frame (the input of ``decide_loop``)."""

    stamp: float
    localization: Localization | None  # None: the vocabulary is bootstrapping, nothing is answered
    features: Callable[[], lf.LocalFeatures | None] = field(repr=False)  # extracted on first call, once
    keyframe: bool = False  # the keyframe gate took the frame (bootstrapping: kept for the fit)
    added: tuple[int, ...] = ()  # place ids the frame added (at the bootstrap fit: every seeded place)
    # at the bootstrap fit: the seeded keyframes as loop-closure queries, in time order
    bootstrap_queries: tuple[LoopQuery, ...] = ()

    @property
    def matches(self) -> list[Match]:
        return self.localization.matches if self.localization is not None else []

    @property
    def loop_queries(self) -> tuple[LoopQuery, ...]:
        """What ``decide_loop`` is to decide for this frame, in order: the bootstrap keyframes at the
        fit, the frame itself once it is answered."""
        own = (LoopQuery(self.stamp, self.matches, self.features),) if self.localization is not None else ()
        return self.bootstrap_queries + own


@dataclass
class LoopOutcome:
    """The loop-closure stage of one frame."""

    decision: LoopDecision
    # The frame's verifications, ``verify(candidates, top_k=None)`` as the filter called it: each
    # candidate is verified once, asked again the result is reused. None: the frame was not verified.
    verify: Callable[..., list[Verification]] | None = field(default=None, repr=False)
    verify_ms: list[float] = field(default_factory=list)  # per verification run (grows if verify is reused)
    # The closures to publish, in order, each with the local features of its own frame: the held earlier
    # frames this decision confirms (decision.confirms), then the frame itself when LOOP_DETECTED.
    closures: tuple[tuple[LoopDecision, Callable[[], lf.LocalFeatures | None]], ...] = ()


class IncrementalSession:
    """The per-frame flow of one run over ``localizer``'s map (module docstring).

    ``loop_filter``, ``keyframes``, ``verifier`` (None: closures unverified) and ``bootstrap`` (None:
    the encoder is fitted) are the caller's objects; it may change their settings between frames.
    The verifier reads place features under ``map_lock`` from here on. ``grow``: the keyframe gate
    adds places (the node's ``incremental``); ``thumbnails``: new places keep their image.
    ``map_lock``: the lock the caller's other map readers hold too (a new one by default).
    """

    def __init__(self, localizer: Localizer, loop_filter: LoopClosureFilter | None = None,
                 keyframes: KeyframeGate | None = None, verifier: Verifier | None = None,
                 bootstrap: VocabularyBootstrap | None = None, grow: bool = True, thumbnails: bool = True,
                 map_lock: AbstractContextManager[Any] | None = None) -> None:
        self.localizer = localizer
        self.loop_filter = loop_filter if loop_filter is not None else LoopClosureFilter()
        self.keyframes = keyframes if keyframes is not None else KeyframeGate()
        self.bootstrap = bootstrap
        self.grow = grow
        self.thumbnails = thumbnails
        self.map_lock = map_lock if map_lock is not None else threading.Lock()
        self.places: list[tuple[int, float]] = []  # (place id, stamp) this run added, in time order
        # local features of the frames the loop filter holds (decide_loop's thread only)
        self._held_features: dict[float, Callable[[], lf.LocalFeatures | None]] = {}
        self.verifier = verifier
        # Verification runs beside the frame thread that grows the map. Wrapped once per lock: a second
        # session on the same verifier and lock must not take the (non-reentrant) lock twice.
        if verifier is not None and getattr(verifier.place_features, 'map_lock', None) is not self.map_lock:
            verifier.place_features = self._under_map_lock(verifier.place_features)

    @property
    def bootstrapping(self) -> bool:
        """The encoder's vocabulary is not fitted yet: frames are collected, not answered."""
        return self.bootstrap is not None and not self.bootstrap.done

    def local_features_of(self, rgb: np.ndarray) -> lf.LocalFeatures | None:
        """The image's local features in the map's format; None when the map keeps none."""
        store = self.localizer.map.local_features
        return lf.extract(rgb, store.config) if store is not None else None

    def recent_places(self, stamp: float) -> set[int]:
        """Places this run added within min_time_separation of ``stamp``: never loop-closure candidates."""
        return recent_places(self.places, stamp, self.loop_filter.config.min_time_separation)

    # ----- the frame thread -------------------------------------------------------------------
    def localize(self, stamp: float, rgb: np.ndarray, pose: Pose | None = None,
                 source: str = '') -> SessionFrame:
        """Localise one frame and grow the map with it if it is a keyframe. ``pose``: its odometry
        (distance-spaced sequences, the keyframe distance gate, the new place's pose); ``source``:
        the name a new place records."""
        # Extracted at most once per frame, and only if verification, a new place or the caller needs them.
        features = functools.cache(lambda: self.local_features_of(rgb))
        if self.bootstrapping:
            return self._bootstrap_frame(stamp, rgb, pose, source, features)
        with self.map_lock:
            loc = self.localizer.localize(rgb, stamp, self.recent_places(stamp), pose)
            added = self._maybe_add_keyframe(stamp, pose, loc.vectors, rgb, source, features)
        return SessionFrame(stamp, loc, features, bool(added), added)

    def _bootstrap_frame(self, stamp: float, rgb: np.ndarray, pose: Pose | None, source: str,
                         features: Callable[[], lf.LocalFeatures | None]) -> SessionFrame:
        """Before the vocabulary exists: collect keyframes (time/distance gates), fit at the N-th."""
        assert self.bootstrap is not None
        if not self.keyframes.accept(stamp, pose.position if pose is not None else None, NO_VECTORS):
            return SessionFrame(stamp, None, features)
        feats = features()
        with self.map_lock:
            ids = self.bootstrap.offer(stamp, pose, rgb, source, feats)
            self.places.extend((pid, self.localizer.map.place(pid).stamp) for pid in ids)
            # handed out once, at the fit (the bootstrap then releases the keyframes' descriptors)
            seeded = self.bootstrap.loop_queries(self.loop_filter.config.min_time_separation) if ids else []
        queries = tuple(LoopQuery(t, matches, lambda f=f: f) for t, matches, f in seeded)
        return SessionFrame(stamp, None, features, True, tuple(ids), queries)

    def _maybe_add_keyframe(self, stamp: float, pose: Pose | None, vectors: np.ndarray, rgb: np.ndarray,
                            source: str, features: Callable[[], lf.LocalFeatures | None]) -> tuple[int, ...]:
        """Under map_lock: the new place's id if the gates take the frame."""
        if not self.grow or not len(vectors):
            return ()
        if not self.keyframes.accept(stamp, pose.position if pose is not None else None, vectors):
            return ()
        pid = self.localizer.add_place(stamp, pose, vectors, source, rgb if self.thumbnails else None,
                                       features())
        self.places.append((pid, stamp))
        return (pid,)

    # ----- the loop thread --------------------------------------------------------------------
    def decide_loop(self, query: LoopQuery | SessionFrame, camera: lf.CameraIntrinsics | None = None,
                    verify: bool = True) -> LoopOutcome:
        """The loop-closure decision of one query (:attr:`SessionFrame.loop_queries`, in time order; an
        answered :class:`SessionFrame` is its own query). ``camera``: the query camera's intrinsics
        (essential matrix), None: fundamental matrix unless the map stores them. ``verify`` False:
        retrieval and temporal consistency only, as without a verifier."""
        if isinstance(query, SessionFrame) and query.localization is None:
            raise ValueError(f'frame {query.stamp:.6f} was not answered (vocabulary bootstrapping): '
                             'there is no loop closure to decide')
        if self.verifier is None or not verify:
            return self._outcome(query, LoopOutcome(self.loop_filter.update(query.stamp, query.matches)))
        verify_ms: list[float] = []
        check = self.verifier.for_frame(query.features, camera, verify_ms.append)
        neighbours = self._under_map_lock(self._time_neighbours)
        decision = self.loop_filter.update(query.stamp, query.matches, check, neighbours)
        return self._outcome(query, LoopOutcome(decision, check, verify_ms))

    def _outcome(self, query: LoopQuery | SessionFrame, outcome: LoopOutcome) -> LoopOutcome:
        """The closures to publish; a held frame's features are kept until its chain confirms it."""
        decision = outcome.decision
        if decision.held:
            self._held_features[query.stamp] = query.features
        closures = [(held, self._held_features.get(held.t_query, _no_features)) for held in decision.confirms]
        if decision.status is LoopStatus.LOOP_DETECTED:
            closures.append((decision, query.features))
        holding = self.loop_filter.held_stamps
        self._held_features = {t: f for t, f in self._held_features.items() if t in holding}
        outcome.closures = tuple(closures)
        return outcome

    def _time_neighbours(self, candidate: Any) -> list[Match]:
        return self.localizer.time_neighbours(candidate.place_id, candidate.score)

    def _under_map_lock(self, fn: Callable[..., R]) -> Callable[..., R]:
        return under_lock(self.map_lock, fn)


def under_lock(lock: AbstractContextManager[Any], fn: Callable[..., R]) -> Callable[..., R]:
    """``fn`` called while holding ``lock``; the wrapper names its lock (``.map_lock``) so that a
    caller can tell an accessor that is already guarded by it."""
    @functools.wraps(fn)
    def locked(*args: Any) -> R:
        with lock:
            return fn(*args)
    locked.map_lock = lock  # type: ignore[attr-defined]
    return locked


__all__ = ['IncrementalSession', 'LoopOutcome', 'LoopQuery', 'SessionFrame', 'under_lock']
