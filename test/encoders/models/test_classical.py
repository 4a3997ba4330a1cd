import numpy as np
import pytest

from test.helpers import textured_frames
from vpr_ros.encoders import create_encoder
from vpr_ros.encoders.aggregators.vlad import normalize_vlad, vlad


def _checker_images(n):
    rng = np.random.default_rng(3)
    out = []
    for _ in range(n):
        img = np.zeros((120, 160, 3), np.uint8)
        for _ in range(40):
            x, y = rng.integers(0, 150), rng.integers(0, 110)
            img[y:y + rng.integers(4, 20), x:x + rng.integers(4, 20)] = rng.integers(0, 255, 3)
        out.append(img)
    return out


def test_vlad_known_assignment():
    centers = np.array([[0.0, 0.0], [10.0, 0.0]], np.float32)
    desc = np.array([[1.0, 0.0], [0.0, 2.0], [11.0, 1.0]], np.float32)
    v = vlad(desc, centers, cosine=False).reshape(2, 2)
    # word 0 residual sum (1, 2), word 1 (1, 1): each intra-normalised, then global L2 (two unit blocks)
    expected = np.array([[1, 2] / np.sqrt(5), [1, 1] / np.sqrt(2)]) / np.sqrt(2)
    assert np.allclose(v, expected, atol=1e-6)


def test_normalize_vlad_power_and_empty_words():
    v = normalize_vlad(np.array([4.0, 0.0, 0.0, 0.0], np.float32), 2, power=True)
    assert np.allclose(v, [1, 0, 0, 0])


@pytest.mark.parametrize('name,config', [('sift_vlad', {'num_clusters': 8}), ('orb_bovw', {'num_words': 30})])
def test_fitted_encoders_roundtrip_state(name, config):
    imgs = _checker_images(8)
    enc = create_encoder(name, config)
    enc.fit(imgs)
    d = enc.encode(imgs)
    assert d.shape[0] == 8 and np.isfinite(d).all()
    again = create_encoder(name, config, enc.get_state())
    assert np.allclose(again.encode(imgs), d)
    assert int(np.argmax(d[2] @ d.T)) == 2


def test_raw_pixels_is_contrast_invariant():
    img = textured_frames(1, size=(48, 64))[0].rgb
    enc = create_encoder('raw_pixels')
    img = img // 2
    brighter = img + 60
    assert float((enc.encode([img]) @ enc.encode([brighter]).T)[0, 0]) > 0.95
