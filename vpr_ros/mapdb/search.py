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


def global_row(vmap: 'VprMap', query: np.ndarray) -> np.ndarray:
    """A global-descriptor map's similarity to one query vector, by place id (float16 maps are cast
    in chunks, never whole)."""
    q = np.asarray(query, np.float32)
    desc = vmap.descriptors
    if desc.dtype == np.float32:
        return (desc @ q).astype(np.float64)
    out = np.empty(len(desc), np.float64)
    for start in range(0, len(desc), 4096):  # float16 maps: cast in chunks, not the whole map
        out[start:start + 4096] = desc[start:start + 4096].astype(np.float32) @ q
    return out


def pick_best(rank_value: np.ndarray, k: int, suppress: int = 0,
              excluded: np.ndarray | None = None) -> list[int]:
    """Up to k ordered positions by ascending value, none within ``suppress`` of a better one."""
    value = np.where(np.isfinite(rank_value), rank_value, np.inf)
    if excluded is not None and excluded.any():
        value = np.where(excluded, np.inf, value)
    # Each pick suppresses at most 2 * suppress others: the best k * (2 * suppress + 1) hold the answer.
    m = min(len(value), k * (2 * suppress + 1))
    if m <= 0:
        return []
    head = np.argpartition(value, m - 1)[:m] if m < len(value) else np.arange(len(value))
    order = head[np.lexsort((head, value[head]))]  # by value, ties by position (as a stable sort)
    taken: list[int] = []
    for pos in order:
        if not np.isfinite(value[pos]) or len(taken) == k:
            break
        if all(abs(int(pos) - t) > suppress for t in taken):
            taken.append(int(pos))
    return taken


def _top_of_row(row: np.ndarray, k: int, exclude: set[int]) -> list[tuple[int, float]]:
    """The k best places of a global map's similarity row (place id = row index), best first."""
    excluded = None
    if exclude:
        excluded = np.zeros(len(row), bool)
        excluded[[p for p in exclude if 0 <= p < len(row)]] = True
    return [(p, float(row[p])) for p in pick_best(-row, k, 0, excluded)]


def rank_places_with_row(vmap: 'VprMap', vectors: np.ndarray, k: int,
                         exclude: set[int]) -> tuple[list[tuple[int, float]], np.ndarray]:
    """:func:`rank_places` plus the query's similarity to every place by id (exact, any index).

    Global maps: the row is the inner products with the stored descriptors. Multi-vector maps:
    the votes without exclusions (zero for places none of whose vectors was retrieved), from
    the same one faiss search as the ranking.
    """
    n_places = len(vmap.places)
    if not vmap.meta.multi_vector:
        row = global_row(vmap, vectors[0])
        if vmap.meta.index == 'flat':  # the exact search is this row: one pass over the map, not two
            return _top_of_row(row, k, exclude), row
        return rank_places(vmap, vectors, k, exclude), row
    if len(vectors) == 0:
        return [], np.zeros(n_places, np.float64)
    scores, rows = faiss_index.search(vmap.index, vectors, SEGMENT_K)
    owners = np.where(rows >= 0, vmap.owners[np.maximum(rows, 0)], -1)
    row = vote_places(scores, owners, n_places)
    return _rank_votes(scores, owners, n_places, k, exclude, row), row


def _rank_votes(scores: np.ndarray, owners: np.ndarray, n_places: int, k: int, exclude: set[int],
                votes: np.ndarray | None = None) -> list[tuple[int, float]]:
    if exclude:
        owners = np.where(np.isin(owners, list(exclude)), -1, owners)
        votes = None
    if votes is None:
        votes = vote_places(scores, owners, n_places)
    order = np.argsort(-votes, kind='stable')[:k]
    return [(int(p), float(votes[p])) for p in order if votes[p] > 0]


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
    return _rank_votes(scores, owners, n_places, k, exclude)
