import numpy as np
import pytest

from test.helpers import FLOAT32_ATOL
from vpr_ros.encoders import create_encoder
from vpr_ros.encoders.backbones.dense import DenseFeatures, vocabulary_sample
from vpr_ros.errors import ConfigError, VprError, WeightsError

# A fixed thread count: 0 would adapt it to the free cores and the strict determinism check needs one count.
SMALL = {'image_size': [96, 128], 'batch_size': 4, 'threads': 2}


def texture(seed):
    import cv2

    small = np.random.default_rng(seed).integers(0, 255, (6, 8, 3)).astype(np.uint8)
    return cv2.resize(small, (160, 120), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope='module')
def fitted():
    encoder = create_encoder('anyloc_vlad', SMALL)
    encoder.fit([texture(i) for i in range(3)])
    return encoder


def test_encode_shape_norm_and_determinism(fitted):
    assert fitted.dim == fitted.raw_dim == 32 * 112
    x = fitted.encode([texture(0), texture(1), texture(0)])
    assert x.shape == (3, 3584) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    # the same call: identical; another place in the batch: rounding only
    np.testing.assert_array_equal(fitted.encode([texture(0), texture(1), texture(0)]), x)
    np.testing.assert_allclose(x[0], x[2], atol=FLOAT32_ATOL)
    assert x[0] @ x[1] < 0.99


def test_state_round_trip_and_unfitted(fitted):
    state = fitted.get_state()
    assert state['centers'].shape == (32, 112)
    assert fitted.config['centres'] == 'unit'  # the default (measured): spherical k-means
    np.testing.assert_allclose(np.linalg.norm(state['centers'], axis=1), 1, atol=1e-5)
    clone = create_encoder('anyloc_vlad', SMALL, state)
    np.testing.assert_allclose(clone.encode([texture(5)]), fitted.encode([texture(5)]), atol=1e-6)
    with pytest.raises(VprError):
        create_encoder('anyloc_vlad', SMALL).encode([texture(0)])
    with pytest.raises(ConfigError):
        create_encoder('anyloc_vlad', {**SMALL, 'num_clusters': 16}, state)


def test_official_form_descriptor_is_the_reference_vlad():
    """centres: mean -- encode() == the official formula over the encoder's own features and centres."""
    fitted = create_encoder('anyloc_vlad', {**SMALL, 'centres': 'mean'})
    fitted.fit([texture(i) for i in range(3)])
    assert (np.linalg.norm(fitted.get_state()['centers'], axis=1) < 1 - 1e-3).any()  # plain means
    feats = fitted.dense.extract([texture(7)])[0].reshape(-1, 112).astype(np.float64)
    c = fitted.get_state()['centers'].astype(np.float64)
    labels = np.argmax(feats @ (c / np.linalg.norm(c, axis=1, keepdims=True)).T, axis=1)
    ref = np.zeros((32, 112))
    for k in set(labels.tolist()):
        s = (feats[labels == k] - c[k]).sum(axis=0)
        ref[k] = s / np.linalg.norm(s)
    ref = ref.ravel() / np.linalg.norm(ref)
    np.testing.assert_allclose(fitted.encode([texture(7)])[0], ref, atol=1e-4)


def test_unknown_centres_form():
    with pytest.raises(ConfigError, match='centres'):
        create_encoder('anyloc_vlad', {**SMALL, 'centres': 'median'})


def test_same_vocabulary_as_segvlad(fitted):
    seg = create_encoder('segvlad', {**SMALL, 'pca_dim': 0})
    seg.fit([texture(i) for i in range(3)])
    np.testing.assert_allclose(seg.get_state()['centers'], fitted.get_state()['centers'], atol=1e-6)


def test_dense_features_grid():
    dense = DenseFeatures('efficientnet_lite0', None, (96, 128))
    assert (dense.dim, dense.stride, dense.grid) == (112, 16, (6, 8))
    f = dense.extract([texture(0)])
    assert f.shape == (1, 6, 8, 112)
    np.testing.assert_allclose(np.linalg.norm(f, axis=-1), 1, atol=1e-5)
    head = DenseFeatures('efficientnet_lite0', 'head', (96, 128))
    assert (head.dim, head.stride, head.grid) == (1280, 32, (3, 4))
    assert DenseFeatures('efficientnet_lite0', 7, (96, 128)).dim == 80


def test_vocabulary_sample_rules():
    maps = [np.full((4, 6, 3), i + 1, np.float32) for i in range(10)]
    assert vocabulary_sample(maps).shape == (240, 3)
    sub = vocabulary_sample(maps, seed=42, max_images=5)  # 30 % of the images, every 2nd patch
    assert sub.shape == (3 * 2 * 3, 3)
    np.testing.assert_allclose(np.linalg.norm(sub, axis=1), 1, atol=1e-6)


@pytest.fixture(scope='module')
def resnet18_weights(tmp_path_factory):
    """A torchvision-layout ResNet-18 checkpoint (random values; the layout is what loads strictly)."""
    import torch

    from vpr_ros.encoders.backbones.resnet import ResNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('weights') / 'resnet18.pth'
    torch.save(ResNet(18, 'layer4').state_dict(), path)
    return str(path)


@pytest.mark.parametrize('layer, dim, stride, grid', [(None, 256, 16, (6, 8)), ('layer4', 512, 32, (3, 4))])
def test_resnet_dense_features(resnet18_weights, layer, dim, stride, grid):
    dense = DenseFeatures('resnet18', layer, (96, 128), weights=resnet18_weights)
    assert (dense.dim, dense.stride, dense.grid) == (dim, stride, grid)
    f = dense.extract([texture(0)])
    assert f.shape == (1, *grid, dim)
    np.testing.assert_allclose(np.linalg.norm(f, axis=-1), 1, atol=1e-5)


def test_dinov2_vits14_dense_features(tmp_path):
    import torch

    from vpr_ros.encoders.backbones.dinov2 import dinov2_vits14

    torch.manual_seed(0)
    torch.save(dinov2_vits14().state_dict(), tmp_path / 'vits14.pth')
    dense = DenseFeatures('dinov2_vits14', None, (56, 70), weights=str(tmp_path / 'vits14.pth'))
    assert (dense.dim, dense.stride, dense.grid, dense.layer) == (384, 14, (4, 5), 9)
    f = dense.extract([texture(0)])
    assert f.shape == (1, 4, 5, 384)
    np.testing.assert_allclose(np.linalg.norm(f, axis=-1), 1, atol=1e-5)


def test_segvlad_over_a_resnet_backbone(resnet18_weights):
    seg = create_encoder('segvlad', {**SMALL, 'backbone': 'resnet18', 'backbone_weights': resnet18_weights,
                                     'segments': 16, 'pca_dim': 8})
    seg.fit([texture(i) for i in range(3)])
    assert seg.raw_dim == 32 * 256
    vectors = seg.describe([texture(4)])[0]
    assert vectors.shape[1] == 8 and len(vectors) > 4
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_backbone_errors(resnet18_weights):
    with pytest.raises(WeightsError, match='backbone_weights'):
        create_encoder('anyloc_vlad', {'backbone': 'dinov2_vitb14', 'image_size': [224, 224]})
    with pytest.raises(WeightsError, match='backbone_weights: PATH to the torchvision ImageNet resnet50'):
        create_encoder('anyloc_vlad', {'backbone': 'resnet50'})
    with pytest.raises(WeightsError):  # a ResNet-18 file is not a ResNet-50
        create_encoder('anyloc_vlad', {'backbone': 'resnet50', 'backbone_weights': resnet18_weights})
    with pytest.raises(ConfigError, match='"layer3" or "layer4"'):
        create_encoder('anyloc_vlad',
                       {'backbone': 'resnet18', 'layer': 2, 'backbone_weights': resnet18_weights})
    with pytest.raises(ConfigError, match='unknown dense backbone'):
        create_encoder('anyloc_vlad', {'backbone': 'vgg16'})
    with pytest.raises(ConfigError, match='block index'):
        create_encoder('anyloc_vlad', {'layer': 99})


def big_texture(seed, size=(480, 640)):
    import cv2

    return cv2.resize(texture(seed), size[::-1], interpolation=cv2.INTER_CUBIC)


@pytest.mark.parametrize('pca_dim', [0, 2])
def test_the_fit_on_fit_images_is_the_fit_on_the_full_frames(pca_dim):
    # build-map keeps its up to 400 fit frames as fit_image() returns them (the input size): the
    # vocabulary and PCA must be exactly those of the full frames
    full = [big_texture(i) for i in range(3)]
    on_full, on_small = (create_encoder('anyloc_vlad', {**SMALL, 'pca_dim': pca_dim}) for _ in range(2))
    small = [on_small.fit_image(im) for im in full]
    assert {im.shape for im in small} == {(96, 128, 3)}
    on_full.fit(full)
    on_small.fit(small)
    a, b = on_full.get_state(), on_small.get_state()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_fit_image_is_never_enlarged(fitted):
    im = texture(0)[:60, :80]
    assert fitted.fit_image(im) is im
