"""Keyframe selection: which frames become map places.

:class:`KeyframePolicy` thins a recorded traversal for ``build-map`` (every Nth frame, minimum
distance). :class:`KeyframeGate` decides online in the node's incremental mode, where frames
arrive one at a time and the descriptor is already computed, so three gates apply together: enough
image time since the last keyframe, enough travelled distance (when odometry gives a position), and
enough novelty (the descriptor differs from the last keyframe's). A disabled gate always passes.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from vpr_ros.errors import VprError
from vpr_ros.frames import Frame


@dataclass(frozen=True)
class KeyframePolicy:
    """Keep every ``every_n``-th frame, and only if it is ``min_distance`` m from the last kept one."""

    every_n: int = 1
    min_distance: float = 0.0

    def select(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        if self.every_n < 1 or self.min_distance < 0:
            raise VprError('keyframes: every_n must be >= 1 and min_distance >= 0')
        last = None
        for i, frame in enumerate(frames):
            if i % self.every_n:
                continue
            if self.min_distance > 0 and frame.pose is not None and last is not None:
                if math.dist(frame.pose.position, last) < self.min_distance:
                    continue
            if frame.pose is not None:
                last = frame.pose.position
            yield frame


def set_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Similarity of two L2-normalised descriptor sets: mean over ``a`` of the best cosine in ``b``.

    For global descriptors (one row each) this is their cosine similarity.
    """
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    if not len(a) or not len(b):
        return -1.0
    return float((a @ b.T).max(axis=1).mean())


@dataclass
class _Keyframe:
    stamp: float
    position: tuple[float, float, float] | None
    vectors: np.ndarray


class KeyframeGate:
    def __init__(self, min_interval: float = 1.0, min_distance: float = 0.0,
                 max_similarity: float = 1.0) -> None:
        self.min_interval = min_interval
        self.min_distance = min_distance
        self.max_similarity = max_similarity
        self._last: _Keyframe | None = None

    def accept(self, stamp: float, position: tuple[float, float, float] | None, vectors: np.ndarray) -> bool:
        """True (and remember the frame as the last keyframe) when every enabled gate passes."""
        last = self._last
        if last is not None and stamp >= last.stamp:  # time going backwards restarts the gates
            if stamp - last.stamp < self.min_interval:
                return False
            if (self.min_distance > 0 and position is not None and last.position is not None
                    and math.dist(position, last.position) < self.min_distance):
                return False
            if self.max_similarity < 1.0 and set_similarity(vectors, last.vectors) > self.max_similarity:
                return False
        self._last = _Keyframe(stamp, position, np.array(vectors, np.float32, copy=True))
        return True


__all__ = ['KeyframeGate', 'KeyframePolicy', 'set_similarity']
