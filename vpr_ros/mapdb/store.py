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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

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
        self.places = places  # type: ignore[assignment]  # the setter makes a PlaceTable
        dim = meta.dim
        self._descriptors = (np.zeros((0, dim), np.float32) if descriptors is None
                             else np.asanyarray(descriptors))
        self._tail: list[np.ndarray] = []  # descriptor rows added since _descriptors was last joined
        self._owners = _Growable(np.zeros(0, np.int64) if owners is None else np.asarray(owners, np.int64))
        self.encoder_state = dict(encoder_state or {})
        self._index = index
        self._index_file: str | None = None  # set while the index is memory-mapped from this file
        self._pending: list[np.ndarray] = []  # rows added since the index was built
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
        place = self._places.append(float(stamp), pose, source)
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

    def extend(self, other: 'VprMap') -> int:
        """Append every place of ``other`` in bulk (descriptors, thumbnails, local features); returns the
        id offset of its places here. The caller checks that both maps share encoder and state."""
        if (self.local_features is None) != (other.local_features is None):
            raise MapError('only one of the two maps keeps local features for verification')
        offset, rows = len(self), np.asarray(other.descriptors)
        self._places.extend(other.places)
        self._tail.append(rows.astype(self._descriptors.dtype))
        self._owners.extend(other.owners + offset)
        if self._index is not None:
            self._pending.append(rows.astype(np.float32))
        self.thumbnails.update({pid + offset: jpeg for pid, jpeg in other.thumbnails.items()})
        if self.local_features is not None:
            self.local_features.extend(other.local_features)
        self.meta.count, self.meta.vectors = len(self.places), len(self.owners)
        self.meta.confidence = {}  # calibrated on the places before: recalibrated when next loaded
        return offset

    @property
    def places(self) -> 'PlaceTable':
        """The places, row = id (columnar; Place objects are made on access)."""
        return self._places

    @places.setter
    def places(self, value: 'Sequence[Place] | PlaceTable | None') -> None:
        self._places = value if isinstance(value, PlaceTable) else PlaceTable.of(value or [])

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
        return self.places[place_id]

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
            db.executemany('INSERT INTO places VALUES (?,?,?,?,?,?,?,?,?,?,?)', self.places.rows())
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
    """An array growing along its first axis with spare capacity: appends are amortised O(1)."""

    def __init__(self, data: np.ndarray) -> None:
        self._buf, self._n = data, len(data)

    def extend(self, values: np.ndarray) -> None:
        need = self._n + len(values)
        if need > len(self._buf) or not self._buf.flags.writeable:
            grown = np.empty((max(need, int(len(self._buf) * 1.5) + 16), *self._buf.shape[1:]),
                             self._buf.dtype)
            grown[:self._n] = self._buf[:self._n]
            self._buf = grown
        self._buf[self._n:need] = values
        self._n = need

    def view(self) -> np.ndarray:
        return self._buf[:self._n]


_NO_POSE = (np.nan,) * 7


class PlaceTable:
    """A map's places as columns: ids are row numbers 0..N-1, stamps (N,) float64, poses (N, 7)
    float64 (x y z qx qy qz qw, NaN without a pose), sources as codes into a list of distinct names.

    A million places take ~70 MB here; as Place objects (each with a Pose and its tuples) they
    took ~3 GB. Reading ``table[i]`` or iterating makes the Place objects on the fly.
    """

    def __init__(self, stamps: np.ndarray | None = None, poses: np.ndarray | None = None,
                 source_codes: np.ndarray | None = None, sources: Sequence[str] = ('',)) -> None:
        self._stamps = _Growable(np.zeros(0) if stamps is None else np.asarray(stamps, np.float64))
        self._poses = _Growable(np.zeros((0, 7)) if poses is None else np.asarray(poses, np.float64))
        self._codes = _Growable(np.zeros(0, np.int32) if source_codes is None
                                else np.asarray(source_codes, np.int32))
        self._sources = list(sources)
        self._code_of = {name: i for i, name in enumerate(self._sources)}
        if not len(self._stamps.view()) == len(self._poses.view()) == len(self._codes.view()):
            raise ValueError('place columns differ in length')

    @classmethod
    def of(cls, places: Iterable[Place]) -> 'PlaceTable':
        table = cls()
        for i, p in enumerate(places):
            if p.id != i:
                raise MapError(f'place ids must be 0..N-1 in order (row {i} has id {p.id})')
            table.append(p.stamp, p.pose, p.source)
        return table

    def append(self, stamp: float, pose: Pose | None, source: str = '') -> Place:
        row = (*pose.position, *pose.orientation) if pose else _NO_POSE
        if pose and not np.isfinite(row).all():
            raise MapError(f'place pose must be finite, got {pose}')
        self._stamps.extend(np.array([stamp], np.float64))
        self._poses.extend(np.array([row], np.float64))
        self._codes.extend(np.array([self._code(source)], np.int32))
        return self[len(self) - 1]

    def extend(self, other: 'PlaceTable') -> None:
        """Append every place of ``other`` (ids continue from this table's length), column-wise."""
        codes = np.array([self._code(name) for name in other._sources], np.int32)
        self._stamps.extend(other.stamps)
        self._poses.extend(other.poses)
        self._codes.extend(codes[other._codes.view()])

    def _code(self, source: str) -> int:
        code = self._code_of.get(source)
        if code is None:
            code = self._code_of[source] = len(self._sources)
            self._sources.append(source)
        return code

    # ----- columns --------------------------------------------------------------------------
    @property
    def stamps(self) -> np.ndarray:
        return self._stamps.view()

    @property
    def poses(self) -> np.ndarray:
        """(N, 7) x y z qx qy qz qw; rows of places without a pose are NaN."""
        return self._poses.view()

    @property
    def has_pose(self) -> np.ndarray:
        return ~np.isnan(self.poses[:, 0])

    def rows(self) -> Iterator[tuple]:
        """The places.sqlite rows (id, stamp, x, y, z, qx, qy, qz, qw, has_pose, source)."""
        for i, (stamp, pose, code) in enumerate(zip(self.stamps.tolist(), self.poses.tolist(),
                                                    self._codes.view().tolist())):
            posed = pose[0] == pose[0]  # not NaN
            yield (i, stamp, *(pose if posed else (None,) * 7), int(posed), self._sources[code])

    # ----- sequence of Place ----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._stamps.view())

    @overload
    def __getitem__(self, key: int) -> Place: ...

    @overload
    def __getitem__(self, key: slice) -> list[Place]: ...

    def __getitem__(self, key: int | slice) -> Place | list[Place]:
        if isinstance(key, slice):
            return [self[i] for i in range(*key.indices(len(self)))]
        n = len(self)
        i = int(key) + n if int(key) < 0 else int(key)
        if not 0 <= i < n:
            raise IndexError(f'place {key} out of range ({n} places)')
        pose = self._poses.view()[i].tolist()
        return Place(i, float(self._stamps.view()[i]),
                     Pose(tuple(pose[:3]), tuple(pose[3:])) if pose[0] == pose[0] else None,
                     self._sources[self._codes.view()[i]])

    def __iter__(self) -> Iterator[Place]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (PlaceTable, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


THUMBNAIL_SIZE = (96, 128)  # height, width


def encode_thumbnail(rgb: np.ndarray) -> bytes:
    import cv2

    small = cv2.resize(rgb, THUMBNAIL_SIZE[::-1], interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode('.jpg', np.ascontiguousarray(small[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return buf.tobytes()


def _read_places(path: str, chunk: int = 65536) -> tuple[PlaceTable, dict[int, bytes]]:
    # immutable: a map is never modified in place (saves replace the directory), so a stray
    # places.sqlite-journal is ignored instead of rolled back (which a read-only open refuses with
    # 'attempt to write a readonly database'); the checksum in map.yaml vouches for the file.
    db = sqlite3.connect(f'file:{path}?mode=ro&immutable=1', uri=True)
    try:
        cursor = db.execute('SELECT id, stamp, x, y, z, qx, qy, qz, qw, has_pose, source FROM places '
                            'ORDER BY id')
        stamps, poses, codes = [], [], []
        sources: dict[str, int] = {'': 0}
        n = 0
        while rows := cursor.fetchmany(chunk):
            cols = list(zip(*rows))
            ids = np.array(cols[0], dtype=object)
            if not (ids == np.arange(n, n + len(rows))).all():
                i = int(np.flatnonzero(ids != np.arange(n, n + len(rows)))[0])
                raise ValueError(f'place ids must be 0..N-1 in order (row {n + i} has id {ids[i]})')
            stamp = _number_column(cols[1], np.arange(n, n + len(rows)))
            has_pose = np.array([bool(v) for v in cols[9]])
            pose = np.full((len(rows), 7), np.nan)
            if has_pose.any():
                posed = np.flatnonzero(has_pose)
                pose[posed] = np.stack([_number_column([c[i] for i in posed], n + posed)
                                        for c in cols[2:9]], axis=1)
            names = cols[10]
            if not all(v is None or isinstance(v, str) for v in names):
                pid = n + next(i for i, v in enumerate(names) if not (v is None or isinstance(v, str)))
                raise TypeError(f'place {pid}: source must be text')
            codes.append(np.array([sources.setdefault(v or '', len(sources)) for v in names], np.int32))
            stamps.append(stamp)
            poses.append(pose)
            n += len(rows)
        has_thumbs = db.execute("SELECT name FROM sqlite_master WHERE name='thumbnails'").fetchone()
        thumbs = dict(db.execute('SELECT id, jpeg FROM thumbnails').fetchall()) if has_thumbs else {}
    finally:
        db.close()
    if not stamps:
        return PlaceTable(), thumbs
    return PlaceTable(np.concatenate(stamps), np.concatenate(poses), np.concatenate(codes),
                      list(sources)), thumbs


def _number_column(values: Sequence, place_ids: np.ndarray) -> np.ndarray:
    """float64 of a sqlite column that must hold numbers (not text, NULL, bool or NaN)."""
    bad = [i for i, v in enumerate(values)
           if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v]
    if bad:
        raise TypeError(f'place {place_ids[bad[0]]}: stamp and pose must be numbers, got {values[bad[0]]!r}')
    return np.array(values, np.float64)
