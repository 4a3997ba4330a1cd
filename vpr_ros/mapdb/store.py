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
import urllib.parse
import weakref
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from vpr_ros.errors import ConfigError, MapBusyError, MapError
from vpr_ros.features import LocalFeatures
from vpr_ros.frames import Pose
from vpr_ros.mapdb import index as faiss_index
from vpr_ros.mapdb import integrity
from vpr_ros.mapdb.local_features import FILES as LOCAL_FEATURE_FILES
from vpr_ros.mapdb.local_features import META_FILE as LOCAL_FEATURES_META
from vpr_ros.mapdb.local_features import LocalFeatureStore
from vpr_ros.mapdb.meta import MANIFEST_MAX_BYTES, MapMeta, compatibility_problems, is_map_manifest
from vpr_ros.textio import load_yaml_file, read_text

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
        self._index_file: _IndexFile | None = None  # set while the index is memory-mapped from this file
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
        faiss_index.plan_index(index, int(encoder_identity['dim']))  # ConfigError for a bad spec
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
            if self._index_file is not None:
                self._index_file.close()
            self._index_file = None
            self._pending = []
            self._record_index_training()
        elif self._pending:
            if self._index_file is not None:  # mapped read-only: bring it into memory to grow it
                self._index = faiss_index.read_index(self._index_file.path)
                self._index_file.close()
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
        from vpr_ros.mapdb.search import rank_places

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
        """Write atomically: readers of ``path`` always see the old or the new complete map.

        An existing ``path`` is replaced only when it is a vpr_ros map holding nothing but the files
        a map is made of, or an empty directory (:func:`replace_problem`); otherwise MapError.
        """
        integrity.replace_directory(path, self._write_into, replace_problem, _WRITE_ERRORS)

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
        mode = 0o666 & ~integrity.current_umask()  # what open() gives; sqlite creates 0644 whatever the umask
        for name in os.listdir(directory):
            with open(os.path.join(directory, name), 'rb') as fh:
                os.fchmod(fh.fileno(), mode)
                os.fsync(fh.fileno())

    @classmethod
    def load(cls, path: str, encoder_identity: dict[str, Any] | None = None, mmap: bool = False,
             verify: str = 'full') -> 'VprMap':
        """Load and validate a map; with ``encoder_identity`` refuse a map of another encoder/config.

        ``verify``: 'full' checks every file against its checksum in map.yaml and every descriptor;
        'size' only file sizes and a sample of descriptors (huge maps); 'none' no file checks.
        Every file is read from one version of the directory (integrity.Snapshot), so a save that
        replaces the map meanwhile is never mixed into the load: the load starts again on the new map.
        """
        path = integrity.recover(path, _is_complete) or path
        for attempt in range(1, LOAD_ATTEMPTS + 1):
            with integrity.Snapshot(path) as snapshot:
                try:
                    return cls._load_snapshot(snapshot, encoder_identity, mmap, verify)
                except MapError as exc:
                    if not snapshot.replaced():
                        raise
                    if attempt == LOAD_ATTEMPTS:  # not "corrupt": every version read was complete
                        raise MapBusyError(f'{path} was replaced by another save during each of '
                                           f'{LOAD_ATTEMPTS} loads; load it again once the saves stop'
                                           ) from exc
                    logger.debug(f'{path} was replaced while it was loaded; loading the new map')
        raise AssertionError('unreachable')

    @classmethod
    def _load_snapshot(cls, snapshot: integrity.Snapshot, encoder_identity: dict[str, Any] | None,
                       mmap: bool, verify: str) -> 'VprMap':
        path, file = snapshot.shown, snapshot.file
        missing = [f for f in _FILES if not os.path.isfile(file(f))]
        if missing:
            raise MapError(f'{path} is not a complete vpr_ros map (missing {", ".join(missing)})')
        meta = _read_meta(snapshot.root, path)
        try:  # before faiss sees it: an edited or old map.yaml may name a spec faiss aborts on
            faiss_index.plan_index(meta.index, meta.dim, meta.vectors or None)
        except ConfigError as exc:
            raise MapError(f'{path}: map.yaml names an index this vpr_ros refuses ({exc})') from exc
        try:
            differ = integrity.verify_files(snapshot.root, meta.files, verify, path)
        except OSError as exc:
            raise integrity.read_error(path, exc) from exc
        if differ - {integrity.INDEX_FILE}:
            raise MapError(f'{path} is corrupt: {", ".join(sorted(differ - {integrity.INDEX_FILE}))} '
                           'differ from the checksums in map.yaml')
        if encoder_identity is not None:
            problems = compatibility_problems(meta.encoder, encoder_identity)
            if problems:
                raise MapError(f'{path}: ' + '; '.join(problems))

        def has(name: str) -> bool:
            """Whether the save wrote an optional file: map.yaml's record says so (a file of a version a
            new save is deleting must not read as 'this map has none'); older maps: the file is there."""
            return name in meta.files if meta.files else os.path.isfile(file(name))

        try:
            descriptors = np.load(file('descriptors.npy'), mmap_mode='r' if mmap else None,
                                  allow_pickle=False)
            owners = np.load(file('owners.npy'), allow_pickle=False)
            state = {}
            if has('encoder_state.npz'):
                with np.load(file('encoder_state.npz'), allow_pickle=False) as npz:
                    state = {k: npz[k] for k in npz.files}
            places, thumbnails = _read_places(file('places.sqlite'))
            local_features = LocalFeatureStore.read(snapshot.root, len(places), path,
                                                    has(LOCAL_FEATURES_META))
        except _READ_ERRORS as exc:
            raise integrity.read_error(path, exc) from exc
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
        index, index_file = None, None
        if os.path.isfile(file(integrity.INDEX_FILE)) and integrity.INDEX_FILE not in differ:
            try:
                index_file = _IndexFile(snapshot) if mmap else None
            except OSError as exc:
                raise integrity.read_error(path, exc) from exc
            try:
                index = faiss_index.read_index(index_file.path if index_file else file(integrity.INDEX_FILE),
                                               mmap, faiss_index.is_ivf_spec(meta.index, meta.dim))
            except RuntimeError as exc:
                if snapshot.replaced():  # its files are being removed: read the new map instead
                    raise MapError(f'{path} was replaced while it was read') from exc
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
        if index is not None and index_file is not None:
            vmap._index_file = index_file  # a mapped index is read again from this very file to grow it
        elif index_file is not None:
            index_file.close()
        return vmap


LOAD_ATTEMPTS = 16  # loads started again when saves keep replacing the map while it is read


class _IndexFile:
    """The index file of one map version, held open: a mapped index is read again from the same
    file (not whatever a later save put at the path) when places are added to it."""

    def __init__(self, snapshot: integrity.Snapshot) -> None:
        self.fd = snapshot.open_fd(integrity.INDEX_FILE)
        proc = f'/proc/self/fd/{self.fd}'
        self.path = proc if os.path.exists(proc) else snapshot.file(integrity.INDEX_FILE)
        self._finalizer = weakref.finalize(self, os.close, self.fd)

    def close(self) -> None:
        self._finalizer()


# What writing a map's files raises when the disk is full, read-only or not ours: OSError (numpy, open),
# sqlite3.Error ("database or disk is full") and faiss's RuntimeError of write_index (index.write_index
# turns that into an OSError).
_WRITE_ERRORS = (OSError, sqlite3.Error)

# Everything numpy, zipfile, sqlite and the decoders raise for damaged files (empty .npy: EOFError,
# broken .npz: BadZipFile / zlib.error, text in a REAL column: TypeError in _read_places).
_READ_ERRORS = (ValueError, OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile, zlib.error,
                sqlite3.Error)


def _first_line(exc: BaseException, limit: int = 200) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else ''


def _read_meta(directory: str, shown: str | None = None) -> MapMeta:
    shown = shown or directory
    path = os.path.join(directory, 'map.yaml')
    try:
        text = read_text(path, 'map.yaml', MapError, MANIFEST_MAX_BYTES)
    except MapError as exc:  # read through a snapshot's directory handle: name the map, not the handle
        if isinstance(exc.__cause__, PermissionError):
            raise integrity.read_error(shown, exc.__cause__) from exc
        raise MapError(str(exc).replace(path, os.path.join(shown, 'map.yaml'))) from exc
    return MapMeta.from_yaml(text, shown)


# Every name a save writes into a map directory: anything else in it is someone else's file.
MAP_FILE_NAMES = frozenset(_FILES + ('encoder_state.npz', integrity.INDEX_FILE, LOCAL_FEATURES_META)
                           + LOCAL_FEATURE_FILES)


def replace_problem(path: str) -> str | None:
    """Why save() must not replace the directory ``path`` (None: it may).

    Only a vpr_ros map (the format marker in its map.yaml, or the schema and encoder section of maps
    written before the marker) that holds nothing but map files, or an empty directory, is replaced:
    a nav2 map_server folder also has a map.yaml, and a user's notes beside a map are not ours.
    """
    try:
        names = os.listdir(path)
    except OSError as exc:
        return f'cannot be read ({exc.strerror})'
    if not names:
        return None
    if 'map.yaml' not in names:
        return 'is not empty and is not a vpr_ros map (no map.yaml)'
    manifest = os.path.join(path, 'map.yaml')
    try:
        data = load_yaml_file(manifest, 'map.yaml', MapError, MANIFEST_MAX_BYTES)
    except MapError as exc:
        return f'holds a map.yaml that cannot be read as a vpr_ros map ({exc})'
    if not is_map_manifest(data):
        return "holds a map.yaml that is not a vpr_ros map's (a nav2 map, or another tool's)"
    foreign = sorted(n for n in names if n not in MAP_FILE_NAMES)
    if foreign:
        shown = ', '.join(foreign[:5]) + (f' and {len(foreign) - 5} more' if len(foreign) > 5 else '')
        return f'holds files vpr_ros did not write ({shown}): move them out first'
    return None


def check_save_target(path: str, protect: Sequence[str] = ()) -> None:
    """Raise MapError unless a map can be saved to ``path`` (before the work that produces it)."""
    integrity.check_target(path, replace_problem, protect)


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
        row = (*pose.position, *(pose.orientation or _NO_POSE[:4])) if pose else _NO_POSE
        known = row if pose is not None and pose.orientation is not None else row[:3]
        if pose and not np.isfinite(known).all():
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
            values = [None if v != v else v for v in pose]  # NaN orientation (position only): NULL
            yield (i, stamp, *values, int(posed), self._sources[code])

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
                     Pose(tuple(pose[:3]), tuple(pose[3:]) if pose[3] == pose[3] else None)  # NaN: unknown
                     if pose[0] == pose[0] else None,
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
    db = sqlite3.connect(f'file:{urllib.parse.quote(path)}?mode=ro&immutable=1', uri=True)
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
                pose[posed, :3] = np.stack([_number_column([c[i] for i in posed], n + posed)
                                            for c in cols[2:5]], axis=1)
                # a position-only pose stores its unknown orientation as four NULLs
                oriented = np.array([i for i in posed if any(c[i] is not None for c in cols[5:9])], np.int64)
                pose[oriented, 3:] = np.stack([_number_column([c[i] for i in oriented], n + oriented)
                                               for c in cols[5:9]], axis=1).reshape(-1, 4)
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
