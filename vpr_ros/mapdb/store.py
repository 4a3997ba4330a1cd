"""VprMap: places + descriptors + index, loaded, grown, searched and saved atomically.

On disk (one directory, written to a temporary sibling and renamed into place)::

    map.yaml            MapMeta: schema, encoder identity, counts, dtype, index spec
    places.sqlite       places(id, stamp, x, y, z, qx, qy, qz, qw, has_pose, source);
                        thumbnails(id, jpeg) small previews for reports and RViz (optional)
    descriptors.npy     (vectors, dim) float32 or float16, memory-mappable
    owners.npy          (vectors,) int64: the place id of every descriptor row
    encoder_state.npz   arrays the encoder fitted on this map (vocabulary, PCA); no pickle
    index.faiss         derived from descriptors.npy; rebuilt if missing
    local_features.yaml, lf_*.npy   optional per-place keypoints for geometric verification
                        (vpr_ros.mapdb.local_features)
"""
from __future__ import annotations

import logging
import os
import sqlite3
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from vpr_ros.errors import MapError
from vpr_ros.frames import Pose
from vpr_ros.mapdb import index as faiss_index
from vpr_ros.mapdb import integrity
from vpr_ros.mapdb.local_features import LocalFeatures, LocalFeatureStore
from vpr_ros.mapdb.meta import MapMeta, compatibility_problems

_FILES = ('map.yaml', 'places.sqlite', 'descriptors.npy', 'owners.npy')
logger = logging.getLogger('vpr_ros')


@dataclass(frozen=True)
class Place:
    id: int
    stamp: float
    pose: Pose | None
    source: str = ''


@dataclass(frozen=True)
class Match:
    """One retrieval candidate: the place, its similarity score, and (multi-vector) its votes."""

    place_id: int
    score: float
    stamp: float
    pose: Pose | None


class VprMap:
    def __init__(self, meta: MapMeta, places: list[Place] | None = None,
                 descriptors: np.ndarray | None = None, owners: np.ndarray | None = None,
                 encoder_state: dict[str, np.ndarray] | None = None, index=None) -> None:
        self.meta = meta
        self.places: list[Place] = list(places or [])
        dim = meta.dim
        self._descriptors = (np.zeros((0, dim), np.float32) if descriptors is None
                             else np.asanyarray(descriptors))
        self._tail: list[np.ndarray] = []  # descriptor rows added since _descriptors was last joined
        self._owners = _Growable(np.zeros(0, np.int64) if owners is None else np.asarray(owners, np.int64))
        self.encoder_state = dict(encoder_state or {})
        self._index = index
        self._index_file: str | None = None  # set while the index is memory-mapped from this file
        self._pending: list[np.ndarray] = []  # rows added since the index was built
        self._place_row = {p.id: i for i, p in enumerate(self.places)}
        self.thumbnails: dict[int, bytes] = {}  # place id -> JPEG bytes
        self.local_features: LocalFeatureStore | None = None  # None: the map has none

    # ----- building ---------------------------------------------------------------------------
    @classmethod
    def empty(cls, encoder_identity: dict[str, Any], index: str = 'flat', dtype: str = 'float32',
              encoder_state: dict[str, np.ndarray] | None = None,
              build: dict[str, Any] | None = None) -> 'VprMap':
        if dtype not in ('float32', 'float16'):
            raise MapError(f'descriptor dtype must be float32 or float16, got {dtype!r}')
        meta = MapMeta(encoder=dict(encoder_identity), index=index, dtype=dtype, build=dict(build or {}))
        return cls(meta, encoder_state=encoder_state)

    def add(self, stamp: float, pose: Pose | None, vectors: np.ndarray, source: str = '',
            thumbnail: np.ndarray | None = None, features: LocalFeatures | None = None) -> Place:
        """Append one place with its descriptor(s); returns the new Place (ids are 0, 1, 2, ...).

        ``thumbnail``: the place's RGB image, stored as a small JPEG preview. ``features``: its
        local features, required when the map keeps local features (and ignored otherwise).
        """
        if self.local_features is not None and features is None:
            raise MapError('this map keeps local features for every place; pass the new place\'s features')
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None]
        if vectors.shape[1] != self.meta.dim:
            raise MapError(f'descriptor dim {vectors.shape[1]} does not match the map ({self.meta.dim})')
        if not self.meta.multi_vector and vectors.shape[0] != 1:
            raise MapError('a global-descriptor map takes exactly one vector per place')
        place = Place(len(self.places), float(stamp), pose, source)
        self.places.append(place)
        self._place_row[place.id] = place.id
        self._tail.append(vectors.astype(self._descriptors.dtype))
        self._owners.extend(np.full(len(vectors), place.id, np.int64))
        if self._index is not None:
            self._pending.append(vectors)
        if thumbnail is not None:
            self.thumbnails[place.id] = encode_thumbnail(thumbnail)
        if self.local_features is not None and features is not None:
            self.local_features.add(features)
        self.meta.count, self.meta.vectors = len(self.places), len(self.owners)
        return place

    # ----- growth (amortised: a 1M-place map grows without copying its descriptors per place) --
    @property
    def descriptors(self) -> np.ndarray:
        """(vectors, dim) rows; memory-mapped after load(mmap=True) until places are added."""
        if self._tail:
            self._descriptors = np.concatenate([self._descriptors, *self._tail], axis=0)
            self._tail = []
        return self._descriptors

    @descriptors.setter
    def descriptors(self, value: np.ndarray) -> None:
        self._descriptors, self._tail = np.asarray(value), []

    @property
    def owners(self) -> np.ndarray:
        """(vectors,) place id of every descriptor row."""
        return self._owners.view()

    @owners.setter
    def owners(self, value: np.ndarray) -> None:
        self._owners = _Growable(np.asarray(value, np.int64))

    @property
    def index(self):
        if self._index is None:
            self._index = faiss_index.build_index(self.descriptors, self.meta.index)
            self._index_file = None
            self._pending = []
            self._record_index_training()
        elif self._pending:
            if self._index_file is not None:  # mapped read-only: bring it into memory to grow it
                self._index = faiss_index.read_index(self._index_file)
                self._index_file = None
            self._index.add(np.ascontiguousarray(np.concatenate(self._pending), dtype=np.float32))
            self._pending = []
        return self._index

    def _record_index_training(self) -> None:
        imbalance = faiss_index.list_imbalance(self._index)
        if imbalance is not None:
            self.meta.build['index_training'] = {'vectors': int(self._index.ntotal),
                                                 'imbalance': round(imbalance, 4)}
        else:
            self.meta.build.pop('index_training', None)

    def retrain_advice(self) -> str | None:
        """Why this map's IVF index should be rebuilt after growing by adds (None: no need)."""
        info = self.meta.build.get('index_training') or {}
        return faiss_index.retrain_advice(self.index, int(info.get('vectors', 0)), info.get('imbalance'))

    # ----- searching --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.places)

    def place(self, place_id: int) -> Place:
        return self.places[self._place_row[place_id]]

    def search(self, vectors: np.ndarray, k: int, exclude: set[int] | None = None) -> list[Match]:
        """Top-k places for one query (its vector, or its set of vectors for multi-vector maps)."""
        from vpr_ros.matching.retrieval import rank_places

        if not self.places:
            return []
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None]
        ranked = rank_places(self, vectors, k, exclude or set())
        return [self.match(pid, score) for pid, score in ranked]

    def match(self, place_id: int, score: float) -> Match:
        place = self.places[place_id]
        return Match(place_id, float(score), place.stamp, place.pose)

    def thumbnail(self, place_id: int) -> np.ndarray | None:
        """The place's preview image (RGB), or None if the map has none."""
        import cv2

        data = self.thumbnails.get(place_id)
        if data is None:
            return None
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        return None if img is None else np.ascontiguousarray(img[..., ::-1])

    def check_encoder(self, identity: dict[str, Any]) -> None:
        problems = compatibility_problems(self.meta.encoder, identity)
        if problems:
            raise MapError('map and encoder do not match: ' + '; '.join(problems))

    # ----- disk ---------------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write atomically: readers of ``path`` always see the old or the new complete map."""
        integrity.replace_directory(path, self._write_into, _is_replaceable)

    def _write_into(self, directory: str) -> None:
        self.meta.count, self.meta.vectors = len(self.places), len(self.owners)
        np.save(os.path.join(directory, 'descriptors.npy'), np.asarray(self.descriptors, self.meta.dtype))
        np.save(os.path.join(directory, 'owners.npy'), self.owners)
        np.savez(os.path.join(directory, 'encoder_state.npz'), **self.encoder_state)
        with sqlite3.connect(os.path.join(directory, 'places.sqlite')) as db:
            db.execute('CREATE TABLE places (id INTEGER PRIMARY KEY, stamp REAL NOT NULL, x REAL, y REAL, '
                       'z REAL, qx REAL, qy REAL, qz REAL, qw REAL, has_pose INTEGER NOT NULL, source TEXT)')
            db.executemany('INSERT INTO places VALUES (?,?,?,?,?,?,?,?,?,?,?)', [
                (p.id, p.stamp, *(p.pose.position if p.pose else (None,) * 3),
                 *(p.pose.orientation if p.pose else (None,) * 4), int(p.pose is not None), p.source)
                for p in self.places])
            db.execute('CREATE TABLE thumbnails (id INTEGER PRIMARY KEY, jpeg BLOB NOT NULL)')
            db.executemany('INSERT INTO thumbnails VALUES (?,?)', sorted(self.thumbnails.items()))
        db.close()
        if len(self.owners):
            faiss_index.write_index(self.index, os.path.join(directory, 'index.faiss'))
        if self.local_features is not None:
            self.local_features.write(directory)
        self.meta.files = integrity.digest_files(directory)
        with open(os.path.join(directory, 'map.yaml'), 'w', encoding='utf-8') as fh:
            fh.write(self.meta.to_yaml())
        for name in os.listdir(directory):
            with open(os.path.join(directory, name), 'rb') as fh:
                os.fsync(fh.fileno())

    @classmethod
    def load(cls, path: str, encoder_identity: dict[str, Any] | None = None, mmap: bool = False,
             verify: str = 'full') -> 'VprMap':
        """Load and validate a map; with ``encoder_identity`` refuse a map of another encoder/config.

        ``verify``: 'full' checks every file against its checksum in map.yaml and every descriptor;
        'size' only file sizes and a sample of descriptors (huge maps); 'none' no file checks.
        """
        path = integrity.recover(path, _is_complete) or path
        if not os.path.isdir(path):
            raise MapError(f'map not found: {path}')
        missing = [f for f in _FILES if not os.path.isfile(os.path.join(path, f))]
        if missing:
            raise MapError(f'{path} is not a complete vpr_ros map (missing {", ".join(missing)})')
        meta = _read_meta(path)
        differ = integrity.verify_files(path, meta.files, verify)
        if differ - {integrity.INDEX_FILE}:
            raise MapError(f'{path} is corrupt: {", ".join(sorted(differ - {integrity.INDEX_FILE}))} '
                           'differ from the checksums in map.yaml')
        if encoder_identity is not None:
            problems = compatibility_problems(meta.encoder, encoder_identity)
            if problems:
                raise MapError(f'{path}: ' + '; '.join(problems))
        try:
            descriptors = np.load(os.path.join(path, 'descriptors.npy'), mmap_mode='r' if mmap else None,
                                  allow_pickle=False)
            owners = np.load(os.path.join(path, 'owners.npy'), allow_pickle=False)
            state_path = os.path.join(path, 'encoder_state.npz')
            state = {}
            if os.path.isfile(state_path):
                with np.load(state_path, allow_pickle=False) as npz:
                    state = {k: npz[k] for k in npz.files}
            places, thumbnails = _read_places(os.path.join(path, 'places.sqlite'))
            local_features = LocalFeatureStore.read(path, len(places))
        except _READ_ERRORS as exc:
            raise MapError(f'{path} is corrupt: {type(exc).__name__}: {_first_line(exc)}') from exc
        if descriptors.ndim != 2 or descriptors.shape[1] != meta.dim:
            raise MapError(f'{path} is corrupt: descriptors {descriptors.shape} vs dim {meta.dim}')
        if owners.ndim != 1 or owners.dtype.kind not in 'iu':
            raise MapError(f'{path} is corrupt: owners.npy holds {owners.dtype} {owners.shape}, not ids')
        if len(owners) != len(descriptors) or len(places) != meta.count or len(descriptors) != meta.vectors:
            raise MapError(f'{path} is corrupt: {len(places)} places, {len(descriptors)} descriptors, '
                           f'{len(owners)} owners; map.yaml says {meta.count} places, {meta.vectors} vectors')
        problem = integrity.content_problem(descriptors, owners, len(places), meta.multi_vector, meta.dtype,
                                            full=verify == 'full')
        if problem:
            raise MapError(f'{path} is corrupt: {problem}')
        if integrity.INDEX_FILE in differ:
            logger.warning(f'{path}: index.faiss differs from its checksum in map.yaml; rebuilding it from '
                           'the descriptors')
        index = None
        index_path = os.path.join(path, 'index.faiss')
        if os.path.isfile(index_path) and integrity.INDEX_FILE not in differ:
            try:
                index = faiss_index.read_index(index_path, mmap,
                                               faiss_index.is_ivf_spec(meta.index, meta.dim))
            except RuntimeError:
                index = None  # derived data: rebuilt from the descriptors below
            if index is not None and (index.ntotal != len(descriptors) or index.d != meta.dim):
                index = None
            problem = integrity.index_problem(index, descriptors) if index is not None else None
            if problem:
                logger.warning(f'{path}: index.faiss does not hold the descriptors ({problem}); rebuilt')
                index = None
        vmap = cls(meta, places, descriptors, owners, state, index)
        vmap.thumbnails = thumbnails
        vmap.local_features = local_features
        if mmap and index is not None:
            vmap._index_file = index_path
        return vmap


# Everything numpy, zipfile, sqlite and the decoders raise for damaged files (empty .npy: EOFError,
# broken .npz: BadZipFile / zlib.error, text in a REAL column: TypeError in _read_places).
_READ_ERRORS = (ValueError, OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile, zlib.error,
                sqlite3.Error)


def _first_line(exc: BaseException, limit: int = 200) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else ''


def _read_meta(path: str) -> MapMeta:
    try:
        with open(os.path.join(path, 'map.yaml'), encoding='utf-8') as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise MapError(f'{path}: map.yaml is unreadable ({type(exc).__name__}: {_first_line(exc)})') from exc
    return MapMeta.from_yaml(text, path)


def _is_replaceable(path: str) -> bool:
    """A path save() may replace: a vpr_ros map or an empty directory."""
    return os.path.isdir(path) and (os.path.isfile(os.path.join(path, 'map.yaml')) or not os.listdir(path))


def _is_complete(path: str) -> bool:
    """Whether a directory an interrupted save left is a whole map (every file at its recorded size)."""
    if not all(os.path.isfile(os.path.join(path, f)) for f in _FILES):
        return False
    try:
        meta = _read_meta(path)
        differ = integrity.verify_files(path, meta.files, 'size')
        return bool(meta.files) and not differ - {integrity.INDEX_FILE}
    except MapError:
        return False


class _Growable:
    """A 1-D array with spare capacity: appends are amortised O(1)."""

    def __init__(self, data: np.ndarray) -> None:
        self._buf, self._n = data, len(data)

    def extend(self, values: np.ndarray) -> None:
        need = self._n + len(values)
        if need > len(self._buf) or not self._buf.flags.writeable:
            grown = np.empty(max(need, int(len(self._buf) * 1.5) + 16), self._buf.dtype)
            grown[:self._n] = self._buf[:self._n]
            self._buf = grown
        self._buf[self._n:need] = values
        self._n = need

    def view(self) -> np.ndarray:
        return self._buf[:self._n]


THUMBNAIL_SIZE = (96, 128)  # height, width


def encode_thumbnail(rgb: np.ndarray) -> bytes:
    import cv2

    small = cv2.resize(rgb, THUMBNAIL_SIZE[::-1], interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode('.jpg', np.ascontiguousarray(small[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return buf.tobytes()


def _read_places(path: str) -> tuple[list[Place], dict[int, bytes]]:
    # immutable: a map is never modified in place (saves replace the directory), so a stray
    # places.sqlite-journal is ignored instead of rolled back (which a read-only open refuses with
    # 'attempt to write a readonly database'); the checksum in map.yaml vouches for the file.
    db = sqlite3.connect(f'file:{path}?mode=ro&immutable=1', uri=True)
    try:
        rows = db.execute('SELECT id, stamp, x, y, z, qx, qy, qz, qw, has_pose, source FROM places '
                          'ORDER BY id').fetchall()
        has_thumbs = db.execute("SELECT name FROM sqlite_master WHERE name='thumbnails'").fetchone()
        thumbs = dict(db.execute('SELECT id, jpeg FROM thumbnails').fetchall()) if has_thumbs else {}
    finally:
        db.close()
    places = []
    for i, (pid, stamp, x, y, z, qx, qy, qz, qw, has_pose, source) in enumerate(rows):
        if pid != i:
            raise ValueError(f'place ids must be 0..N-1 in order (row {i} has id {pid})')
        numbers = (stamp, x, y, z, qx, qy, qz, qw) if has_pose else (stamp,)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
            raise TypeError(f'place {pid}: stamp and pose must be numbers, got {numbers}')
        if source is not None and not isinstance(source, str):
            raise TypeError(f'place {pid}: source must be text')
        pose = Pose((x, y, z), (qx, qy, qz, qw)) if has_pose else None
        places.append(Place(pid, float(stamp), pose, source or ''))
    return places, thumbs
