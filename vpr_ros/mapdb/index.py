"""faiss indexes over L2-normalised descriptors (inner product == cosine similarity).

Spec grammar (``build-map --index``), comma separated: ``[transform,] kind [,codes] [@search]``

* kinds: ``flat`` (exact), ``sq8``/``fp16`` (exact search on compressed codes), ``hnsw[M]``
  (graph, approximate), ``ivf[N]`` (N inverted lists, approximate, trained), ``pq[M]``
  (product quantisation, M bytes per vector, trained);
* codes of an ``ivf``/``hnsw`` kind: ``flat`` (default), ``fp16``, ``sq8``, ``pq[M]`` (ivf only);
* transforms: ``pca[D]`` (PCA to D dims) and ``opq[M]`` / ``opq[M]_[D]`` (OPQ rotation for M
  sub-quantisers, optionally reducing to D dims; use it in front of ``pq``);
* ``@P``: search effort, nprobe of an IVF (default 16) or efSearch of an HNSW (default 64).

Examples: ``ivf1024,pq64`` (64 bytes per place), ``opq64_256,ivf1024,pq64``, ``pca256,hnsw32``,
``ivf4096@32``. Any other string is refused, and so is every number out of its range (see
``plan_index``; faiss aborts the process on some, e.g. ``hnsw0``), before any encoding.

Trained kinds are trained on a seeded random sample of the map (``train_sample_size``): k-means
and PQ need tens of points per centroid, not millions. With a PCA transform the index compares
by L2 distance (PCA centres the data, which changes inner products but not L2 ranks of unit
vectors); search() reports scores as cosine similarity 1 - d/2 either way.
The index is derived data: it can always be rebuilt from descriptors.npy.
"""
from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass

import numpy as np

from vpr_ros.errors import ConfigError

DEFAULT_NPROBE = 16
DEFAULT_EF_SEARCH = 64
TRAIN_POINTS_PER_LIST = 64     # k-means sample per inverted list
PQ_TRAIN_POINTS = 65536        # 256 centroids per sub-quantiser x 256 points
# Re-train advice for IVF maps that grew by adding places (see retrain_advice).
RETRAIN_GROWTH = 10.0
RETRAIN_IMBALANCE = 2.0


@dataclass(frozen=True)
class IndexPlan:
    factory: str
    metric: str           # 'ip' or 'l2'
    nprobe: int | None    # IVF search effort
    ef_search: int | None  # HNSW search effort


# Ranges every spec number is checked against before faiss sees it: outside them faiss aborts the
# process (hnsw0: SIGABRT, hnsw1: SIGSEGV), overflows a C int (ivf99999999999) or builds an index
# that cannot be searched (ivf0).
HNSW_M_RANGE = (2, 512)
NLIST_RANGE = (1, 1 << 20)
EFFORT_RANGE = (1, 1 << 16)
PQ_TRAIN_MIN = 256  # 8-bit codes: k-means of 256 centroids per sub-quantiser needs as many vectors


def _default_nlist(count: int) -> int:
    return max(1, min(65536, count, int(4 * np.sqrt(max(count, 1)))))


def _shown(spec: str, limit: int = 60) -> str:
    return repr(spec if len(spec) <= limit else spec[:limit] + '...')


def _number(text: str, what: str, bounds: tuple[int, int], spec: str) -> int:
    """An ASCII decimal inside ``bounds`` (inclusive), else ConfigError naming ``what``."""
    lo, hi = bounds
    if not re.fullmatch(r'[0-9]+', text):
        raise ConfigError(f'index {_shown(spec)}: {what} must be a number {lo}..{hi}')
    if len(text) > 9 or not lo <= int(text) <= hi:
        raise ConfigError(f'index {_shown(spec)}: {what} must be {lo}..{hi}, got {text[:12]}')
    return int(text)


def _pq_m(value: str, dim: int, spec: str) -> int:
    msub = (_number(value, 'the pq/opq sub-quantiser count', (1, dim), spec) if value
            else next(s for s in (64, 32, 16, 8, 4, 2, 1) if dim % s == 0))
    if dim % msub:
        raise ConfigError(f'index {_shown(spec)}: dim {dim} is not divisible by {msub}')
    return msub


def _check_trainable(spec: str, kind: str, need: int, count: int | None) -> None:
    if count is not None and count < need:
        raise ConfigError(f'index {_shown(spec)}: {kind} needs at least {need} map vectors to train, the map '
                          f'has {count}')


def plan_index(spec: str, dim: int, count: int | None = None) -> IndexPlan:
    """Parse and validate a spec (see the module docstring) into a faiss factory string and search
    settings. Every number is range-checked; ``count`` (map vectors; None when not known yet, e.g.
    before encoding) adds the checks that depend on it (IVF lists, PQ and PCA training)."""
    if not isinstance(spec, str):
        raise ConfigError(f'index spec must be a string, got {type(spec).__name__}')
    head, at, effort_text = spec.strip().partition('@')
    parts = [p.strip().lower() for p in head.split(',') if p.strip()]
    if not parts:
        raise ConfigError('empty index spec')
    effort = _number(effort_text, 'the search effort after @ (nprobe / efSearch)', EFFORT_RANGE,
                     spec) if at else None
    factory: list[str] = []
    metric = 'ip'
    cur_dim = dim
    m = re.fullmatch(r'(pca|opq)([0-9]*)(?:_([0-9]+))?', parts[0])
    if m and len(parts) > 1:
        kind, a, b = m.groups()
        if kind == 'pca':
            if b:
                raise ConfigError(f'index {_shown(spec)}: pca takes one output dimension 1..{dim}')
            out = _number(a, 'the pca output dimension', (1, dim), spec) if a else max(1, dim // 4)
            _check_trainable(spec, f'pca{out}', out, count)
            factory.append(f'PCA{out}')
            metric, cur_dim = 'l2', out
        else:
            out = _number(b, 'the opq output dimension', (1, dim), spec) if b else dim
            msub = _pq_m(a, out, spec)
            _check_trainable(spec, 'opq', PQ_TRAIN_MIN, count)
            factory.append(f'OPQ{msub}_{out}' if b else f'OPQ{msub}')
            cur_dim = out
        parts = parts[1:]
    kind, codes = parts[0], parts[1:]
    if len(codes) > 1:
        raise ConfigError(f'index {_shown(spec)}: expected [transform,] kind [,codes]')
    code = codes[0] if codes else 'flat'
    nprobe = ef = None
    if kind in ('flat', 'sq8', 'fp16') and not codes:
        factory.append({'flat': 'Flat', 'sq8': 'SQ8', 'fp16': 'SQfp16'}[kind])
    elif (mk := re.fullmatch(r'pq([0-9]*)', kind)) and not codes:
        factory.append(f'PQ{_pq_m(mk.group(1), cur_dim, spec)}x8')
        _check_trainable(spec, 'pq', PQ_TRAIN_MIN, count)
    elif mk := re.fullmatch(r'hnsw([0-9]*)', kind):
        codes_f = {'flat': 'Flat', 'fp16': 'SQfp16', 'sq8': 'SQ8'}.get(code)
        if codes_f is None:
            raise ConfigError(f'index {_shown(spec)}: hnsw stores flat, fp16 or sq8 codes')
        links = _number(mk.group(1), 'the hnsw link count M', HNSW_M_RANGE, spec) if mk.group(1) else 32
        factory.append(f'HNSW{links},{codes_f}')
        ef = effort or DEFAULT_EF_SEARCH
    elif mk := re.fullmatch(r'ivf([0-9]*)', kind):
        if mk.group(1):
            nlist = _number(mk.group(1), 'the ivf list count', NLIST_RANGE, spec)
            if count is not None and nlist > count:
                raise ConfigError(f'index {_shown(spec)} has more lists ({nlist}) than map vectors ({count})')
        else:
            nlist = _default_nlist(count or 1)
        mc = re.fullmatch(r'pq([0-9]*)', code)
        if mc:
            codes_f = f'PQ{_pq_m(mc.group(1), cur_dim, spec)}x8'
            _check_trainable(spec, 'pq', PQ_TRAIN_MIN, count)
        else:
            codes_f = {'flat': 'Flat', 'fp16': 'SQfp16', 'sq8': 'SQ8'}.get(code)
            if codes_f is None:
                raise ConfigError(f'index {_shown(spec)}: ivf stores flat, fp16, sq8 or pq[M] codes')
        factory.append(f'IVF{nlist},{codes_f}')
        nprobe = min(nlist, effort or DEFAULT_NPROBE)
    else:
        raise ConfigError(f'bad index spec {_shown(spec)}: expected [pca[D]|opq[M][_D],] flat|sq8|fp16|pq[M]|'
                          'hnsw[M][,flat|fp16|sq8]|ivf[N][,flat|fp16|sq8|pq[M]] [@effort] '
                          '(see vpr_ros.mapdb.index)')
    if effort is not None and nprobe is None and ef is None:
        raise ConfigError(f'index {_shown(spec)}: @effort applies to ivf and hnsw indexes only')
    return IndexPlan(','.join(factory), metric, nprobe, ef)


def train_sample_size(index) -> int:
    """How many vectors training ``index`` needs (more only costs time)."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    need = PQ_TRAIN_POINTS
    if ivf is not None:
        need = max(need, TRAIN_POINTS_PER_LIST * ivf.nlist)
    return need


def set_search_effort(index, nprobe: int | None = None, ef_search: int | None = None) -> None:
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and nprobe:
        ivf.nprobe = max(1, min(ivf.nlist, int(nprobe)))
    base = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    if ef_search and hasattr(base, 'hnsw'):
        base.hnsw.efSearch = int(ef_search)


def build_index(vectors: np.ndarray, spec: str = 'flat', seed: int = 0, add_batch: int = 65536):
    """Build (and train if needed, on a sample) a faiss index holding ``vectors``.

    ``vectors`` may be a memory-mapped float16/float32 array: it is converted in batches.
    """
    import faiss

    count, dim = vectors.shape
    plan = plan_index(spec, dim, count)
    metric = faiss.METRIC_L2 if plan.metric == 'l2' else faiss.METRIC_INNER_PRODUCT
    try:
        index = faiss.index_factory(dim, plan.factory, metric)
    except RuntimeError as exc:
        raise ConfigError(f'bad index spec {_shown(spec)}: {str(exc).splitlines()[0][:200]}') from exc
    _no_polysemous_training(index)
    if not index.is_trained:
        if count < 2:
            raise ConfigError(f'index {_shown(spec)} must be trained but the map has {count} vectors')
        need = train_sample_size(index)
        rows = (np.arange(count) if count <= need
                else np.sort(np.random.default_rng(seed).choice(count, need, replace=False)))
        try:
            index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
        except RuntimeError as exc:
            raise ConfigError(f'index {_shown(spec)} cannot be trained on this map: '
                              f'{str(exc).splitlines()[-1][:200]}') from exc
    set_search_effort(index, plan.nprobe, plan.ef_search)
    for start in range(0, count, add_batch):
        index.add(np.ascontiguousarray(vectors[start:start + add_batch], dtype=np.float32))
    return index


def _no_polysemous_training(index) -> None:
    """PQ indexes default to polysemous training (annealing code orders for Hamming filtering,
    which IP search never uses): it took 210 of 211 s of an IVF32,PQ16 build of 3000 vectors."""
    import faiss

    inner = index.index if isinstance(index, faiss.IndexPreTransform) else index
    inner = faiss.downcast_index(inner)
    if hasattr(inner, 'do_polysemous_training'):
        inner.do_polysemous_training = False


# faiss switches exact search to BLAS from this many queries on. Recent wheels default to 128000,
# which keeps a multi-vector query (SegVLAD: ~60 vectors) on the slow scalar path: 114 ms vs 8.5 ms
# for 63 x 11.9k x 1024 on 2 cores, same results.
BLAS_QUERY_THRESHOLD = 20
# Searches use the process's OpenMP thread count, which on these wheels is torch's too: faiss and
# torch resolve to one OpenMP runtime, so setting faiss's count would set torch's (threadpools.py).
# With the BLAS pools at one thread, 2 threads search a SegVLAD query in 9.5 ms against 16.7 ms.


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(cosine scores, rows) of the top-k rows for each query; rows are -1 where fewer exist."""
    import faiss

    if faiss.cvar.distance_compute_blas_threshold != BLAS_QUERY_THRESHOLD:
        faiss.cvar.distance_compute_blas_threshold = BLAS_QUERY_THRESHOLD
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = max(1, min(int(k), max(index.ntotal, 1)))
    scores, rows = index.search(queries, k)
    if index.metric_type == faiss.METRIC_L2:  # unit vectors: |x - q|^2 = 2 - 2 cos
        scores = 1.0 - 0.5 * scores
    return scores, rows


def write_index(index, path: str) -> None:
    """Write ``index``; a failed write (faiss: RuntimeError naming strerror) raises OSError."""
    import faiss

    try:
        faiss.write_index(index, path)
    except RuntimeError as exc:
        text = str(exc)
        code = next((c for c, name in ((errno.ENOSPC, 'No space left'), (errno.EDQUOT, 'quota'),
                                       (errno.EROFS, 'Read-only'), (errno.EACCES, 'Permission denied'))
                     if name in text), errno.EIO)
        raise OSError(code, f'{os.strerror(code)} writing {os.path.basename(path)}') from exc


def read_index(path: str, mmap: bool = False, ivf: bool = False):
    """Read an index; with ``mmap`` the big arrays stay in the file and are paged in on use.

    faiss maps the inverted lists of an IVF index (IO_FLAG_MMAP; pass ``ivf``) and the code array
    of flat-code indexes (flat, fp16, sq8, pq, HNSW storage; IO_FLAG_MMAP_IFC). A mapped index
    is read-only: read it again without ``mmap`` before adding to it.
    """
    import faiss

    if not mmap:
        return faiss.read_index(path)
    return faiss.read_index(path, faiss.IO_FLAG_MMAP if ivf else faiss.IO_FLAG_MMAP_IFC)


def is_ivf_spec(spec: str, dim: int) -> bool:
    try:
        return 'IVF' in plan_index(spec, dim).factory.upper()
    except ConfigError:
        return False


def list_imbalance(index) -> float | None:
    """faiss's imbalance factor of an IVF index's lists (1 = perfectly even), None if not IVF."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None or ivf.ntotal == 0:
        return None
    return float(ivf.invlists.imbalance_factor())


def retrain_advice(index, trained_on: int, trained_imbalance: float | None) -> str | None:
    """Why an IVF index that grew by adds should be re-trained (build-map again), or None.

    Centroids fitted on ``trained_on`` vectors keep working while new places look like the old
    ones; advise a re-train when the map has grown past RETRAIN_GROWTH x the training set or the
    lists have become RETRAIN_IMBALANCE x more uneven than right after training (new areas
    crowding a few lists: slower searches and lower recall at the same nprobe).
    """
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None or not trained_on:
        return None
    reasons = []
    if ivf.ntotal > RETRAIN_GROWTH * trained_on:
        reasons.append(f'{ivf.ntotal} vectors, {ivf.ntotal / trained_on:.1f}x the {trained_on} it was '
                       f'trained with')
    now = list_imbalance(index)
    if trained_imbalance and now and now > RETRAIN_IMBALANCE * trained_imbalance:
        reasons.append(f'list imbalance {now:.2f} vs {trained_imbalance:.2f} after training')
    return '; '.join(reasons) or None
