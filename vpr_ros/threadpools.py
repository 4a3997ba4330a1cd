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

A shared CPU (a robot's node runs beside SLAM and drivers). torch's OpenMP runtime is GNU
libgomp (faiss brings another copy); by default its idle threads spin for ~300,000 iterations at
every barrier, and a forward has hundreds of barriers. With one competing busy process on two
cores, a thread that shares its core with that process holds every barrier while its partner
spins on the other core (issue 11: effnet_gem p50 65 -> 284 ms a frame on 2 threads, 105 -> 107
ms on one). Two measures, each applied by every entry point (``import vpr_ros`` does the first):

- ``OMP_WAIT_POLICY=PASSIVE`` with ``GOMP_SPINCOUNT=300000`` before any OpenMP runtime loads
  (libgomp reads them once, at load; ``KMP_BLOCKTIME`` is Intel's runtime and has no effect here):
  idle threads spin briefly, then sleep, never unbounded.
- ``threads: 0`` (the default) adapts torch's thread count to the cores other processes leave
  free, measured from ``/proc/stat`` minus this process's own CPU time at most every
  ``FreeCores.interval`` s: two threads where two cores are free, one beside a busy process.
  A positive ``threads`` is a fixed count (results then repeat bit for bit; an adapted count
  may change the last bits between calls, like any other thread count).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

_blas_limited = False
BARRIER_SPINS = 300_000


def prefer_passive_openmp() -> None:
    """Make OpenMP threads sleep instead of spinning when idle, unless the user chose a policy.

    Must run before torch or faiss loads its OpenMP runtime; ``vpr_ros/__init__.py`` calls it.
    """
    if 'OMP_WAIT_POLICY' in os.environ or 'GOMP_SPINCOUNT' in os.environ:
        return
    loaded = [name for name in ('torch', 'faiss') if name in sys.modules]
    os.environ['OMP_WAIT_POLICY'] = 'PASSIVE'
    # A bounded spin before sleeping (libgomp's own default): measured quiet, 2 threads took 72 ms a
    # frame with no spin at all against 34 ms with it; the adapted thread count is what keeps
    # threads from spinning beside busy processes (one thread has no barrier to wait at).
    os.environ['GOMP_SPINCOUNT'] = str(BARRIER_SPINS)
    if loaded:
        logger.warning('%s was imported before vpr_ros: its OpenMP threads keep spin-waiting, which slows '
                       'every frame on a shared CPU. Import vpr_ros first or set OMP_WAIT_POLICY=PASSIVE.',
                       ' and '.join(loaded))


def available_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)


def max_torch_threads() -> int:
    """The ceiling of an adapted thread count: ``OMP_NUM_THREADS`` when set, else the available cores."""
    try:
        return max(1, int(os.environ.get('OMP_NUM_THREADS', '').split(',')[0]))
    except ValueError:
        return available_cores()


def _machine_busy_seconds() -> float | None:
    """CPU seconds the cores this process may use have been busy since boot (/proc/stat), or None."""
    mine = os.sched_getaffinity(0) if hasattr(os, 'sched_getaffinity') else None
    busy = 0
    try:
        with open('/proc/stat', encoding='ascii') as fh:
            for line in fh:
                name, *fields = line.split()
                if not name.startswith('cpu') or name == 'cpu':
                    continue
                if mine is not None and int(name[3:]) not in mine:
                    continue
                values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                busy += sum(values) - values[3] - values[4]
    except (OSError, ValueError, IndexError):
        return None
    return busy / os.sysconf('SC_CLK_TCK') if busy else None


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class FreeCores:
    """The cores other processes leave free: machine busy time from ``/proc/stat`` minus this
    process's own CPU time, over windows of at least ``interval`` seconds."""

    interval = 0.3

    def __init__(self, busy: Callable[[], float | None] = _machine_busy_seconds,
                 own: Callable[[], float] = _own_cpu_seconds, clock: Callable[[], float] = time.monotonic,
                 cores: Callable[[], int] = available_cores,
                 ceiling: Callable[[], int] = max_torch_threads) -> None:
        self._busy, self._own, self._clock, self._cores, self._ceiling = busy, own, clock, cores, ceiling
        self._last: tuple[float, float, float] | None = None
        self._free: float | None = None

    def sample(self) -> float | None:
        """Free cores over the last finished window (None before the first window or without /proc)."""
        now = self._clock()
        if self._last is not None and now - self._last[0] < self.interval:
            return self._free  # /proc/stat is read once per window, not per frame
        busy = self._busy()
        if busy is None:
            return None
        own = self._own()
        if self._last is None:
            self._last = (now, busy, own)
        else:
            t0, busy0, own0 = self._last
            others = max(0.0, (busy - busy0) - (own - own0)) / (now - t0)
            self._free = max(0.0, self._cores() - others)
            self._last = (now, busy, own)
        return self._free

    def threads(self) -> int:
        """Threads worth running: the cores with at least half a core free, at least one."""
        ceiling, free = self._ceiling(), self.sample()
        if free is None:
            return ceiling
        return max(1, min(ceiling, int(free + 0.5)))


_free_cores = FreeCores()


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


def pool_threads(threads: int) -> int:
    """The intra-op thread count to run now: ``threads`` when positive, else the free cores."""
    return threads if threads > 0 else _free_cores.threads()


def use_torch_threads(threads: int) -> None:
    """Run torch on ``threads`` intra-op threads (0: as many as there are free cores) with the BLAS
    pools at one."""
    import torch

    limit_blas_pools()
    wanted = pool_threads(threads)
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


@contextmanager
def blas_threads_for_fitting() -> Iterator[None]:
    """Let the BLAS pools use every available core inside the block (large one-off products)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=available_cores(), user_api='blas'):
        yield
