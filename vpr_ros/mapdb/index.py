"""faiss indexes over L2-normalised descriptors (inner product == cosine similarity).

Specs: ``flat`` (exact), ``sq8``/``fp16`` (exact search on compressed codes), ``hnsw[M]``
(graph, approximate), ``ivf[N]`` (inverted lists, approximate, trained on the map), ``pq[M]``
(product quantisation, trained). Any other string is passed to ``faiss.index_factory``.
The index is derived data: it can always be rebuilt from descriptors.npy.
"""
from __future__ import annotations

import re

import numpy as np

from vpr_ros.errors import ConfigError


def factory_string(spec: str, dim: int, count: int) -> str:
    spec = spec.strip()
    low = spec.lower()
    if low == 'flat':
        return 'Flat'
    if low in ('sq8', 'fp16'):
        return 'SQ8' if low == 'sq8' else 'SQfp16'
    m = re.fullmatch(r'hnsw(\d*)', low)
    if m:
        return f'HNSW{m.group(1) or 32},Flat'
    m = re.fullmatch(r'ivf(\d*)', low)
    if m:
        nlist = int(m.group(1)) if m.group(1) else max(1, min(4096, int(4 * np.sqrt(max(count, 1)))))
        return f'IVF{nlist},Flat'
    m = re.fullmatch(r'pq(\d*)', low)
    if m:
        msub = int(m.group(1)) if m.group(1) else next(s for s in (64, 32, 16, 8, 4, 2, 1) if dim % s == 0)
        if dim % msub:
            raise ConfigError(f'index pq{msub}: dim {dim} is not divisible by {msub}')
        return f'PQ{msub}x8'
    return spec


def build_index(vectors: np.ndarray, spec: str = 'flat'):
    """Build (and train if needed) a faiss inner-product index holding ``vectors``."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count, dim = vectors.shape
    try:
        index = faiss.index_factory(dim, factory_string(spec, dim, count), faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ConfigError(f'bad index spec {spec!r}: {str(exc).splitlines()[0][:200]}') from exc
    if not index.is_trained:
        if count < 2:
            raise ConfigError(f'index {spec!r} must be trained but the map has {count} vectors')
        if hasattr(index, 'nlist') and index.nlist > count:
            raise ConfigError(f'index {spec!r} has more lists ({index.nlist}) than map vectors ({count})')
        index.train(vectors)
    if hasattr(index, 'nprobe'):
        index.nprobe = max(1, min(index.nlist, 16))
    if count:
        index.add(vectors)
    return index


# faiss switches exact search to BLAS from this many queries on. Recent wheels default to 128000,
# which keeps a multi-vector query (SegVLAD: ~60 vectors) on the slow scalar path: 114 ms vs 8.5 ms
# for 63 x 11.9k x 1024 on 2 cores, same results.
BLAS_QUERY_THRESHOLD = 20
# Searches use the process's OpenMP thread count, which on these wheels is torch's too: faiss and
# torch resolve to one OpenMP runtime, so setting faiss's count would set torch's (threadpools.py).
# With the BLAS pools at one thread, 2 threads search a SegVLAD query in 9.5 ms against 16.7 ms.


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of the top-k rows for each query; rows are -1 where fewer exist."""
    import faiss

    if faiss.cvar.distance_compute_blas_threshold != BLAS_QUERY_THRESHOLD:
        faiss.cvar.distance_compute_blas_threshold = BLAS_QUERY_THRESHOLD
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = max(1, min(int(k), max(index.ntotal, 1)))
    return index.search(queries, k)


def write_index(index, path: str) -> None:
    import faiss

    faiss.write_index(index, path)


def read_index(path: str):
    import faiss

    return faiss.read_index(path)
