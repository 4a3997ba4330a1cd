"""Vocabularies without a prebuilt map: bootstrapping from the first keyframes, vocabulary: PATH."""
import json

import numpy as np
import pytest

from test.helpers import textured_frames
from vpr_ros.encoders import create_encoder
from vpr_ros.errors import ConfigError, MapError, VprError
from vpr_ros.localization import Localizer
from vpr_ros.mapdb.store import VprMap
from vpr_ros.vocabulary import (
    META_KEY,
    VocabularyBootstrap,
    export_vocabulary,
    load_vocabulary,
    read_vocabulary,
)

# Few words for few patches: with 32 words on 5 x 24 patches, one-patch words leave residuals of
# float noise, so batched and single-image features (equal to 5e-7) give different descriptors.
SMALL = {'image_size': [64, 96], 'batch_size': 4, 'num_clusters': 4}


def empty_localizer(name='anyloc_vlad', config=None):
    encoder = create_encoder(name, config if config is not None else SMALL)
    vmap = VprMap.empty(encoder.identity(), encoder_state=encoder.get_state())
    return Localizer(vmap, encoder, top_k=3)


@pytest.fixture(scope='module')
def frames():
    return textured_frames(6, size=(60, 80))


def test_bootstrap_fits_then_answers(frames, tmp_path):
    loc = empty_localizer()
    boot = VocabularyBootstrap(loc, 5)
    assert not boot.done and '0/5' in boot.status()
    for f in frames[:4]:
        assert boot.offer(f.stamp, f.pose, f.rgb, 'cam') == []
    assert boot.collected == 4 and len(loc.map) == 0
    with pytest.raises(VprError, match='needs fitting'):
        loc.localize(frames[0].rgb, 0.0)
    ids = boot.offer(frames[4].stamp, frames[4].pose, frames[4].rgb, 'cam')
    assert ids == [0, 1, 2, 3, 4] and boot.done and boot.collected == 0
    assert [p.stamp for p in loc.map.places] == [f.stamp for f in frames[:5]]
    assert set(loc.map.encoder_state) == {'centers'} and len(loc.map.thumbnails) == 5
    # the seeded places are exactly what a freshly restored encoder computes for those frames
    fresh = create_encoder('anyloc_vlad', SMALL, loc.map.encoder_state)
    np.testing.assert_allclose(loc.map.descriptors, fresh.encode([f.rgb for f in frames[:5]]), atol=1e-5)
    best = loc.localize(frames[2].rgb, 999.0).best
    assert best.place_id == 2 and best.score > 0.999
    # the grown map is self-contained
    loc.map.save(str(tmp_path / 'grown'))
    again = Localizer.from_map(str(tmp_path / 'grown'))
    assert again.localize(frames[3].rgb, 0.0).best.place_id == 3
    with pytest.raises(ConfigError, match='already fitted'):
        boot.offer(0.0, None, frames[0].rgb)


def test_bootstrap_keyframes_become_loop_queries_after_the_fit(frames):
    """Each seeded keyframe, in time order, with its top-K among the places at least the separation older
    (its own place and newer ones never), its local features, handed out once."""
    loc = empty_localizer()
    boot = VocabularyBootstrap(loc, 5)
    stamps = [0.0, 10.0, 20.0, 30.0, 40.0]
    order = [4, 0, 2, 1, 3]  # offered out of time order: the queries still come in time order
    for i in order:
        boot.offer(stamps[i], frames[i].pose, frames[i].rgb, 'cam', features=f'features {i}')
    queries = boot.loop_queries(separation=15.0)
    assert [t for t, _, _ in queries] == stamps and [f for _, _, f in queries] == [f'features {i}'
                                                                                  for i in range(5)]
    for t, matches, _ in queries:
        assert {m.stamp for m in matches} == {s for s in stamps if s <= t - 15.0}
    assert len(queries[-1][1]) == 3 and queries[0][1] == []  # top_k 3; the first keyframe has nothing older
    assert boot.loop_queries(15.0) == []


def test_bootstrap_segvlad_multi_vector(frames):
    loc = empty_localizer('segvlad', {**SMALL, 'segments': 16, 'pca_dim': 32})
    boot = VocabularyBootstrap(loc, 3)
    for f in frames[:3]:
        ids = boot.offer(f.stamp, f.pose, f.rgb)
    assert ids == [0, 1, 2] and 'pca.proj' in loc.map.encoder_state
    assert loc.localize(frames[1].rgb, 0.0).best.place_id == 1


def test_bootstrap_pca_needs_enough_frames():
    with pytest.raises(ConfigError, match='pca_dim 64 cannot be fitted on 40'):
        VocabularyBootstrap(empty_localizer('raw_pixels', {'pca_dim': 64}), 40)
    with pytest.raises(ConfigError, match='at least 2'):
        VocabularyBootstrap(empty_localizer(), 1)


def test_failed_fit_drops_the_oldest_and_retries():
    loc = empty_localizer('orb_bovw', {'num_words': 50})
    boot = VocabularyBootstrap(loc, 3)
    blank = np.full((60, 80, 3), 127, np.uint8)  # no ORB features at all
    boot.offer(0.0, None, blank)
    boot.offer(1.0, None, blank)
    with pytest.raises(VprError, match='retrying with the next keyframe'):
        boot.offer(2.0, None, blank)
    assert boot.collected == 2 and not boot.done and len(loc.map) == 0


@pytest.fixture(scope='module')
def fitted_map(frames, tmp_path_factory):
    encoder = create_encoder('anyloc_vlad', SMALL)
    encoder.fit([f.rgb for f in frames])
    vmap = VprMap.empty(encoder.identity(), encoder_state=encoder.get_state())
    for f, v in zip(frames, encoder.encode([f.rgb for f in frames])):
        vmap.add(f.stamp, f.pose, v)
    path = str(tmp_path_factory.mktemp('maps') / 'fitted')
    vmap.save(path)
    return path, encoder


def test_vocabulary_from_a_map_and_from_a_file(fitted_map, frames, tmp_path):
    path, reference = fitted_map
    out = str(tmp_path / 'sub' / 'vocab.npz')
    export_vocabulary(path, out)
    with np.load(out, allow_pickle=False) as npz:
        meta = json.loads(str(npz[META_KEY]))
    assert meta['encoder']['name'] == 'anyloc_vlad' and meta['fitted_on']['places'] == 6
    for source in (path, out):
        encoder = create_encoder('anyloc_vlad', SMALL)
        vocab = load_vocabulary(encoder, source)
        assert encoder.is_fitted and vocab.identity['config']['centres'] == 'unit'
        np.testing.assert_array_equal(encoder.get_state()['centers'], reference.get_state()['centers'])
        rgb = [frames[0].rgb]
        np.testing.assert_allclose(encoder.encode(rgb), reference.encode(rgb), atol=1e-6)


def test_mismatched_vocabulary_is_refused_clearly(fitted_map, tmp_path):
    path, _ = fitted_map
    with pytest.raises(ConfigError, match=r'num_clusters: map 4 vs requested 2.*dim: map 448 vs requested 224'):  # noqa: E501
        load_vocabulary(create_encoder('anyloc_vlad', {**SMALL, 'num_clusters': 2}), path)
    with pytest.raises(ConfigError, match="map built with encoder 'anyloc_vlad', requested 'sift_vlad'"):
        load_vocabulary(create_encoder('sift_vlad'), path)
    with pytest.raises(MapError, match='vocabulary not found'):
        read_vocabulary(str(tmp_path / 'nothing.npz'))
    np.savez(tmp_path / 'plain.npz', centers=np.zeros((4, 112), np.float32))
    with pytest.raises(MapError, match='not a vpr_ros vocabulary file'):
        read_vocabulary(str(tmp_path / 'plain.npz'))
    (tmp_path / 'junk.npz').write_bytes(b'not a zip')
    with pytest.raises(MapError, match='cannot read vocabulary file'):
        read_vocabulary(str(tmp_path / 'junk.npz'))


def test_map_without_fitted_state_has_no_vocabulary(frames, tmp_path):
    encoder = create_encoder('raw_pixels')
    vmap = VprMap.empty(encoder.identity())
    vmap.add(0.0, None, encoder.encode([frames[0].rgb])[0])
    vmap.save(str(tmp_path / 'raw'))
    with pytest.raises(MapError, match='no vocabulary to take'):
        read_vocabulary(str(tmp_path / 'raw'))
