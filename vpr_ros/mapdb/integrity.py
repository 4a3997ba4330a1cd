"""A map detects that it is not what was written, and is replaced atomically.

* Checksums: ``save`` records the SHA-256 and size of every file in map.yaml (``files``); ``load``
  verifies them. ``verify='full'`` (default) hashes every file; ``verify='size'`` only compares
  sizes (for huge maps where hashing costs seconds: see docs/map-format.md), ``'none'``
  skips the file checks. A mismatching ``index.faiss`` is derived data and is rebuilt; any other
  mismatching file makes the map corrupt. Maps written before checksums existed load unverified.
* Content checks that need no checksum: descriptors finite and of unit (or zero) norm, owners
  non-decreasing and inside the places table, one vector per place unless ``multi_vector``.
* Atomic replacement: the new map is written into a hidden sibling ``.NAME.tmp-PID-*``, then
  swapped with the old one by ``renameat2(RENAME_EXCHANGE)`` (Linux >= 3.15; one atomic step,
  readers always see a complete map). Where that is not available the fallback renames the old
  map aside (``.NAME.old-PID-*``) and the new one in; ``recover`` then repairs the one state a kill
  can leave (no map at the path, a complete new and/or old sibling). Siblings of dead processes
  are removed on the next save.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from vpr_ros.errors import MapError

logger = logging.getLogger('vpr_ros')

VERIFY_MODES = ('full', 'size', 'none')
INDEX_FILE = 'index.faiss'
META_FILE = 'map.yaml'
_CHUNK = 1 << 22
NORM_TOLERANCE = {'float32': 1e-3, 'float16': 2e-2}  # |norm - 1| allowed per storage dtype


# ----- checksums -------------------------------------------------------------------------------
def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digest_files(directory: str) -> dict[str, dict[str, Any]]:
    """{file name: {'sha256': hex, 'bytes': size}} for every file of a map directory but map.yaml."""
    out = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name != META_FILE and os.path.isfile(path):
            out[name] = {'sha256': sha256_file(path), 'bytes': os.path.getsize(path)}
    return out


def verify_files(directory: str, files: Mapping[str, Mapping[str, Any]] | None, verify: str,
                 shown: str | None = None) -> set[str]:
    """Names of files that differ from what map.yaml recorded; raises for a missing recorded file.

    ``shown``: the map's name in messages (``directory`` may be a pinned snapshot's /proc path).
    """
    if verify not in VERIFY_MODES:
        raise MapError(f'map verification must be one of {VERIFY_MODES}, got {verify!r}')
    if not files or verify == 'none':
        return set()
    bad = set()
    for name, want in files.items():
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            if name == INDEX_FILE:
                continue  # derived data: rebuilt
            raise MapError(f'{shown or directory} is corrupt: {name} is missing')
        if os.path.getsize(path) != want['bytes']:
            bad.add(name)
        elif verify == 'full' and sha256_file(path) != want['sha256']:
            bad.add(name)
    return bad


# ----- consistent reads ------------------------------------------------------------------------
class Snapshot:
    """One version of a map directory, pinned by a directory handle for the length of a load.

    A save swaps whole directories (renameat2 exchange), so every file opened through the handle
    (``root``: ``/proc/self/fd/N`` on Linux) belongs to the version that was at ``path`` when the
    snapshot was taken, however many saves land meanwhile; opening each file by ``path`` mixed one
    save's descriptors with another's map.yaml. A save that lands during the load removes the old
    version's files: :meth:`replaced` then says so and the caller loads again.
    Without /proc (not Linux) files are opened by path, as before.
    """

    def __init__(self, path: str, shown: str | None = None) -> None:
        self.path, self.shown = path, shown or path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError as exc:
            raise MapError(f'map not found: {self.shown}') from exc
        except NotADirectoryError as exc:
            raise MapError(f'map not found: {self.shown} is not a directory') from exc
        except PermissionError as exc:
            raise MapError(f'permission denied: this user cannot read the map {self.shown}') from exc
        except OSError as exc:
            raise MapError(f'cannot open the map {self.shown}: {exc.strerror}') from exc
        st = os.fstat(self.fd)
        self._identity = (st.st_dev, st.st_ino)
        proc = f'/proc/self/fd/{self.fd}'
        self.root = proc if os.path.isdir(proc) else path

    def file(self, name: str) -> str:
        return os.path.join(self.root, name)

    def open_fd(self, name: str) -> int:
        """A read-only descriptor of one file of this version (the caller closes it)."""
        return os.open(name, os.O_RDONLY, dir_fd=self.fd)

    def replaced(self) -> bool:
        """Whether ``path`` names another directory now (a save landed since the snapshot)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._identity

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> 'Snapshot':
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_error(shown: str, exc: BaseException) -> MapError:
    """The one-line MapError for a file of a map that could not be read."""
    if isinstance(exc, PermissionError):
        name = os.path.basename(str(exc.filename)) if exc.filename else 'a map file'
        return MapError(f'permission denied: this user cannot read {name} of {shown}')
    text = str(exc).strip().splitlines()
    return MapError(f'{shown} is corrupt: {type(exc).__name__}: {text[0][:200] if text else ""}')


# ----- content ---------------------------------------------------------------------------------
def _row_chunks(rows: int, full: bool, sample: int = 4096, chunk: int = 8192,
                blocks: int = 32) -> Iterator[slice]:
    if full or rows <= sample:
        for start in range(0, rows, chunk):
            yield slice(start, min(rows, start + chunk))
    else:  # a fixed sample (deterministic): ``blocks`` runs of contiguous rows spread over the file.
        # Runs, not single spread rows: each row read from a memory-mapped file faults in a whole
        # read-ahead window, so 4096 spread rows paged in all 2.5 GB of a 1M-place map.
        run = sample // blocks
        for start in np.linspace(0, rows - run, blocks).astype(np.int64):
            yield slice(int(start), int(start) + run)


def content_problem(descriptors: np.ndarray, owners: np.ndarray, places: int, multi_vector: bool,
                    dtype: str, full: bool = True) -> str | None:
    """Why descriptors/owners cannot be what an encoder wrote (None when they can)."""
    if len(owners):
        if owners[0] < 0 or owners[-1] >= places:
            return 'descriptor owners point outside the places table'
        if np.any(np.diff(owners) < 0):
            return 'descriptor owners are not in place order'
        if not multi_vector and (len(owners) != places or np.any(owners != np.arange(places))):
            return 'a global-descriptor map must hold exactly one vector per place'
    elif places and not multi_vector:
        return 'a global-descriptor map must hold exactly one vector per place'
    tol = NORM_TOLERANCE.get(dtype, 2e-2)
    for rows in _row_chunks(len(descriptors), full):
        block = np.asarray(descriptors[rows], np.float32)
        with np.errstate(over='ignore', invalid='ignore'):  # NaN/inf/huge values show in the sums
            squares = np.einsum('ij,ij->i', block, block)
        if not np.all(np.isfinite(squares)):
            return 'descriptors hold NaN or infinite values'
        norms = np.sqrt(squares)
        if np.any((np.abs(norms - 1.0) > tol) & (norms > tol)):
            return 'descriptors are not L2-normalised (norms outside 1 +- tolerance)'
    return None


def index_problem(index: Any, descriptors: np.ndarray, sample: int = 64) -> str | None:
    """Whether a sample of the index's stored vectors matches the descriptors (None: it does).

    Cheap (``sample`` rows) and independent of checksums, so maps loaded with verify='size'/'none'
    or written before checksums still catch an index whose vectors were damaged (top "cosine"
    2.7e36). Compressed indexes (sq8, pq) reconstruct approximately, hence the loose bound;
    indexes that cannot reconstruct (IVF without a direct map) are not checked.
    """
    rows = len(descriptors)
    if rows == 0:
        return None
    ids = np.unique(np.linspace(0, rows - 1, min(sample, rows)).astype(np.int64))
    try:
        stored = np.stack([index.reconstruct(int(i)) for i in ids])
    except RuntimeError:
        return None
    want = np.asarray(descriptors[ids], np.float64)
    stored = stored.astype(np.float64)
    if not np.all(np.isfinite(stored)) or np.abs(stored).max() > 1e3:
        return 'stored vectors are not unit vectors'
    s_norm, w_norm = np.linalg.norm(stored, axis=1), np.linalg.norm(want, axis=1)
    cos = np.sum(stored * want, axis=1) / np.maximum(s_norm * w_norm, 1e-12)
    wrong = (w_norm > 0) & ((cos < 0.5) | (np.abs(s_norm - w_norm) > 0.5))
    return f'{int(wrong.sum())} of {len(ids)} sampled vectors differ' if wrong.any() else None


# ----- atomic replacement ------------------------------------------------------------------------
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _libc_renameat2() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _libc_renameat2()


def exchange(a: str, b: str) -> bool:
    """Atomically swap two existing paths; False when the system or filesystem cannot."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, f'renameat2(RENAME_EXCHANGE) {a} <-> {b}: {os.strerror(err)}')


def _sibling(path: str, kind: str) -> str:
    """A new hidden sibling directory ``.NAME.KIND-PID-random`` (kind: tmp or old), with the mode
    a plain mkdir gives (0777 & ~umask): mkdtemp's 0700 kept the map from every other account."""
    prefix = f'.{os.path.basename(path)}.{kind}-{os.getpid()}-'
    created = tempfile.mkdtemp(prefix=prefix, dir=os.path.dirname(path))
    os.chmod(created, 0o777 & ~current_umask())
    return created


def current_umask() -> int:
    """The process umask, read without changing it (os.umask sets it: racy with other threads)."""
    try:
        with open('/proc/self/status', encoding='ascii') as fh:
            for line in fh:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc (or a kernel before 4.7): read it the only other way
    os.umask(mask)
    return mask


def _siblings(path: str) -> list[tuple[str, str, int | None]]:
    """(path, kind, pid) of every ``.NAME.tmp-*``/``.NAME.old-*`` beside ``path``."""
    path = os.path.abspath(path)
    parent, base = os.path.dirname(path), os.path.basename(path)
    out = []
    try:
        names = os.listdir(parent)
    except OSError:
        return out
    for name in names:
        for kind in ('tmp', 'old'):
            prefix = f'.{base}.{kind}-'
            if name.startswith(prefix):
                pid_text = name[len(prefix):].split('-', 1)[0]
                out.append((os.path.join(parent, name), kind, int(pid_text) if pid_text.isdigit() else None))
    return out


def _alive(pid: int | None) -> bool:
    """Whether the process that named a sibling still runs (names without a pid are from old saves)."""
    if pid is None:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(path: str) -> list[str]:
    """Remove siblings left by saves of processes that no longer run (killed mid-save)."""
    removed = []
    for sib, _, pid in _siblings(path):
        if not _alive(pid):
            shutil.rmtree(sib, ignore_errors=True)
            removed.append(sib)
    return removed


def target_problem(path: str, replace_problem: Callable[[str], str | None],
                   protect: Sequence[str] = ()) -> str | None:
    """Why a map cannot be written to ``path`` (None: it can), checked before any work or write.

    ``replace_problem(path)`` says why an existing directory must not be replaced (it is not a
    vpr_ros map). ``protect``: paths the write must not replace or contain (the build's sources).
    """
    path = os.path.abspath(path)
    for other in protect:
        other = os.path.abspath(other)
        if other == path or other.startswith(path + os.sep):
            return f'{path} is or contains the source {other}'
    if os.path.islink(path):
        return f'{path} is a symbolic link; give the directory it points to'
    if os.path.lexists(path):
        if not os.path.isdir(path):
            return f'{path} exists and is not a directory'
        if os.path.ismount(path):
            return (f'{path} is a mount point; a map is written beside its target and swapped in, which '
                    'a mount point cannot be: write to a folder inside it')
        problem = replace_problem(path)
        if problem:
            return f'{path} {problem}; refusing to replace it'
    parent = os.path.dirname(path)
    while not os.path.isdir(parent):
        if os.path.lexists(parent):
            return f'{parent} exists and is not a directory'
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        return f'permission denied: cannot write in {parent}'
    return None


def check_target(path: str, replace_problem: Callable[[str], str | None],
                 protect: Sequence[str] = ()) -> None:
    """Raise MapError when :func:`target_problem` finds one."""
    problem = target_problem(path, replace_problem, protect)
    if problem:
        raise MapError(problem)


# Causes a write fails with that a user can act on, as the one-line reason of the MapError.
_WRITE_CAUSES = {errno.ENOSPC: 'no space left on device', errno.EDQUOT: 'disk quota exceeded',
                 errno.EROFS: 'read-only file system', errno.EACCES: 'permission denied',
                 errno.EPERM: 'permission denied (operation not permitted)',
                 errno.EBUSY: 'device or resource busy (a mount point?)', errno.EIO: 'input/output error',
                 errno.EFBIG: 'file too large for the file system'}
_NEARLY_FULL_BYTES = 1 << 20


def write_failure(path: str, exc: BaseException, had_map: bool) -> MapError:
    """The one-line MapError for a save that failed with ``exc`` (an OSError, or a library's error
    carrying an errno). Some writers lose the errno of a short write (numpy: "N requested and M
    written"): a file system left nearly full is then named as the cause."""
    code = getattr(exc, 'errno', None)
    cause = _WRITE_CAUSES.get(code) if isinstance(code, int) else None
    if cause is None:
        try:
            st = os.statvfs(os.path.dirname(path))
            full = st.f_bavail * st.f_frsize < _NEARLY_FULL_BYTES
        except OSError:
            full = False
        lines = str(exc).strip().splitlines()
        if full:
            cause = 'no space left on device'
        elif re.search(r'\d+ requested and \d+ written', str(exc)):  # numpy's short write, errno lost
            cause = f'a write was cut short ({lines[0][:80]}): the file system is full or over its quota'
        else:
            cause = lines[0][:200] if lines else type(exc).__name__
    kept = 'the map that was there is unchanged' if had_map else 'nothing was left behind'
    return MapError(f'cannot write the map {path}: {cause}; {kept}')


def replace_directory(path: str, write_into: Callable[[str], None],
                      replace_problem: Callable[[str], str | None],
                      write_errors: tuple[type[BaseException], ...] = (OSError,)) -> None:
    """Write a new directory with ``write_into(tmp)`` and swap it in for ``path`` atomically.

    ``replace_problem(path)`` is asked before anything is written and again just before the swap:
    a directory that is not one this package wrote is never replaced. A write that fails
    (``write_errors``: disk full, quota, read-only, permission) is a one-line MapError naming the
    cause; the temporary sibling is removed and whatever was at ``path`` stays as it was.
    """
    path = os.path.abspath(path)
    check_target(path, replace_problem)
    had_map = os.path.lexists(path)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if had_map:  # free the disk first; without a map at path a sibling may be the only copy
            remove_stale(path)
        tmp = _sibling(path, 'tmp')
    except write_errors as exc:
        raise write_failure(path, exc, had_map) from exc
    try:
        write_into(tmp)
        _fsync_dir(tmp)
        if os.path.lexists(path):
            check_target(path, replace_problem)
            if exchange(tmp, path):
                old = tmp
            else:
                old = _sibling(path, 'old')
                os.rmdir(old)
                os.rename(path, old)  # a kill here leaves no map at path: recover() repairs it
                os.rename(tmp, path)
            _fsync_dir(os.path.dirname(path))
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
            _fsync_dir(os.path.dirname(path))
    except BaseException as exc:
        # the cause first: removing the sibling frees the space a short write's cause is read from
        failure = write_failure(path, exc, had_map) if isinstance(exc, write_errors) else None
        if os.path.isdir(tmp) and os.path.abspath(tmp) != path:
            shutil.rmtree(tmp, ignore_errors=True)
        if failure is not None:
            raise failure from exc
        raise
    remove_stale(path)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def recover(path: str, is_complete: Callable[[str], bool]) -> str | None:
    """After a killed fallback save (no map at ``path``): move the newest complete sibling into place.

    The new map (tmp) wins over the old one; returns the directory to load from (``path`` when the
    rename worked, the sibling itself on a read-only filesystem), or None when there is nothing.
    """
    if os.path.lexists(path):
        return path
    candidates = [(kind, sib) for sib, kind, pid in _siblings(path) if not _alive(pid) and is_complete(sib)]
    for kind in ('tmp', 'old'):
        for found_kind, sib in sorted(candidates, key=lambda c: -os.path.getmtime(c[1])):
            if found_kind != kind:
                continue
            try:
                os.rename(sib, path)
            except OSError:
                logger.warning(f'{path} is missing; loading the map an interrupted save left in {sib}')
                return sib
            logger.warning(f'{path} was missing after an interrupted save; restored it from {sib}')
            return path
    return None
