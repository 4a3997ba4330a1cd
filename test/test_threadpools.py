import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json
from threadpoolctl import threadpool_info
import torch
from vpr_ros.threadpools import use_torch_threads
before = [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']
use_torch_threads(1)
after = [p for p in threadpool_info() if p['user_api'] == 'blas']
print(json.dumps({'before': before, 'after': [(p['filepath'], p['num_threads']) for p in after],
                  'torch': torch.get_num_threads()}))
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason='a one-core machine has one-thread BLAS pools anyway')
def test_use_torch_threads_limits_every_blas_pool_to_one_thread():
    env = {k: v for k, v in os.environ.items() if not k.endswith('_NUM_THREADS')}
    out = subprocess.run([sys.executable, '-c', PROBE], env=env, capture_output=True, text=True, check=True)
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe['torch'] == 1
    libraries = ' '.join(path for path, _ in probe['after'])
    for owner in ('numpy', 'scipy', 'faiss', 'opencv'):
        assert owner in libraries  # the BLAS each of them ships is loaded and seen
    assert all(threads == 1 for _, threads in probe['after'])


def test_a_map_search_leaves_the_openmp_thread_count_as_it_found_it():
    import faiss
    import numpy as np
    import torch

    from vpr_ros.mapdb import index as faiss_index

    vectors = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    idx = faiss_index.build_index(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        scores, rows = faiss_index.search(idx, vectors[:3], 2)
        assert rows[:, 0].tolist() == [0, 1, 2]
        assert torch.get_num_threads() == 2  # faiss and torch share the OpenMP count on these wheels
        assert faiss.omp_get_max_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason='needs two cores to tell one thread from all')
def test_fitting_gets_every_core_back_for_the_block_only():
    from threadpoolctl import threadpool_info

    from vpr_ros.threadpools import blas_threads_for_fitting, limit_blas_pools

    def blas_threads():
        return {p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'}

    limit_blas_pools()
    assert blas_threads() == {1}
    with blas_threads_for_fitting():
        assert blas_threads() == {len(os.sched_getaffinity(0))}
    assert blas_threads() == {1}


def test_every_openmp_runtime_spins_bounded_then_sleeps():
    """libgomp (torch's, faiss's copy) reads its wait policy once, when it loads: vpr_ros sets it first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(('OMP_', 'GOMP_'))}
    env['OMP_DISPLAY_ENV'] = 'VERBOSE'  # every runtime prints the settings it initialised with
    code = ("from vpr_ros.encoders import create_encoder\nimport faiss\n"
            "create_encoder('raw_pixels').encode([__import__('numpy').zeros((8, 8, 3), 'uint8')])\n"
            "import torch\ntorch.ones(64).sum()\n")
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True)
    spin = [line.split('=')[1].strip() for line in out.stderr.splitlines() if 'GOMP_SPINCOUNT' in line]
    assert len(spin) >= 1 and spin == ["'300000'"] * len(spin), out.stderr
    policy = [line.split('=')[1].strip() for line in out.stderr.splitlines() if 'OMP_WAIT_POLICY' in line]
    assert policy == ["'PASSIVE'"] * len(spin), out.stderr


def test_a_policy_the_user_chose_is_kept(monkeypatch):
    from vpr_ros.threadpools import prefer_passive_openmp

    monkeypatch.setenv('OMP_WAIT_POLICY', 'ACTIVE')
    prefer_passive_openmp()
    assert os.environ['OMP_WAIT_POLICY'] == 'ACTIVE'


class FakeMachine:
    """Two cores; ``others`` and ``own`` cores' worth of CPU per second of the fake clock."""

    def __init__(self):
        self.t = self.busy = self.own = 0.0

    def run(self, seconds, others, own):
        self.t += seconds
        self.busy += seconds * (others + own)
        self.own += seconds * own

    def free_cores(self, ceiling=2):
        from vpr_ros.threadpools import FreeCores

        return FreeCores(busy=lambda: self.busy, own=lambda: self.own, clock=lambda: self.t,
                         cores=lambda: 2, ceiling=lambda: ceiling)


def test_the_adapted_thread_count_follows_the_load_of_other_processes():
    m = FakeMachine()
    free = m.free_cores()
    assert free.threads() == 2  # no window measured yet: all the cores
    m.run(0.5, others=0.1, own=1.9)  # we used both cores, the rest of the machine was quiet
    assert free.threads() == 2 and free.sample() == pytest.approx(1.9)
    m.run(0.5, others=0.9, own=1.1)  # a busy process appeared (it gets less than a core beside us)
    assert free.threads() == 1
    m.run(0.1, others=0.0, own=1.0)  # shorter than a window: the last measurement holds
    assert free.threads() == 1
    m.run(0.5, others=2.0, own=0.0)  # two busy processes: still one thread, never zero
    assert free.threads() == 1
    m.run(0.5, others=0.3, own=1.0)  # they stopped; half a core used elsewhere still leaves two
    assert free.threads() == 2
    m.run(0.5, others=0.0, own=2.0)
    assert m.free_cores(ceiling=1).threads() == 1  # OMP_NUM_THREADS=1 caps it


def test_threads_zero_adapts_and_a_positive_count_is_fixed(monkeypatch):
    import torch

    from vpr_ros import threadpools

    m = FakeMachine()
    monkeypatch.setattr(threadpools, '_free_cores', m.free_cores())
    before = torch.get_num_threads()
    try:
        threadpools.use_torch_threads(0)
        assert torch.get_num_threads() == 2
        m.run(0.5, others=1.0, own=1.0)
        threadpools.use_torch_threads(0)
        assert torch.get_num_threads() == 1
        threadpools.use_torch_threads(2)
        assert torch.get_num_threads() == 2  # an explicit count ignores the load
    finally:
        torch.set_num_threads(before)


def test_max_torch_threads_honours_omp_num_threads(monkeypatch):
    from vpr_ros.threadpools import available_cores, max_torch_threads

    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    assert max_torch_threads() == 1
    monkeypatch.delenv('OMP_NUM_THREADS')
    assert max_torch_threads() == available_cores()


def test_importing_torch_before_vpr_ros_is_reported():
    env = {k: v for k, v in os.environ.items() if not k.startswith(('OMP_', 'GOMP_'))}
    out = subprocess.run([sys.executable, '-c', 'import torch\nimport vpr_ros'], env=env, capture_output=True,
                         text=True, check=True)
    assert 'torch was imported before vpr_ros' in out.stderr
