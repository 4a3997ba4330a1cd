"""The one per-frame flow shared by the node, `evaluate` and `replay`: encode -> search top-K.

A :class:`Localizer` owns an encoder and a map that agree (the encoder is rebuilt from the map's
metadata and fitted state unless overridden, and an override that changes the descriptors is
refused). The ROS node is a thin shell around it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vpr_ros.encoders.base import RUNTIME_KEYS, Encoder, create_encoder
from vpr_ros.errors import MapError
from vpr_ros.frames import Pose
from vpr_ros.mapdb.local_features import LocalFeatures
from vpr_ros.mapdb.meta import compatibility_problems
from vpr_ros.mapdb.store import Match, VprMap


@dataclass
class Localization:
    stamp: float
    matches: list[Match]
    encode_ms: float
    search_ms: float
    vectors: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), np.float32))

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
    config = dict(stored.get('config', {}))
    config.update({k: v for k, v in (overrides or {}).items()})
    encoder = create_encoder(name, config, vmap.encoder_state or None)
    vmap.check_encoder(encoder.identity())
    if not encoder.is_fitted:
        raise MapError(f'map lacks the fitted state encoder {name!r} needs (encoder_state.npz)')
    return encoder


class Localizer:
    def __init__(self, vmap: VprMap, encoder: Encoder, top_k: int = 5) -> None:
        vmap.check_encoder(encoder.identity())
        self.map = vmap
        self.encoder = encoder
        self.top_k = int(top_k)

    @classmethod
    def from_map(cls, map_path: str, overrides: dict[str, Any] | None = None, top_k: int = 5,
                 encoder_name: str | None = None, verify: str = 'full') -> 'Localizer':
        vmap = VprMap.load(map_path, verify=verify)
        return cls(vmap, encoder_for_map(vmap, overrides, encoder_name), top_k)

    def describe(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        vectors = self.encoder.describe([rgb])[0]
        return vectors, (time.perf_counter() - t0) * 1e3

    def search(self, stamp: float, vectors: np.ndarray, encode_ms: float = 0.0,
               exclude: set[int] | None = None) -> Localization:
        t0 = time.perf_counter()
        matches = self.map.search(vectors, self.top_k, exclude)
        return Localization(stamp, matches, encode_ms, (time.perf_counter() - t0) * 1e3, vectors)

    def localize(self, rgb: np.ndarray, stamp: float, exclude: set[int] | None = None) -> Localization:
        vectors, encode_ms = self.describe(rgb)
        return self.search(stamp, vectors, encode_ms, exclude)

    def add_place(self, stamp: float, pose: Pose | None, vectors: np.ndarray, source: str = '',
                  thumbnail: np.ndarray | None = None, features: LocalFeatures | None = None) -> int:
        """Grow the in-memory map (online mode); returns the new place id."""
        return self.map.add(stamp, pose, vectors, source, thumbnail, features).id


__all__ = ['Localization', 'Localizer', 'encoder_for_map', 'RUNTIME_KEYS']
