"""TorchEncoder preprocessing: every image keeps its own input size in a batch, and the encoders whose
release resizes the float image do so (``resize_uint8: false``) while older maps keep the rounding."""
from __future__ import annotations

import numpy as np
import pytest

from test.helpers import blob_image
from vpr_ros.encoders import create_encoder
from vpr_ros.encoders.base import encoder_class
from vpr_ros.encoders.torch_encoder import IMAGENET_MEAN, IMAGENET_STD, resize_rgb, to_tensor_batch
from vpr_ros.errors import ConfigError, MapError, VprError
from vpr_ros.localization import Localizer, encoder_for_map
from vpr_ros.mapdb.store import VprMap

# Descriptors are unit vectors; the same image computed in batches of other compositions agrees to
# float32 rounding, far below what a resize to another image's size changes (checked below).
SAME_IMAGE_TOL = 1e-5


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(1.0 - np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope='module')
def megaloc():
    return create_encoder('megaloc', {'batch_size': 8})


# megaloc rounds each side to a multiple of 14 (126x126, 140x112, 112x168: all above 64 patches, which
# SALAD's 64 clusters need); effnet_gem with image_size null uses every image at its own size.
CASES = {'megaloc': [(120, 130), (140, 112), (112, 170)],
         'effnet_gem': [(120, 160), (96, 128), (150, 100)]}


def encoder_for(name: str, megaloc):
    return megaloc if name == 'megaloc' else create_encoder('effnet_gem', {'image_size': None})


@pytest.mark.parametrize('name', sorted(CASES))
def test_a_batch_keeps_every_image_its_own_size(name, megaloc):
    enc = encoder_for(name, megaloc)
    images = [blob_image(seed, size) for seed, size in enumerate(CASES[name])]
    alone = np.concatenate([enc.encode([im]) for im in images])
    for batch_size in (8, 2):
        enc.config['batch_size'] = batch_size
        mixed = enc.encode([images[0], images[1], images[2], images[0]])
        for got, want in zip(mixed, [*alone, alone[0]]):
            assert cosine_distance(got, want) < SAME_IMAGE_TOL
    enc.config['batch_size'] = 8
    # What the batch used to do: image 1 resized to image 0's input size moves its descriptor well
    # beyond the tolerance, so the check above can fail.
    squeezed = enc.encode([resize_rgb(images[1], enc.target_size(images[0].shape), enc.interpolation)])
    assert cosine_distance(squeezed[0], alone[1]) > 10 * SAME_IMAGE_TOL


def test_preprocess_takes_one_size_only(megaloc):
    with pytest.raises(VprError, match='one input size'):
        megaloc.preprocess([blob_image(0, (120, 130)), blob_image(1, (140, 112))])
    # sizes that round to the same multiple of 14 form one batch
    assert tuple(megaloc.preprocess([blob_image(0, (120, 130)), blob_image(1, (130, 120))]).shape) == (
        2, 3, 126, 126)


def test_float_resize_keeps_the_fractions_the_uint8_resize_rounds_away():
    image = np.random.default_rng(4).integers(0, 256, (97, 131, 3), dtype=np.uint8)

    def grey_levels(float_resize: bool) -> np.ndarray:
        x = to_tensor_batch([image], (56, 70), 'area', float_resize=float_resize)[0].numpy()
        return (x.transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN) * 255.0

    rounded, exact = grey_levels(False), grey_levels(True)
    np.testing.assert_allclose(rounded, np.round(rounded), atol=1e-3)
    assert np.mean(np.abs(exact - np.round(exact)) > 0.01) > 0.5
    np.testing.assert_allclose(exact, rounded, atol=0.5 + 1e-3)  # rounding to nearest
    same = blob_image(5, (56, 70))  # no resize: nothing to round, both paths agree
    np.testing.assert_allclose(to_tensor_batch([same], (56, 70), float_resize=True).numpy(),
                               to_tensor_batch([same], (56, 70), float_resize=False).numpy(), atol=1e-6)


def test_which_encoders_resize_in_float():
    # The releases resizing the ToTensor'd image (MegaLoc forward, BoQ transform, the DVGL benchmark of
    # NetVLAD/GeM) against those resizing a PIL image (SALAD, MixVPR, Conv-AP, CosPlace/EigenPlaces).
    for name in ('megaloc', 'boq', 'netvlad', 'gem'):
        cls = encoder_class(name)
        assert cls.default_config['resize_uint8'] is False and cls.legacy_config == {'resize_uint8': True}
    for name in ('salad', 'mixvpr', 'convap', 'cosplace', 'effnet_gem'):
        assert 'resize_uint8' not in encoder_class(name).default_config
    with pytest.raises(ConfigError, match='resize_uint8 must be true or false'):
        create_encoder('gem', {'image_size': [64, 64], 'resize_uint8': 'yes'})


def test_a_map_from_before_float_resizing_keeps_its_rounding_and_refuses_the_new_one():
    cfg = {'backbone': 'resnet18', 'image_size': [64, 64], 'threads': 2}
    images = [blob_image(7, (90, 120)), blob_image(8, (90, 120))]
    old = create_encoder('gem', {**cfg, 'resize_uint8': True})
    identity = old.identity()
    del identity['config']['resize_uint8']  # what a map written before the key existed records
    vmap = VprMap.empty(identity)
    loaded = encoder_for_map(vmap, {'threads': 2})
    assert loaded.config['resize_uint8'] is True
    np.testing.assert_allclose(loaded.encode(images), old.encode(images), rtol=0, atol=1e-6)
    new = create_encoder('gem', cfg)
    assert cosine_distance(new.encode(images)[0], old.encode(images)[0]) > 0  # a real change
    with pytest.raises(MapError, match='resize_uint8'):
        Localizer(VprMap.empty(identity), new)
