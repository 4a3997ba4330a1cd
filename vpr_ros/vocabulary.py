"""Vocabularies for encoders that learn from map images, when there is no map to learn from yet.

anyloc_vlad, segvlad, sift_vlad and orb_bovw (and any encoder with ``pca_dim``) fit state on the
map's images: a VLAD/BoW vocabulary, a PCA. A SLAM run that starts from an EMPTY map has two ways
to get it:

* :func:`load_vocabulary` -- take the fitted state of another map directory, or of a vocabulary
  file written by :func:`export_vocabulary` (``vpr-ros export-vocabulary MAP OUT.npz``). The
  encoder configuration and weights must be the ones the vocabulary was fitted with (same rules
  as loading a map), otherwise a clear error names the differences.
* :class:`VocabularyBootstrap` -- collect the first ``frames`` keyframes of the run, fit on them,
  encode them with the fitted encoder and add them to the map as its first places; from then on
  the encoder runs normally. Until then nothing can be answered.

A vocabulary file is a plain ``.npz`` (no pickle): the encoder's state arrays under their own
names plus ``__vocabulary__``, a JSON string with the format version, the encoder identity
(name, config, weights fingerprint, dim) and where the state came from.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from vpr_ros.encoders.base import Encoder, encoder_class
from vpr_ros.errors import ConfigError, MapError, VprError
from vpr_ros.frames import Pose
from vpr_ros.localization import Localizer
from vpr_ros.mapdb.meta import compatibility_problems
from vpr_ros.mapdb.store import Match, VprMap

VOCABULARY_FORMAT = 1
META_KEY = '__vocabulary__'


@dataclass
class Vocabulary:
    """Fitted encoder state and the identity of the encoder that fitted it."""

    identity: dict[str, Any]
    state: dict[str, np.ndarray]
    source: str


def _with_legacy(identity: dict[str, Any]) -> dict[str, Any]:
    """Fill config keys newer than the vocabulary with the values it was fitted with."""
    try:
        legacy = encoder_class(identity.get('name', '')).legacy_config
    except ConfigError:
        return identity
    config = {**legacy, **identity.get('config', {})}
    return {**identity, 'config': config}


def _from_map(path: str) -> Vocabulary:
    vmap = VprMap.load(path, mmap=True)
    if not vmap.encoder_state:
        name = vmap.meta.encoder.get('name')
        raise MapError(f'map {path} stores no fitted encoder state (encoder {name!r} fits nothing on the '
                       'map): there is no vocabulary to take from it')
    return Vocabulary(_with_legacy(dict(vmap.meta.encoder)), dict(vmap.encoder_state), f'map {path}')


def _from_file(path: str) -> Vocabulary:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise MapError(f'cannot read vocabulary file {path}: {type(exc).__name__}: {str(exc)[:200]}') from exc
    if META_KEY not in arrays:
        raise MapError(f'{path} is not a vpr_ros vocabulary file (no {META_KEY} entry); '
                       'write one with vpr-ros export-vocabulary MAP OUT.npz')
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
    except json.JSONDecodeError as exc:
        raise MapError(f'{path}: corrupt vocabulary metadata ({exc})') from exc
    if not isinstance(meta, dict) or meta.get('format') != VOCABULARY_FORMAT or 'encoder' not in meta:
        found = meta.get('format') if isinstance(meta, dict) else None
        raise MapError(f'{path}: vocabulary format {found!r} is not supported (this vpr_ros reads '
                       f'{VOCABULARY_FORMAT})')
    if not arrays:
        raise MapError(f'{path}: the vocabulary file holds no state arrays')
    return Vocabulary(_with_legacy(meta['encoder']), arrays, f'file {path}')


def read_vocabulary(path: str) -> Vocabulary:
    """The fitted state stored at ``path``: a map directory or a vocabulary ``.npz`` file."""
    if os.path.isdir(path):
        return _from_map(path)
    if os.path.isfile(path):
        return _from_file(path)
    raise MapError(f'vocabulary not found: {path} (a map directory or a file from vpr-ros export-vocabulary)')


def load_vocabulary(encoder: Encoder, path: str) -> Vocabulary:
    """Give ``encoder`` the vocabulary (and PCA) stored at ``path``; refuse one fitted for another encoder."""
    vocab = read_vocabulary(path)
    problems = compatibility_problems(vocab.identity, encoder.identity())
    if problems:
        raise ConfigError(f'vocabulary {path} was fitted for another encoder configuration: '
                          + '; '.join(problems))
    try:
        encoder.set_state(vocab.state)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f'vocabulary {path} does not fit encoder {encoder.name!r}: {exc}') from exc
    if not encoder.is_fitted:
        raise ConfigError(f'vocabulary {path} lacks state encoder {encoder.name!r} needs '
                          f'(has {sorted(vocab.state)})')
    return vocab


def export_vocabulary(map_path: str, out_path: str) -> Vocabulary:
    """Write the fitted state of the map at ``map_path`` to the vocabulary file ``out_path`` (atomically).

    ``out_path`` is checked first: a directory, or an existing file that is not a vocabulary file
    (someone else's), is refused; a write failure (full disk, no permission) is one line."""
    _check_vocabulary_target(out_path)
    vocab = _from_map(map_path)
    vmap_meta = VprMap.load(map_path, mmap=True).meta
    meta = {'format': VOCABULARY_FORMAT, 'encoder': vocab.identity,
            'fitted_on': {'map': os.path.abspath(map_path), 'places': vmap_meta.count,
                          'description': vmap_meta.build.get('description', '')}}
    if META_KEY in vocab.state:
        raise MapError(f'map {map_path}: encoder state uses the reserved name {META_KEY}')
    out_path = os.path.abspath(out_path)
    parent = os.path.dirname(out_path)
    tmp = None
    try:
        os.makedirs(parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(out_path) + '.tmp-', suffix='.npz',
                                   dir=parent)
        with os.fdopen(fd, 'wb') as fh:
            np.savez(fh, **vocab.state, **{META_KEY: np.array(json.dumps(meta))})
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out_path)
    except OSError as exc:
        raise VprError(f'cannot write vocabulary {out_path}: {exc.strerror or exc}') from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return vocab


def _check_vocabulary_target(out_path: str) -> None:
    if os.path.isdir(out_path):
        raise ConfigError(f'{out_path} is a directory: name the vocabulary file to write, e.g. '
                          f'{os.path.join(out_path, "vocabulary.npz")}')
    if os.path.lexists(out_path):
        if not os.path.isfile(out_path):
            raise ConfigError(f'{out_path} exists and is not a regular file: refusing to replace it')
        try:
            _from_file(out_path)
        except MapError as exc:
            raise ConfigError(f'{out_path} exists and is not a vpr_ros vocabulary file: refusing to replace '
                              'it (move it away or name another file)') from exc


@dataclass
class _Pending:
    stamp: float
    pose: Pose | None
    rgb: np.ndarray
    source: str
    features: Any = None  # the place's local features, when the map keeps them (verification)


class VocabularyBootstrap:
    """Fit the unfitted encoder of a growing map on the run's first ``frames`` keyframes.

    The caller decides which frames are keyframes; :meth:`offer` keeps each one until ``frames``
    are there, then fits the encoder (vocabulary, then PCA if configured), describes the kept
    frames with the fitted encoder, adds them to the localizer's map as its first places (in
    arrival order, with thumbnails), stores the fitted state in the map and returns the new place
    ids. Memory until then: the kept RGB frames (``frames`` x the camera image size).
    """

    def __init__(self, localizer: Localizer, frames: int) -> None:
        encoder = localizer.encoder
        if frames < 2:
            raise ConfigError(f'vocabulary bootstrap needs at least 2 keyframes, got {frames}')
        pca_dim = int(encoder.config.get('pca_dim', 0))
        if pca_dim and not encoder.multi_vector and pca_dim > frames:
            raise ConfigError(f'encoder {encoder.name!r}: pca_dim {pca_dim} cannot be fitted on {frames} '
                              f'bootstrap keyframes (one vector each); use at least {pca_dim} bootstrap '
                              'frames or a lower pca_dim')
        self.localizer = localizer
        self.frames = int(frames)
        self._pending: list[_Pending] = []
        self._seeded: list[tuple[int, float, np.ndarray, Any]] = []  # until loop_queries hands them out
        self.fit_seconds = 0.0

    @property
    def done(self) -> bool:
        return self.localizer.encoder.is_fitted

    @property
    def collected(self) -> int:
        return len(self._pending)

    def status(self) -> str:
        if self.done:
            return f'vocabulary fitted on the first {self.frames} keyframes'
        return (f'bootstrapping the {self.localizer.encoder.name} vocabulary: {self.collected}/{self.frames} '
                'keyframes, no answers until it is fitted')

    def offer(self, stamp: float, pose: Pose | None, rgb: np.ndarray, source: str = '',
              features: Any = None) -> list[int]:
        """Keep one keyframe; at the ``frames``-th fit, seed the map and return the new place ids.

        A fit that fails (e.g. too few ORB features for the vocabulary) drops the oldest kept frame,
        so the next keyframe retries with a fresher set, and raises a VprError that says so.
        """
        if self.done:
            raise ConfigError('the vocabulary is already fitted; localise frames normally')
        self._pending.append(_Pending(float(stamp), pose, np.array(rgb, copy=True), source, features))
        if len(self._pending) < self.frames:
            return []
        encoder, t0 = self.localizer.encoder, time.perf_counter()
        images = [p.rgb for p in self._pending]
        try:
            encoder.fit(images)
            sets = encoder.describe(images)
        except VprError as exc:
            self._pending.pop(0)
            raise VprError(f'fitting the {encoder.name} vocabulary on {len(images)} keyframes failed '
                           f'({exc}); retrying with the next keyframe') from exc
        self.fit_seconds = time.perf_counter() - t0
        self.localizer.map.encoder_state = encoder.get_state()
        ids = [self.localizer.add_place(p.stamp, p.pose, vectors, p.source, p.rgb, features=p.features)
               for p, vectors in zip(self._pending, sets)]
        self._seeded = [(pid, p.stamp, vectors, p.features)
                        for pid, p, vectors in zip(ids, self._pending, sets)]
        self._pending = []
        return ids

    def loop_queries(self, separation: float) -> list[tuple[float, list[Match], Any]]:
        """The keyframes the fit just seeded, as loop-closure queries in time order: (stamp, its top-K among
        the places at least ``separation`` s older, its local features). No frame is answered before the
        vocabulary exists, so without them a run that revisits a place within its bootstrap keyframes
        never closes that loop; handed out once (the descriptors are then released)."""
        seeded, self._seeded = self._seeded, []
        vmap = self.localizer.map
        stamps = vmap.places.stamps
        out = []
        for _, stamp, vectors, features in sorted(seeded, key=lambda s: s[1]):
            newer = {int(i) for i in np.flatnonzero(stamps > stamp - separation)}
            matches = vmap.search(vectors, self.localizer.top_k, newer) if len(newer) < len(stamps) else []
            out.append((stamp, matches, features))
        return out


__all__ = ['META_KEY', 'VOCABULARY_FORMAT', 'Vocabulary', 'VocabularyBootstrap', 'export_vocabulary',
           'load_vocabulary', 'read_vocabulary']
