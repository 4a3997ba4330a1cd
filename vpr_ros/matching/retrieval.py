"""Ranking map places for a query.

Global maps: one inner-product search. Multi-vector maps (SegVLAD): each query vector retrieves
its top ``segment_k`` map vectors; similarities are min-max normalised over the whole
(query vectors x segment_k) array and summed per map place (the similarity-weighted vote of
Revisit Anything, Eq. 4 / ``max_seg_topk_wt_borda_Im``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from vpr_ros.mapdb import index as faiss_index

if TYPE_CHECKING:
    from vpr_ros.mapdb.store import VprMap

SEGMENT_K = 50


def vote_places(scores: np.ndarray, owners: np.ndarray, num_places: int) -> np.ndarray:
    """Sum of min-max normalised similarities per place. ``scores``/``owners``: (m, k); owner -1 = none."""
    valid = owners >= 0
    votes = np.zeros(num_places, np.float64)
    if not valid.any():
        return votes
    s = scores[valid].astype(np.float64)
    lo, hi = s.min(), s.max()
    norm = (s - lo) / (hi - lo) if hi > lo else np.ones_like(s)
    np.add.at(votes, owners[valid], norm)
    return votes


def rank_places(vmap: 'VprMap', vectors: np.ndarray, k: int, exclude: set[int]) -> list[tuple[int, float]]:
    n_places = len(vmap.places)
    if not vmap.meta.multi_vector:
        extra = len(exclude)
        scores, rows = faiss_index.search(vmap.index, vectors[:1], min(k + extra, n_places))
        out = [(int(vmap.owners[r]), float(s)) for s, r in zip(scores[0], rows[0])
               if r >= 0 and int(vmap.owners[r]) not in exclude]
        return out[:k]
    if len(vectors) == 0:
        return []
    scores, rows = faiss_index.search(vmap.index, vectors, SEGMENT_K)
    owners = np.where(rows >= 0, vmap.owners[np.maximum(rows, 0)], -1)
    if exclude:
        owners = np.where(np.isin(owners, list(exclude)), -1, owners)
    votes = vote_places(scores, owners, n_places)
    order = np.argsort(-votes, kind='stable')[:k]
    return [(int(p), float(votes[p])) for p in order if votes[p] > 0]
