"""The one per-frame flow shared by the node, `evaluate` and `replay`: encode -> search top-K
[-> sequence matching].

A :class:`Localizer` owns an encoder and a map that agree (the encoder is rebuilt from the map's
metadata and fitted state unless overridden, and an override that changes the descriptors is
refused). The ROS node is a thin shell around it. With a :class:`SequenceConfig` of length > 0 the
Localizer also keeps the sequence history (:mod:`vpr_ros.matching.sequence`), so every caller that
feeds it frames in time order (the node, ``evaluate``, ``replay``) gets the same answers.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vpr_ros.encoders.base import RUNTIME_KEYS, Encoder, create_encoder, encoder_class
from vpr_ros.errors import MapError
from vpr_ros.features import LocalFeatures
from vpr_ros.frames import Pose
from vpr_ros.mapdb.meta import compatibility_problems
from vpr_ros.mapdb.search import rank_places_with_row
from vpr_ros.mapdb.store import Match, VprMap
from vpr_ros.matching.confidence import (
    CONFIDENCE_K,
    DEFAULT_DIST_M,
    MIN_EXAMPLES,
    ConfidenceModel,
    fit_confidence,
)
from vpr_ros.matching.sequence import SequenceConfig, SequenceMatcher, shortlist_row, stamp_order

_log = logging.getLogger(__name__)
RETRAIN_CHECK_EVERY = 1000  # places added between re-train checks of a growing IVF map
KEYFRAME_RATE_WINDOW = 100  # searched frames over which a growing map's keyframe rate is measured


@dataclass
class Localization:
    stamp: float
    matches: list[Match]
    encode_ms: float
    search_ms: float
    vectors: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), np.float32))
    # Sequence matching: ``matches`` come from the sequence when ``sequence_used``; otherwise they
    # are the single-frame ones (sequence off, or fewer than ``length`` frames of history yet).
    single_frame: list[Match] = field(default_factory=list)
    sequence_used: bool = False
    sequence_history: int = 0   # frames in the sequence history, this one included (0 = off)
    sequence_ms: float = 0.0    # part of search_ms
    # P(matches[0] is within the confidence model's dist_m of the query), calibrated on the map
    # (vpr_ros.matching.confidence), for the answer given (a sequence answer is rated on its own
    # candidates); NaN without a model
    confidence: float = math.nan
    sequence_spacing: str = ''  # 'frames' / 'distance' (odometry) when sequence_used

    @property
    def matched_by(self) -> str:
        return 'sequence' if self.sequence_used else 'single_frame'

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None


def encoder_for_map(vmap: VprMap, overrides: dict[str, Any] | None = None,
                    encoder_name: str | None = None) -> Encoder:
    """The encoder a map was built with (config and fitted state from the map), checked against it.

    ``overrides`` may change runtime keys (threads, batch_size) freely; any other key must
    leave the encoder identical to the map's, otherwise a MapError explains the mismatch.
    """
    stored = vmap.meta.encoder
    name = encoder_name or stored['name']
    if name != stored['name']:
        raise MapError('map and encoder do not match: '
                       + '; '.join(compatibility_problems(stored, {'name': name})))
    legacy = encoder_class(name).legacy_config
    missing = {k: v for k, v in legacy.items() if k not in stored.get('config', {})}
    if missing:  # a map from before these keys existed: it was built with their legacy values
        stored['config'] = {**stored.get('config', {}), **missing}
    config = dict(stored.get('config', {}))
    config.update({k: v for k, v in (overrides or {}).items()})
    encoder = create_encoder(name, config, vmap.encoder_state or None)
    vmap.check_encoder(encoder.identity())
    if not encoder.is_fitted:
        raise MapError(f'map lacks the fitted state encoder {name!r} needs (encoder_state.npz)')
    return encoder


class IdentityOnly:
    """The encoder side of a Localizer that is fed descriptors directly (search(), never localize()):
    only the identity a map's compatibility check reads. For benchmarks and tests of matching."""

    def __init__(self, identity: dict[str, Any]) -> None:
        self._identity = identity
        self.name = identity['name']

    def identity(self) -> dict[str, Any]:
        return self._identity


class Localizer:
    def __init__(self, vmap: VprMap, encoder: Encoder, top_k: int = 5,
                 sequence: SequenceConfig | None = None) -> None:
        vmap.check_encoder(encoder.identity())
        self.map = vmap
        self.encoder = encoder
        self.top_k = int(top_k)
        self._sequence: SequenceMatcher | None = None
        self._order_cache: tuple[int, np.ndarray, np.ndarray] = (-1, np.zeros(0), np.zeros(0, np.int64))
        self._posed_cache: tuple[int, bool] = (-1, False)
        self.configure_sequence(sequence or SequenceConfig())
        self._added = 0
        self._advised: str | None = None
        # Per searched frame since the map started growing: whether a place was added after the
        # previous search (the keyframe rate sequence velocities are scaled to).
        self._keyframe_flags: deque[bool] = deque(maxlen=KEYFRAME_RATE_WINDOW)
        self._added_since_search = False
        self._confidence: ConfidenceModel | None = None
        self._confidence_places = 0  # map size the model was fitted at (0: taken from map.yaml)
        self._confidence_tried = 0  # map size at the last fit attempt (a failed one is retried at double)
        self._previous_top: Match | None = None  # the previous frame's single-frame top-1 (agreement)
        if vmap.meta.confidence:
            try:
                self._confidence = ConfidenceModel.from_dict(vmap.meta.confidence)
            except MapError as exc:
                _log.warning('%s; recalibrating on the map', exc)
        if self._confidence is None and len(vmap) >= 2 * MIN_EXAMPLES:
            # at load, not on the first frame: a bounded fit (MAX_QUERIES self-retrievals)
            t0 = time.perf_counter()
            model = self.calibrate()
            _log.info('confidence: the map had no model; calibrated on %d of its %d places in %.1f s%s',
                      model.examples if model else 0, len(vmap), time.perf_counter() - t0,
                      '' if model else ' (too few right self-retrievals: no confidence)')

    @classmethod
    def from_map(cls, map_path: str, overrides: dict[str, Any] | None = None, top_k: int = 5,
                 encoder_name: str | None = None, verify: str = 'full',
                 sequence: SequenceConfig | None = None) -> 'Localizer':
        vmap = VprMap.load(map_path, verify=verify)
        return cls(vmap, encoder_for_map(vmap, overrides, encoder_name), top_k, sequence)

    # ----- sequence matching ----------------------------------------------------------------
    @property
    def sequence_config(self) -> SequenceConfig:
        return self._sequence_config

    def configure_sequence(self, config: SequenceConfig) -> None:
        """New sequence settings (validated); the history restarts when they change."""
        config.validate()
        current = getattr(self, '_sequence_config', None)
        if current is not None and current == config:
            return
        self._sequence_config = SequenceConfig(**config.as_dict())
        self._sequence = SequenceMatcher(self._sequence_config) if config.enabled else None

    @property
    def sequence_velocity_scale(self) -> float:
        """Map places per frame that a sequence velocity of 1 means: 1 on a fixed map; on a map this
        Localizer grows (incremental mode), the share of recent frames after which a keyframe was
        added, so that the default 0.8-1.2 keeps meaning 'the speed of the first pass' whatever
        the keyframe interval. At least 1/length: a robot standing still has no trajectory."""
        if not self._keyframe_flags:
            return 1.0
        rate = sum(self._keyframe_flags) / len(self._keyframe_flags)
        return max(rate, 1.0 / max(self._sequence_config.length, 1))

    def _stamps_and_order(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.map.places)
        if self._order_cache[0] != n:  # places are only ever appended
            stamps = self.map.places.stamps.copy()
            self._order_cache = (n, stamps, stamp_order(stamps))
        return self._order_cache[1], self._order_cache[2]

    def _map_posed(self) -> bool:
        n = len(self.map.places)
        if self._posed_cache[0] != n:  # places are only ever appended
            self._posed_cache = (n, bool(np.isfinite(self.map.places.poses[:, :3]).all()))
        return self._posed_cache[1]

    def time_neighbours(self, place_id: int, score: float) -> list[Match]:
        """The places just before and after ``place_id`` in map time (its adjacent keyframes), as
        matches carrying ``score``."""
        _, order = self._stamps_and_order()
        at = np.flatnonzero(order == int(place_id))
        if not len(at):
            return []
        i = int(at[0])
        return [self.map.match(int(order[j]), score) for j in (i - 1, i + 1) if 0 <= j < len(order)]

    # ----- confidence -----------------------------------------------------------------------------
    @property
    def confidence_model(self) -> ConfidenceModel | None:
        """The map's calibrated confidence model (vpr_ros.matching.confidence): from map.yaml, else fitted
        on the map when first needed and refitted whenever a growing map has doubled since."""
        n = len(self.map)
        stale = self._confidence is None or (self._confidence_places and n >= 2 * self._confidence_places)
        if stale and n >= 2 * self._confidence_tried:
            dist = self._confidence.dist_m if self._confidence is not None else DEFAULT_DIST_M
            self.calibrate(dist)
        return self._confidence

    @property
    def fitted_confidence(self) -> ConfidenceModel | None:
        """The current model without fitting one (for status reports from other threads)."""
        return self._confidence

    def calibrate(self, dist_m: float = DEFAULT_DIST_M, progress: bool = False) -> ConfidenceModel | None:
        """Fit the confidence model on the map for ``dist_m`` (None: the map is too small or has no
        poses); it is stored in the map's metadata, so a saved map keeps it."""
        model = fit_confidence(self.map, dist_m, progress=progress)
        self._confidence_tried = len(self.map)
        if model is not None:
            self._confidence, self._confidence_places = model, len(self.map)
            self.map.meta.confidence = model.to_dict()
        return model

    def _confidence_of(self, candidates: list[Match]) -> float:
        """The confidence of the answer given (its candidates, best first, at least CONFIDENCE_K
        when the map has them); the agreement feature compares it with the previous answer."""
        model = self.confidence_model
        previous, self._previous_top = self._previous_top, (candidates[0] if candidates else None)
        if model is None or not candidates:
            return math.nan
        return model.confidence(candidates, previous)

    # ----- per frame --------------------------------------------------------------------------
    def describe(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        vectors = self.encoder.describe([rgb])[0]
        return vectors, (time.perf_counter() - t0) * 1e3

    def search(self, stamp: float, vectors: np.ndarray, encode_ms: float = 0.0,
               exclude: set[int] | None = None, odometry: Pose | None = None) -> Localization:
        """Top-K places for one frame. With sequence matching on, frames must come in time order;
        ``odometry``: the frame's odometry pose (any frame: only its travelled distance is used),
        which makes the sequence distance-spaced on a map whose places all have poses."""
        t0 = time.perf_counter()
        if self._added:
            self._keyframe_flags.append(self._added_since_search)
            self._added_since_search = False
        seq = self._sequence
        k = max(self.top_k, CONFIDENCE_K)  # the confidence looks at CONFIDENCE_K candidates
        needs_odometry = self._sequence_config.needs_odometry
        if seq is not None and needs_odometry and (odometry is None or not self._map_posed()):
            seq.reset()  # exactly the single-frame answer, at its cost; the distance history restarts
            seq = None
        if seq is None or not len(self.map):
            ranked = self.map.search(vectors, k, exclude)
            matches = ranked[:self.top_k]
            return Localization(stamp, matches, encode_ms, (time.perf_counter() - t0) * 1e3, vectors,
                                single_frame=matches, sequence_history=0 if seq is None else seq.history,
                                confidence=self._confidence_of(ranked))
        cfg = self._sequence_config
        vectors32 = np.asarray(vectors, np.float32)
        vectors32 = vectors32[None] if vectors32.ndim == 1 else vectors32
        n_places = len(self.map)
        if cfg.shortlist:
            ranked = self.map.search(vectors32, max(k, cfg.shortlist), exclude)
            row = shortlist_row([m.place_id for m in ranked], [m.score for m in ranked], n_places)
        else:
            pairs, row = rank_places_with_row(self.map, vectors32, k, exclude or set())
            ranked = [self.map.match(pid, score) for pid, score in pairs]
        single = ranked[:self.top_k]
        t1 = time.perf_counter()
        seq.push(stamp, row, None if odometry is None else odometry.position)
        stamps, order = self._stamps_and_order()
        ranked_seq = seq.rank(stamps, k, exclude, order, self.sequence_velocity_scale,
                              self.map.places.poses[:, :3])
        used = ranked_seq is not None
        candidates = [self.map.match(m.place_id, m.score) for m in ranked_seq] if used else ranked
        matches = candidates[:self.top_k]
        t2 = time.perf_counter()
        return Localization(stamp, matches, encode_ms, (t2 - t0) * 1e3, vectors, single_frame=single,
                            sequence_used=used, sequence_history=seq.history, sequence_ms=(t2 - t1) * 1e3,
                            confidence=self._confidence_of(candidates),
                            sequence_spacing=seq.last_spacing if used else '')

    def localize(self, rgb: np.ndarray, stamp: float, exclude: set[int] | None = None,
                 odometry: Pose | None = None) -> Localization:
        vectors, encode_ms = self.describe(rgb)
        return self.search(stamp, vectors, encode_ms, exclude, odometry)

    def localize_once(self, rgb: np.ndarray) -> tuple[list[Match], float]:
        """(top-K places, calibrated confidence) for one image on its own: single-frame, and the run's
        history (sequence, previous answer) is neither read nor changed (a service request)."""
        vectors, _ = self.describe(rgb)
        ranked = self.map.search(vectors, max(self.top_k, CONFIDENCE_K))
        model = self.confidence_model
        return ranked[:self.top_k], model.confidence(ranked) if model is not None and ranked else math.nan

    def add_place(self, stamp: float, pose: Pose | None, vectors: np.ndarray, source: str = '',
                  thumbnail: np.ndarray | None = None, features: LocalFeatures | None = None) -> int:
        """Grow the in-memory map (online mode); returns the new place id.

        Places go into the trained index as they come (no rebuild); every RETRAIN_CHECK_EVERY
        places a grown IVF index is checked and a warning says when re-training is advised.
        """
        place = self.map.add(stamp, pose, vectors, source, thumbnail, features)
        self._added += 1
        self._added_since_search = True
        if self._added % RETRAIN_CHECK_EVERY == 0:
            advice = self.map.retrain_advice()
            if advice and advice != self._advised:
                _log.warning('map index should be re-trained (rebuild the map with vpr-ros build-map or '
                             'merge-maps): %s', advice)
            self._advised = advice
        return place.id


__all__ = ['RUNTIME_KEYS', 'Localization', 'Localizer', 'SequenceConfig', 'encoder_for_map']
