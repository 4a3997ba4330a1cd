import numpy as np
import pytest

from test.helpers import textured_frames
from vpr_ros.encoders import available_encoders, create_encoder
from vpr_ros.errors import ConfigError, ImageDecodeError, VprError


def test_registry_lists_and_rejects():
    names = available_encoders()
    assert {'effnet_gem', 'sift_vlad', 'orb_bovw', 'raw_pixels'} <= set(names)
    with pytest.raises(ConfigError, match='unknown encoder'):
        create_encoder('nope')
    with pytest.raises(ConfigError, match='unknown config keys'):
        create_encoder('raw_pixels', {'sise': 3})


def test_bad_image_is_a_clear_error():
    with pytest.raises(ImageDecodeError):
        create_encoder('raw_pixels').encode([np.zeros((10, 10), np.uint8)])


def test_pca_whitening_is_fitted_and_stored():
    imgs = [f.rgb for f in textured_frames(12, size=(24, 32))]
    enc = create_encoder('raw_pixels', {'pca_dim': 6, 'pca_whiten': True})
    assert enc.requires_fit and not enc.is_fitted
    with pytest.raises(VprError, match='needs fitting'):
        enc.encode(imgs)
    enc.fit(imgs)
    d = enc.encode(imgs)
    assert d.shape == (12, 6) and np.allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5)
    again = create_encoder('raw_pixels', {'pca_dim': 6, 'pca_whiten': True}, enc.get_state())
    assert np.allclose(again.encode(imgs), d)
    with pytest.raises(ConfigError, match='pca_dim 50'):
        create_encoder('raw_pixels', {'pca_dim': 50}).fit(imgs)


def test_runtime_keys_do_not_change_identity():
    a = create_encoder('raw_pixels', {'threads': 1, 'batch_size': 2}).identity()
    b = create_encoder('raw_pixels', {'threads': 4}).identity()
    assert a == b


@pytest.mark.parametrize('rows, cols', [(300, 10), (8, 20)])  # D x D and N x N Gram routes
def test_pca_matches_the_svd_of_the_centred_data(rows, cols):
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(rows, cols)) @ rng.normal(size=(cols, cols))
    centred = raw - raw.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    plain = create_encoder('raw_pixels', {'pca_dim': 5})
    plain._fit_pca(raw, 5)
    np.testing.assert_allclose(np.abs(plain._pca_proj.T @ vt[:5].T), np.eye(5), atol=1e-4)
    white = create_encoder('raw_pixels', {'pca_dim': 5, 'pca_whiten': True})
    white._fit_pca(raw, 5)
    projected = centred @ white._pca_proj
    np.testing.assert_allclose(projected.var(axis=0, ddof=1), np.ones(5), rtol=1e-3)
    np.testing.assert_allclose(np.abs(projected), np.abs(centred @ vt[:5].T / s[:5] * np.sqrt(rows - 1)),
                               rtol=1e-3, atol=1e-4)


def test_pca_of_rank_deficient_data_leaves_empty_directions_at_zero():
    raw = np.random.default_rng(1).normal(size=(4, 12))  # centred rank 3
    enc = create_encoder('raw_pixels', {'pca_dim': 4})
    enc._fit_pca(raw, 4)
    assert np.all(np.isfinite(enc._pca_proj))
    np.testing.assert_allclose(enc._pca_proj[:, 3], 0.0)
    np.testing.assert_allclose(np.linalg.norm(enc._pca_proj[:, :3], axis=0), 1.0, atol=1e-6)


def test_pca_keeps_pairwise_similarities_informative():
    # PCA is fitted on the representation it is applied to (the L2-normalised raw descriptors):
    # fitting on unnormalised raw_pixels vectors and subtracting that mean from normalised ones
    # collapsed every descriptor onto one direction (all cosines 1.0).
    imgs = [f.rgb for f in textured_frames(12, size=(48, 64))]
    enc = create_encoder('raw_pixels', {'pca_dim': 6})
    enc.fit(imgs)
    d = enc.encode(imgs)
    sims = d @ d.T
    off = sims[~np.eye(len(d), dtype=bool)]
    assert off.max() < 0.99 and off.std() > 0.1
