"""Online keyframe selection: which live frames grow the map (the node's incremental mode).

Unlike the batch :class:`vpr_ros.pipeline.KeyframePolicy`, frames arrive one at a time and the
descriptor is already computed, so three gates apply together: enough image time since the last
keyframe, enough travelled distance (when odometry gives a position), and enough novelty (the
descriptor differs from the last keyframe's). A disabled gate always passes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


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
    def __init__(self, min_interval: float = 1.0, min_distance: float = 0.0, max_similarity: float = 1.0) -> None:
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


__all__ = ['KeyframeGate', 'set_similarity']
