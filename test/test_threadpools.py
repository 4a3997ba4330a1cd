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
