import numpy as np
import pytest

from vpr_ros.encoders.base import l2_normalize
from vpr_ros.errors import ConfigError
from vpr_ros.mapdb import index as faiss_index


def clustered(n=3000, dim=32, seed=0):
    """Unit vectors around 40 centres: IVF lists get real structure, nearest neighbours are clear."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    x = centres[rng.integers(0, 40, n)] + 0.3 * rng.normal(size=(n, dim))
    return l2_normalize(x).astype(np.float32)


@pytest.mark.parametrize('spec, factory, metric', [
    ('flat', 'Flat', 'ip'), ('fp16', 'SQfp16', 'ip'), ('hnsw16', 'HNSW16,Flat', 'ip'),
    ('hnsw32,fp16', 'HNSW32,SQfp16', 'ip'), ('ivf64', 'IVF64,Flat', 'ip'), ('ivf64,sq8', 'IVF64,SQ8', 'ip'),
    ('ivf64,pq8', 'IVF64,PQ8x8', 'ip'), ('opq8_16,ivf64,pq8', 'OPQ8_16,IVF64,PQ8x8', 'ip'),
    ('opq8,ivf64,pq8', 'OPQ8,IVF64,PQ8x8', 'ip'), ('pca16,ivf64', 'PCA16,IVF64,Flat', 'l2'),
    ('pca16,hnsw16', 'PCA16,HNSW16,Flat', 'l2'), ('pq8', 'PQ8x8', 'ip'),
])
def test_spec_grammar(spec, factory, metric):
    plan = faiss_index.plan_index(spec, 32, 3000)
    assert (plan.factory, plan.metric) == (factory, metric)


def test_search_effort_suffix():
    assert faiss_index.plan_index('ivf64@8', 32, 100).nprobe == 8
    assert faiss_index.plan_index('ivf64', 32, 100).nprobe == faiss_index.DEFAULT_NPROBE
    assert faiss_index.plan_index('hnsw16@200', 32, 100).ef_search == 200


@pytest.mark.parametrize('spec', ['ivf64,pq7', 'ivf64,hnsw', 'pca99,flat', 'ivf64@x', 'hnsw16,pq8',
                                  'ivf64,pq8,flat'])
def test_bad_specs_are_refused(spec):
    with pytest.raises(ConfigError):
        faiss_index.plan_index(spec, 32, 3000)


@pytest.mark.parametrize('spec', ['ivf32,fp16', 'ivf32,pq16', 'opq8,ivf16,pq8', 'pca24,ivf32@16',
                                  'pca24,hnsw16'])
def test_approximate_kinds_find_near_duplicates_with_cosine_scores(spec):
    x = clustered(1500)
    index = faiss_index.build_index(x, spec)
    assert index.ntotal == len(x)
    q = l2_normalize(x[:50] + 0.01 * np.random.default_rng(1).normal(size=x[:50].shape)).astype(np.float32)
    scores, rows = faiss_index.search(index, q, 5)
    exact = q @ x.T
    if 'pq' in spec:  # 8-16 byte codes: the right place among the first few
        assert (rows == np.arange(50)[:, None]).any(axis=1).mean() >= 0.8
    else:
        assert (rows[:, 0] == np.arange(50)).mean() >= 0.9
    # scores are cosine similarities whatever the metric (L2 after PCA, IP otherwise), PQ approximates
    tol = 0.25 if 'pq' in spec else 0.05
    assert np.allclose(scores[:, 0], exact[np.arange(50), rows[:, 0]], atol=tol)
    assert np.all(np.diff(scores, axis=1) <= 1e-5)


def test_trains_on_a_sample_and_adds_in_batches(monkeypatch):
    monkeypatch.setattr(faiss_index, 'PQ_TRAIN_POINTS', 500)
    monkeypatch.setattr(faiss_index, 'TRAIN_POINTS_PER_LIST', 10)
    x = clustered(2000)
    seen = []
    import faiss
    real_train = faiss.IndexIVFFlat.train

    def spy(self, v):
        seen.append(len(v))
        return real_train(self, v)

    monkeypatch.setattr(faiss.IndexIVFFlat, 'train', spy)
    index = faiss_index.build_index(x.astype(np.float16), 'ivf16', add_batch=300)
    assert seen == [500] and index.ntotal == 2000


def test_memory_mapped_read(tmp_path):
    x = clustered(1000)
    for spec in ('flat', 'ivf16', 'ivf16,pq8'):
        path = str(tmp_path / f'{spec}.faiss')
        built = faiss_index.build_index(x, spec)
        faiss_index.write_index(built, path)
        mapped = faiss_index.read_index(path, mmap=True, ivf=faiss_index.is_ivf_spec(spec, 32))
        a, b = faiss_index.search(built, x[:20], 3), faiss_index.search(mapped, x[:20], 3)
        assert np.array_equal(a[1], b[1]) and np.allclose(a[0], b[0], atol=1e-6)


def test_retrain_advice_on_growth_and_imbalance():
    x = clustered(2000)
    index = faiss_index.build_index(x[:400], 'ivf8')
    trained = faiss_index.list_imbalance(index)
    assert faiss_index.retrain_advice(index, 400, trained) is None
    # a new area: many places all falling into a few lists
    far = l2_normalize(np.tile(x[:1], (4000, 1)) + 0.01 * np.random.default_rng(2).normal(size=(4000, 32)))
    index.add(far.astype(np.float32))
    advice = faiss_index.retrain_advice(index, 400, trained)
    assert advice and 'trained with' in advice and 'imbalance' in advice
    assert faiss_index.retrain_advice(faiss_index.build_index(x, 'flat'), 400, None) is None


# ----- every number of a spec is range-checked before faiss sees it (issue 23) ----------------------
@pytest.mark.parametrize('spec', [
    'hnsw0', 'hnsw1', 'hnsw513', 'hnsw99999999999', 'ivf0', 'ivf99999999999', 'ivf' + '9' * 5000,
    'ivf4@0', 'hnsw8@0', 'hnsw8@65537', 'ivf4@' + '9' * 5000, 'hnsw8@1@2', 'hnsw8@', 'flat@5', 'sq8@2',
    'pq0', 'pq33', 'opq0,pq4', 'opq4_0,pq4', 'opq4_33,pq4', 'pca0,flat', 'pca8_2,flat', 'pca16',
    'hnsw\u0663', 'ivf\u00b2', 'lsh', 'LSH', 'nsg32,flat', 'hnsw8_2', 'IVF0,Flat', '', ',', ' @4',
    'ivf4,pq0', 'flat,flat,flat', 5, None])
def test_out_of_range_and_unknown_specs_are_refused_in_one_line(spec):
    with pytest.raises(ConfigError) as err:
        faiss_index.plan_index(spec, 32)
    assert '\n' not in str(err.value) and len(str(err.value)) < 400


@pytest.mark.parametrize('spec, low, high', [
    ('hnsw2', 'hnsw1', 'hnsw512'), ('ivf1', 'ivf0', f'ivf{1 << 20}'), ('ivf4@1', 'ivf4@0', 'ivf4@65536'),
    ('pq1', 'pq0', 'pq32'), ('pca1,flat', 'pca0,flat', 'pca32,flat')])
def test_range_ends_are_accepted_and_one_past_them_refused(spec, low, high):
    faiss_index.plan_index(spec, 32)
    faiss_index.plan_index(high, 32)
    with pytest.raises(ConfigError):
        faiss_index.plan_index(low, 32)


@pytest.mark.parametrize('spec, count', [('ivf64', 63), ('pq8', 255), ('ivf4,pq8', 100),
                                         ('opq8,ivf4,pq8', 100), ('pca24,flat', 23)])
def test_specs_that_need_more_vectors_than_the_map_has_are_refused(spec, count):
    faiss_index.plan_index(spec, 32)  # unknown count (before encoding): only the grammar
    with pytest.raises(ConfigError, match='map'):
        faiss_index.plan_index(spec, 32, count)


@pytest.mark.parametrize('spec', ['hnsw2', 'ivf1', 'ivf4@1', 'hnsw2@1'])
def test_the_smallest_accepted_numbers_build_a_searchable_index(spec):
    x = clustered(300)
    index = faiss_index.build_index(x, spec)
    _, rows = faiss_index.search(index, x[:5], 3)
    assert (rows[:, 0] >= 0).all()


def test_a_training_failure_is_a_config_error_not_a_faiss_traceback():
    with pytest.raises(ConfigError, match='needs at least 256'):
        faiss_index.build_index(clustered(100), 'pq4')
