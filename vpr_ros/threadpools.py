"""CPU thread pools of the numeric libraries, set in one place.

torch's OpenMP pool does the heavy per-frame work. numpy, scipy, OpenCV and faiss each ship
their own OpenBLAS (four copies in one process), whose idle workers busy-wait after every call.
On a 2-core robot computer those spinning workers took the cores from torch's: SegVLAD's
backbone forward measured 111 ms between the small numpy products of its pipeline against 18 ms
with the BLAS pools at one thread (2 torch threads either way). The products outside torch are
small (tens to a few thousand rows), so every BLAS pool is limited to one thread once torch is
about to run. This is process-wide, like ``torch.set_num_threads``. Fitting a map's PCA, where
no torch runs and the products are large, gets every core back for the call
(``blas_threads_for_fitting``).

faiss and torch resolve ``omp_set_num_threads`` to the same OpenMP runtime: a faiss thread count
is torch's too. Map searches therefore leave it alone (an earlier one-thread setting for
searches had silently made every later forward single-threaded).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

_blas_limited = False


def limit_blas_pools() -> None:
    """Limit every OpenBLAS/MKL pool of the numeric libraries vpr_ros uses to one thread (once)."""
    global _blas_limited
    if _blas_limited:
        return
    # Load every library that brings a BLAS first: threadpoolctl only sees loaded ones.
    import cv2  # noqa: F401
    import faiss  # noqa: F401
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api='blas')
    _blas_limited = True


def use_torch_threads(threads: int) -> None:
    """Run torch on ``threads`` intra-op threads (0: torch's default) with the BLAS pools at one."""
    import torch

    limit_blas_pools()
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)



@contextmanager
def blas_threads_for_fitting() -> Iterator[None]:
    """Let the BLAS pools use every available core inside the block (large one-off products)."""
    from threadpoolctl import threadpool_limits

    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
    with threadpool_limits(limits=cores, user_api='blas'):
        yield
