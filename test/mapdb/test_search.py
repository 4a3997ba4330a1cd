import numpy as np
import pytest

from vpr_ros.encoders.base import l2_normalize
from vpr_ros.frames import Pose
from vpr_ros.mapdb.search import SEGMENT_K, vote_places
from vpr_ros.mapdb.store import VprMap

IDENTITY = {'name': 'fake_multi', 'config': {}, 'weights_fingerprint': 'none', 'dim': 16,
            'multi_vector': True}


def test_vote_places_min_max_normalised_sum():
    scores = np.array([[0.9, 0.5], [0.7, 0.1]])
    owners = np.array([[0, 1], [1, -1]])  # -1: no hit; its score must not enter the min-max
    np.testing.assert_allclose(vote_places(scores, owners, 3), [1.0, 0.0 + 0.5, 0.0])


def test_vote_places_counts_every_hit():
    scores = np.array([[0.8, 0.6, 0.4], [0.8, 0.4, 0.4]])
    owners = np.array([[2, 2, 0], [2, 1, 0]])
    np.testing.assert_allclose(vote_places(scores, owners, 3), [0.0, 0.0, 1.0 + 0.5 + 1.0])


def test_vote_places_degenerate():
    np.testing.assert_array_equal(vote_places(np.ones((2, 2)), np.full((2, 2), -1), 2), [0, 0])
    np.testing.assert_array_equal(vote_places(np.full((1, 3), 0.7), np.array([[0, 0, 1]]), 2), [2, 1])


def multi_map(dtype='float32', index='flat'):
    """4 places with 3-6 vectors each, every place's vectors spread around its own direction."""
    rng = np.random.default_rng(0)
    vmap = VprMap.empty(IDENTITY, dtype=dtype, index=index)
    centres = l2_normalize(rng.normal(size=(4, 16)))
    sets = [l2_normalize(c + 0.3 * rng.normal(size=(n, 16))) for c, n in zip(centres, (3, 5, 4, 6))]
    for i, vectors in enumerate(sets):
        vmap.add(float(i), Pose.from_xy_yaw(i, 0, 0), vectors)
    return vmap, sets


@pytest.mark.parametrize(('dtype', 'index'), [('float32', 'flat'), ('float16', 'flat'),
                                              ('float16', 'hnsw16'), ('float16', 'ivf2')])
def test_multi_vector_search_save_load(tmp_path, dtype, index):
    vmap, sets = multi_map(dtype, index)
    assert len(vmap) == 4 and vmap.meta.vectors == 18
    np.testing.assert_array_equal(vmap.owners, np.repeat(np.arange(4), [3, 5, 4, 6]))
    rng = np.random.default_rng(1)
    query = l2_normalize(sets[2][:3] + 0.05 * rng.normal(size=(3, 16)))
    best = vmap.search(query, 2)
    assert best[0].place_id == 2 and best[0].score >= best[-1].score
    assert best[0].pose.position[0] == 2.0
    vmap.save(str(tmp_path / 'm'))
    loaded = VprMap.load(str(tmp_path / 'm'), IDENTITY)
    assert loaded.meta.multi_vector and loaded.meta.vectors == 18 and loaded.meta.index == index
    assert [m.place_id for m in loaded.search(query, 4)] == [m.place_id for m in vmap.search(query, 4)]
    assert all(m.place_id != 2 for m in loaded.search(query, 4, exclude={2}))
    assert loaded.search(np.zeros((0, 16), np.float32), 3) == []


def test_search_with_more_map_vectors_than_segment_k():
    rng = np.random.default_rng(2)
    vmap = VprMap.empty(IDENTITY)
    target = l2_normalize(rng.normal(size=(1, 16)))
    for i in range(30):
        vectors = l2_normalize(rng.normal(size=(4, 16)))
        if i == 17:
            vectors = l2_normalize(target + 0.2 * rng.normal(size=(4, 16)))
        vmap.add(float(i), None, vectors)
    assert len(vmap.owners) > SEGMENT_K
    query = l2_normalize(target + 0.2 * rng.normal(size=(2, 16)))
    assert vmap.search(query, 1)[0].place_id == 17


def test_votes_favour_places_with_more_segments_when_all_are_retrieved():
    """A property of the official scoring worth knowing: no per-place normalisation, so when the
    map is so small that every query vector retrieves every map vector, places with more
    segments collect more votes even if another place holds the single best match."""
    rng = np.random.default_rng(4)
    vmap = VprMap.empty(IDENTITY)
    target = l2_normalize(rng.normal(size=(1, 16)))
    vmap.add(0.0, None, target)
    vmap.add(1.0, None, l2_normalize(rng.normal(size=(12, 16))))
    assert vmap.search(target, 2)[0].place_id == 1


@pytest.mark.parametrize(('dtype', 'index'),
                         [('float32', 'flat'), ('float16', 'flat'), ('float32', 'hnsw16')])
def test_ranking_with_the_row_is_the_index_search(dtype, index):
    """Sequence matching takes the single-frame ranking and the similarity row in one call; on a flat
    map the ranking comes from the row (one pass). Same places, same order, scores within float32
    rounding, exclusions honoured, for every index kind."""
    from vpr_ros.mapdb.search import rank_places, rank_places_with_row

    rng = np.random.default_rng(3)
    identity = {**IDENTITY, 'dim': 64, 'multi_vector': False}
    vmap = VprMap.empty(identity, dtype=dtype, index=index)
    for i, v in enumerate(l2_normalize(rng.normal(size=(300, 64)))):
        vmap.add(float(i), None, v[None])
    for trial in range(20):
        query = l2_normalize(rng.normal(size=(1, 64))).astype(np.float32)
        exclude = set(rng.choice(300, size=trial, replace=False).tolist())
        ranked, row = rank_places_with_row(vmap, query, 7, exclude)
        expected = rank_places(vmap, query, 7, exclude)
        assert [p for p, _ in ranked] == [p for p, _ in expected]
        np.testing.assert_allclose([s for _, s in ranked], [s for _, s in expected], atol=1e-5)
        np.testing.assert_allclose(row, vmap.descriptors.astype(np.float32) @ query[0], atol=1e-5)
        assert not exclude & {p for p, _ in ranked}
    assert rank_places_with_row(vmap, query, 500, set(range(299)))[0] == [(299, pytest.approx(row[299]))]
