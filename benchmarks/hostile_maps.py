"""Hostile-campaign parts about map files (issue 23): concurrent readers, disk full, foreign folders,
index specs, fit memory. Each part is seeded and bounded in time and returns ``{'findings': Counter,
...}`` like the parts of campaign_hostile.py, which runs them (``--parts readers diskfull ...``).

* ``readers``: a writer process saves two maps of equal shape (A and B) to one path, alternating,
  while this process loads it in a loop (plain and memory-mapped loads, growing the mapped index).
  Finding: a load that mixes the two saves (descriptors, places, encoder state, local features,
  map.yaml or index of different saves) or a load refused although both saves were complete.
* ``diskfull``: ``build-map`` onto a 1 MB tmpfs (root; otherwise ENOSPC injected at a random write)
  over an existing map. Finding: an exit other than 2, not exactly one ``error:`` line, a traceback,
  the old map changed, or a temporary sibling left behind.
* ``foreign``: ``build-map`` onto folders that are not vpr_ros maps (a nav2 map_server folder, a map
  holding a user's file, a mount point, a symbolic link, a random user tree). Finding: any file of
  the folder changed or gone, an exit other than 2, or the refusal coming after the encode.
* ``specs``: random index specs from the grammar's edges (zero, one, huge and non-ASCII numbers,
  unknown words, stray separators) through ``build-map --index`` and through a map.yaml edited to
  name them, each in a subprocess. Finding: a crash (signal), a traceback, or a spec that builds a
  map ``evaluate`` then cannot search.
* ``fitmem``: the resident memory the vocabulary fit's images take for 4K frames, against the
  frames at the encoder's input size. Finding: the fit keeping more than 2x the input-size bytes.
"""
from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from typing import Any

import numpy as np

from vpr_ros.errors import MapError
from vpr_ros.frames import Pose
from vpr_ros.mapdb.local_features import LocalFeatureConfig, LocalFeatures, LocalFeatureStore
from vpr_ros.mapdb.store import VprMap

RACE_PLACES, RACE_DIM = 40, 16


def race_map(label: str, seed: int, index: str = 'flat') -> VprMap:
    """A small map whose every file says which save it came from (``label``), same shape for any label."""
    rng = np.random.default_rng(seed)
    identity = {'name': 'race', 'config': {}, 'weights_fingerprint': 'none', 'dim': RACE_DIM,
                'multi_vector': False}
    vmap = VprMap.empty(identity, index=index, encoder_state={'label': np.full(4, seed, np.int64)},
                        build={'description': label})
    vmap.local_features = LocalFeatureStore(LocalFeatureConfig('orb', 8, 64))
    vecs = rng.normal(size=(RACE_PLACES, RACE_DIM))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    for i in range(RACE_PLACES):
        kps = np.full((8, 2), seed + i, np.float32)
        vmap.add(seed * 1000.0 + i, Pose.from_xy_yaw(float(seed), float(i), 0.0), vecs[i],
                 features=LocalFeatures(kps, np.full((8, 32), seed % 256, np.uint8), (64, 64)))
    return vmap


def _writer(path: str, seeds: tuple[int, int], stop: Any, saves: Any) -> None:
    maps = [race_map(f'save-{s}', s) for s in seeds]
    i = 0
    while not stop.is_set():
        maps[i % 2].save(path)
        i += 1
        saves.value = i


def mixed_problem(vmap: VprMap, seeds: tuple[int, int]) -> str | None:
    """Which part of a loaded race map belongs to another save than its map.yaml (None: consistent)."""
    label = vmap.meta.build.get('description')
    seed = next((s for s in seeds if label == f'save-{s}'), None)
    if seed is None:
        return f'unknown map.yaml label {label!r}'
    want = race_map(label, seed)
    if not np.allclose(np.asarray(vmap.descriptors[:RACE_PLACES], np.float32), want.descriptors, atol=1e-6):
        return 'descriptors of the other save'
    if not np.array_equal(vmap.places.stamps[:RACE_PLACES], want.places.stamps):
        return 'places of the other save'
    if not np.array_equal(vmap.encoder_state.get('label'), want.encoder_state['label']):
        return 'encoder state of the other save'
    if vmap.local_features is None or not np.array_equal(vmap.local_features.get(0).keypoints,
                                                         want.local_features.get(0).keypoints):
        return 'local features of the other save'
    if not np.allclose(vmap.index.reconstruct(RACE_PLACES - 1), want.descriptors[-1], atol=1e-5):
        return 'index of the other save'
    return None


def race_loads(path: str, seconds: float, seed: int = 0) -> dict[str, Any]:
    """Load ``path`` in a loop for ``seconds`` while another process alternates two saves to it."""
    seeds = (2 * seed + 1, 2 * seed + 2)
    race_map(f'save-{seeds[0]}', seeds[0]).save(path)
    ctx = multiprocessing.get_context('spawn')
    stop, saves = ctx.Event(), ctx.Value('q', 0)
    writer = ctx.Process(target=_writer, args=(path, seeds, stop, saves), daemon=True)
    writer.start()
    rng = np.random.default_rng(seed)
    findings: Counter[str] = Counter()
    loads = 0
    try:
        while saves.value < 2 and writer.is_alive():
            time.sleep(0.01)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and writer.is_alive():
            mmap = bool(rng.integers(2))
            try:
                vmap = VprMap.load(path, mmap=mmap, verify=('full', 'size')[int(rng.integers(2))])
                if mmap and vmap.local_features is not None:  # grow the mapped index: it is read
                    # again from the file it was mapped from
                    vmap.add(0.0, None, vmap.descriptors[0], features=vmap.local_features.get(0))
                problem = mixed_problem(vmap, seeds)
                if problem:
                    findings[f'mixed load: {problem}'] += 1
            except MapError as exc:
                findings[f'refused a complete map: {str(exc).split(": ", 1)[-1][:80]}'] += 1
            loads += 1
    finally:
        stop.set()
        writer.join(30)
        if writer.is_alive():
            writer.kill()
    return {'findings': findings, 'loads': loads, 'saves': int(saves.value)}
