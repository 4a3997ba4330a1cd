"""Maps that grow by adds and open memory-mapped (issue 14)."""
import numpy as np
import pytest

from vpr_ros.encoders.base import l2_normalize
from vpr_ros.frames import Pose
from vpr_ros.mapdb.store import VprMap

IDENTITY = {'name': 'fake', 'config': {}, 'weights_fingerprint': 'none', 'dim': 16, 'multi_vector': False}


def vectors(n, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, 16))
    return l2_normalize(centres[rng.integers(0, 20, n)] + 0.2 * rng.normal(size=(n, 16))).astype(np.float32)


def built(n, index, seed=0):
    vmap = VprMap.empty(IDENTITY, index=index)
    for i, v in enumerate(vectors(n, seed)):
        vmap.add(float(i), Pose.from_xy_yaw(i, 0, 0), v, 'sess')
    return vmap


@pytest.mark.parametrize('index', ['flat', 'ivf8', 'ivf8,pq4', 'hnsw8'])
def test_memory_mapped_map_searches_grows_and_saves(tmp_path, index):
    vmap = built(600, index)
    path = str(tmp_path / 'm')
    vmap.save(path)
    x = vectors(600)
    mapped = VprMap.load(path, IDENTITY, mmap=True)
    assert isinstance(mapped.descriptors, np.memmap)
    assert [m.place_id for m in mapped.search(x[5], 1)] == [m.place_id for m in vmap.search(x[5], 1)]
    new = l2_normalize(np.ones(16))
    place = mapped.add(1000.0, None, new, 'grown')
    assert mapped.search(new, 1)[0].place_id == place.id  # the read-only mapped index was replaced
    assert len(mapped.descriptors) == 601 and mapped.owners[-1] == place.id
    mapped.save(path)
    again = VprMap.load(path, IDENTITY, mmap=True)
    assert len(again) == 601 and again.index.ntotal == 601
    assert np.allclose(again.descriptors[:600], x, atol=1e-6)


def test_adds_interleaved_with_searches_keep_rows_and_owners_aligned():
    vmap = built(50, 'flat')
    x = vectors(300, seed=3)
    for i, v in enumerate(x):
        vmap.add(100.0 + i, None, v)
        if i % 37 == 0:
            assert vmap.search(v, 1)[0].place_id == 50 + i
    assert vmap.descriptors.shape == (350, 16) and np.array_equal(vmap.owners, np.arange(350))
    assert np.allclose(vmap.descriptors[50:], x)


def test_grown_ivf_map_advises_retraining(tmp_path):
    vmap = built(300, 'ivf8')
    _ = vmap.index  # trained on these 300
    assert vmap.meta.build['index_training']['vectors'] == 300
    assert vmap.retrain_advice() is None
    vmap.save(str(tmp_path / 'm'))
    grown = VprMap.load(str(tmp_path / 'm'))
    for i, v in enumerate(vectors(3100, seed=9)):
        grown.add(1e3 + i, None, v)
    advice = grown.retrain_advice()
    assert advice and '300' in advice
