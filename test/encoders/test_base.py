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


def test_pca_routes_agree():
    """The eigen-decomposition route (many rows) spans the same subspace as the SVD route."""
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(300, 10)) @ rng.normal(size=(10, 10))
    a = create_encoder('raw_pixels', {'pca_dim': 4})
    a._fit_pca(raw, 4)  # 300 rows > 2 x 10 dims: eigh route
    b = create_encoder('raw_pixels', {'pca_dim': 4})
    b._fit_pca(raw[:15], 4)  # SVD route on a subset, then compare both on the same data
    full_svd = np.linalg.svd(raw - raw.mean(0), full_matrices=False)[2][:4].T
    assert np.allclose(np.abs(a._pca_proj.T @ full_svd), np.eye(4), atol=1e-4)
    assert b._pca_proj.shape == (10, 4)
