"""Training data from poses: sessions in one frame, places, a held-out part of the route, batches.

* Sessions: every source is one session of the same area; all poses must be in one frame. A bag
  declares the pose topic's ``header.frame_id``: sessions naming different frames are refused.
  Independently, each session's trajectory must come within ``neg_dist`` of another session's for at
  least ``min_overlap`` of its frames; otherwise they are not aligned (or not the same area).
* Places: place centres are frames at least ``pos_dist / 2`` apart (greedy, in recording order);
  a place's members are the frames of any session within ``pos_dist / 2`` of the centre whose
  heading differs by at most ``pos_yaw``, so any two members are positives (within ``pos_dist``).
  Places with fewer than 2 members are dropped.
* Batches (GSV-Cities style): P places x K images. The places of a batch have centres more than
  ``neg_dist + pos_dist`` apart, so every cross-place pair is a negative (beyond ``neg_dist``); pairs
  in between (neither positive nor negative) never share a batch. A place with fewer than K members
  repeats members (each repeat draws another cached augmented copy).
* Held-out parts are contiguous stretches of the first session's path by travelled distance
  (fractions ``[a, b]``), never random frames: every frame (any session) within ``pos_dist / 2`` of
  the stretch belongs to it, and training uses only frames more than ``neg_dist`` from it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vpr_ros.errors import ConfigError, SourceError


@dataclass
class FrameTable:
    """Poses of every cached frame: positions (N, 3), yaw (N,) rad, stamp (N,), session index (N,)."""

    xyz: np.ndarray
    yaw: np.ndarray
    stamp: np.ndarray
    session: np.ndarray

    def __len__(self) -> int:
        return len(self.yaw)


def yaw_diff_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.degrees(np.asarray(a) - np.asarray(b))
    return np.abs((d + 180.0) % 360.0 - 180.0)


def _nearest_dist(points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Distance (x, y) from every point to its nearest target; chunked to bound memory."""
    if not len(targets):
        return np.full(len(points), np.inf)
    out = np.empty(len(points))
    for i in range(0, len(points), 2048):
        d = np.linalg.norm(points[i:i + 2048, None, :2] - targets[None, :, :2], axis=2)
        out[i:i + 2048] = d.min(axis=1)
    return out


def check_alignment(table: FrameTable, frame_ids: list[str | None], names: list[str], neg_dist: float,
                    min_overlap: float) -> dict[str, float]:
    """Refuse sessions that are not in one frame; returns each session's overlap fraction."""
    declared = {f for f in frame_ids if f}
    if len(declared) > 1:
        listing = ', '.join(f'{n}: {f or "?"}' for n, f in zip(names, frame_ids))
        raise SourceError(f'train: the sessions declare poses in different frames ({listing}); all '
                          'sessions must be in one frame (e.g. localise them in one map and record the '
                          'poses in its frame)')
    overlaps: dict[str, float] = {}
    n_sessions = int(table.session.max()) + 1 if len(table) else 0
    if n_sessions < 2:
        return overlaps
    for s in range(n_sessions):
        mine = table.session == s
        near = _nearest_dist(table.xyz[mine], table.xyz[~mine]) <= neg_dist
        overlaps[names[s]] = float(near.mean()) if mine.any() else 0.0
        if overlaps[names[s]] < min_overlap:
            raise SourceError(f'train: only {overlaps[names[s]] * 100:.0f}% of session {names[s]} comes '
                              f'within {neg_dist:g} m of the other sessions (need {min_overlap * 100:.0f}%): '
                              'the sessions are not aligned in one frame, or do not cover the same area')
    return overlaps


def path_stretch(table: FrameTable, fractions: tuple[float, float]) -> np.ndarray:
    """Indices of the first session's frames in the stretch [a, b] of its travelled distance."""
    a, b = float(fractions[0]), float(fractions[1])
    if not 0.0 <= a < b <= 1.0:
        raise ConfigError(f'train: a held-out stretch needs 0 <= a < b <= 1 (fractions of the path), '
                          f'got {[a, b]}')
    idx = np.flatnonzero(table.session == 0)
    idx = idx[np.argsort(table.stamp[idx], kind='stable')]
    steps = np.linalg.norm(np.diff(table.xyz[idx, :2], axis=0), axis=1)
    travelled = np.concatenate([[0.0], np.cumsum(steps)])
    total = travelled[-1] if len(travelled) else 0.0
    if total <= 0:
        raise SourceError('train: the first session does not move; cannot hold out a part of the route')
    return idx[(travelled >= a * total) & (travelled <= b * total)]


def region_masks(table: FrameTable, anchors: np.ndarray, pos_dist: float,
                 neg_dist: float) -> tuple[np.ndarray, np.ndarray]:
    """(frames in the region: within pos_dist/2 of an anchor frame, frames farther than neg_dist)."""
    d = _nearest_dist(table.xyz, table.xyz[anchors])
    return d <= pos_dist / 2, d > neg_dist


@dataclass
class Places:
    centres: np.ndarray          # (P, 2) xy of each place centre
    members: list[np.ndarray]    # frame indices per place


def make_places(table: FrameTable, usable: np.ndarray, pos_dist: float, pos_yaw: float) -> Places:
    """Places over the ``usable`` frames (see the module docstring)."""
    idx = np.flatnonzero(usable)
    order = idx[np.lexsort((table.stamp[idx], table.session[idx]))]
    radius = pos_dist / 2
    centres: list[int] = []
    for i in order:
        if centres:
            d = np.linalg.norm(table.xyz[centres, :2] - table.xyz[i, :2], axis=1)
            if (d < radius).any():
                continue
        centres.append(int(i))
    out_c, out_m = [], []
    pts = table.xyz[idx, :2]
    for c in centres:
        near = np.linalg.norm(pts - table.xyz[c, :2], axis=1) <= radius
        near &= yaw_diff_deg(table.yaw[idx], table.yaw[c]) <= pos_yaw
        members = idx[near]
        if len(members) >= 2:
            out_c.append(table.xyz[c, :2])
            out_m.append(members)
    return Places(np.asarray(out_c, np.float64).reshape(-1, 2), out_m)


def epoch_batches(places: Places, per_batch: int, separation: float,
                  rng: np.random.Generator) -> list[list[int]]:
    """Shuffled places grouped into batches of up to ``per_batch`` mutually separated places.

    Greedy: each place joins the first open batch where it is farther than ``separation`` from every
    place; batches with fewer than 2 places are dropped (no negatives).
    """
    batches: list[list[int]] = []
    open_batches: list[list[int]] = []
    for p in rng.permutation(len(places.members)):
        for b in open_batches:
            d = np.linalg.norm(places.centres[b] - places.centres[p], axis=1)
            if (d > separation).all():
                b.append(int(p))
                if len(b) == per_batch:
                    open_batches.remove(b)
                    batches.append(b)
                break
        else:
            if per_batch == 1:
                batches.append([int(p)])
            else:
                open_batches.append([int(p)])
    batches.extend(open_batches)
    return [b for b in batches if len(b) >= 2]


def sample_members(places: Places, batch: list[int], k: int, copies: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame indices, cached copy indices, place labels) of one P x K batch.

    K distinct members when the place has them; otherwise members repeat, and repeats of one frame
    take distinct augmented copies while there are copies left.
    """
    frames, copy_ids, labels = [], [], []
    for label, p in enumerate(batch):
        members = places.members[p]
        if len(members) >= k:
            pick = rng.choice(members, k, replace=False)
            cps = rng.integers(0, copies, k)
        else:
            pick = np.concatenate([rng.permutation(members), rng.choice(members, k - len(members))])
            cps = np.empty(k, np.int64)
            for f in np.unique(pick):
                where = np.flatnonzero(pick == f)
                perm = rng.permutation(copies)
                cps[where] = perm[np.arange(len(where)) % copies]
        frames.append(pick)
        copy_ids.append(cps)
        labels.append(np.full(k, label))
    return np.concatenate(frames), np.concatenate(copy_ids), np.concatenate(labels)


def validation_split(table: FrameTable, region: np.ndarray,
                     revisit_gap_s: float, pos_dist: float) -> tuple[np.ndarray, np.ndarray, str]:
    """(database frames, query frames, how) inside the held-out region.

    Several sessions: the first session's frames are the database, the others' the queries. One
    session: frames that revisit a place seen more than ``revisit_gap_s`` earlier are the queries,
    the rest the database; without revisits, alternate frames (weak: neighbours are close) - logged.
    """
    idx = np.flatnonzero(region)
    sess = table.session[idx]
    if (sess != 0).any() and (sess == 0).any():
        return idx[sess == 0], idx[sess != 0], 'first session = database, other sessions = queries'
    idx = idx[np.argsort(table.stamp[idx], kind='stable')]
    revisit = np.zeros(len(idx), bool)
    for j in range(len(idx)):
        earlier = idx[:j][table.stamp[idx[:j]] < table.stamp[idx[j]] - revisit_gap_s]
        if len(earlier):
            d = np.linalg.norm(table.xyz[earlier, :2] - table.xyz[idx[j], :2], axis=1)
            revisit[j] = bool((d <= pos_dist).any())
    if revisit.any() and (~revisit).any():
        return idx[~revisit], idx[revisit], f'revisits after > {revisit_gap_s:g} s = queries'
    return idx[0::2], idx[1::2], 'alternate frames (no revisits: weak, neighbouring frames are close)'


def recall_at(db_desc: np.ndarray, q_desc: np.ndarray, db_xyz: np.ndarray, q_xyz: np.ndarray,
              dist: float, ns: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Recall@N of queries that have a database frame within ``dist`` m (exhaustive cosine search)."""
    if not len(db_desc) or not len(q_desc):
        return {f'R@{n}': math.nan for n in ns}
    sim = q_desc @ db_desc.T
    order = np.argsort(-sim, axis=1, kind='stable')
    d = np.linalg.norm(q_xyz[:, None, :2] - db_xyz[None, :, :2], axis=2)
    positive = d <= dist
    answerable = positive.any(axis=1)
    if not answerable.any():
        return {f'R@{n}': math.nan for n in ns}
    hits = np.take_along_axis(positive, order, axis=1)
    return {f'R@{n}': float(hits[answerable, :n].any(axis=1).mean()) for n in ns}
