"""Merging maps of one encoder (multi-session / multi-robot): ``vpr-ros merge-maps A B --out C``.

Places keep their stamps, poses and ``source``; each input becomes a *session*: a contiguous
range of place ids recorded in map.yaml ``build.sessions`` (name, origin, first/last id). Poses
stay in each session's own frame: sessions are not aligned to each other here (that is the
job of the SLAM back-end the loop closures feed). Maps that are themselves merges keep their
sessions. The first map's index is reused and the others' descriptors are added to it
(no re-training); the merged map says when its IVF index should be re-trained. Local features
for verification are merged too (the maps must keep the same kind, keypoint budget and camera
intrinsics, or none). Everything is appended column-wise, so merging million-place maps does not
make a Python object per place.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from vpr_ros.errors import MapError
from vpr_ros.mapdb.meta import compatibility_problems
from vpr_ros.mapdb.store import VprMap


def sessions_of(vmap: VprMap, name: str, origin: str) -> list[dict]:
    """The sessions a map holds: its recorded ones, or the whole map as one session."""
    recorded = vmap.meta.build.get('sessions')
    if recorded:
        return [dict(s) for s in recorded]
    return [{'name': name, 'origin': origin, 'first': 0, 'last': len(vmap) - 1}]


def _same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return set(a) == set(b) and all(a[k].shape == b[k].shape and np.array_equal(a[k], b[k]) for k in a)


def merge_maps(paths: Sequence[str], names: Sequence[str] | None = None) -> VprMap:
    """One map holding every place of ``paths`` (same encoder identity and fitted state)."""
    if len(paths) < 2:
        raise MapError('merge-maps needs at least two maps')
    names = list(names) if names else [os.path.basename(os.path.normpath(p)) for p in paths]
    if len(names) != len(paths) or len(set(names)) != len(names):
        raise MapError('session names must be unique, one per map')
    merged = VprMap.load(paths[0])  # its index is reused and grows
    sessions = sessions_of(merged, names[0], os.path.abspath(paths[0]))
    merged.meta.build = {'description': 'merged with vpr-ros merge-maps',
                         'index_training': merged.meta.build.get('index_training'), 'sessions': []}
    for path, name in zip(paths[1:], names[1:]):
        other = VprMap.load(path, mmap=True)
        first_name, other_name = merged.meta.encoder.get('name'), other.meta.encoder.get('name')
        if first_name != other_name:
            raise MapError(f'{path} was built with encoder {other_name!r}, {paths[0]} with {first_name!r}: '
                           'maps of different encoders cannot be merged')
        problems = compatibility_problems(other.meta.encoder, merged.meta.encoder)
        if problems:
            raise MapError(f'{path} was built with another {first_name} configuration than {paths[0]}: '
                           f'{problems[0]} (map: {path}, requested: {paths[0]})')
        if not _same_state(merged.encoder_state, other.encoder_state):
            raise MapError(f'{path} and {paths[0]} fitted different encoder state (vocabulary/PCA): '
                           'their descriptors are not comparable; rebuild one with the other\'s encoder')
        try:
            offset = merged.extend(other)
        except MapError as exc:
            raise MapError(f'{path} and {paths[0]} cannot be merged: {exc} (build both with the same '
                           '--local-features, --max-keypoints and --camera-info)') from exc
        for s in sessions_of(other, name, os.path.abspath(path)):
            sessions.append({**s, 'first': s['first'] + offset, 'last': s['last'] + offset})
    labels = [s['name'] for s in sessions]
    if len(set(labels)) != len(labels):
        raise MapError(f'session names repeat across the maps ({", ".join(labels)}); pass --names')
    merged.meta.build['sessions'] = sessions
    if merged.meta.build['index_training'] is None:
        del merged.meta.build['index_training']
    return merged
