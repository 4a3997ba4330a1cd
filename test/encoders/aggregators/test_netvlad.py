"""NetVLAD aggregator: shapes, norms, a known answer against hard VLAD, and k-means initialisation."""
import numpy as np
import pytest
import torch

from vpr_ros.encoders.aggregators.netvlad import NetVLAD
from vpr_ros.encoders.aggregators.vlad import vlad


def test_released_layouts_and_dims():
    # DVGL ResNet-50 conv4 + NetVLAD: 1024 channels x 64 clusters; VGG-16 conv5_3: 512 x 64.
    for dim, out in ((1024, 65536), (512, 32768), (256, 16384)):
        layer = NetVLAD(dim, 64)
        shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
        assert shapes == {'conv.weight': (64, dim, 1, 1), 'centroids': (64, dim)}
        assert layer.output_dim == out


def test_output_is_unit_norm():
    torch.manual_seed(0)
    y = NetVLAD(32, 8)(torch.randn(3, 32, 5, 7))
    assert y.shape == (3, 256)
    np.testing.assert_allclose(y.norm(dim=1).detach().numpy(), 1.0, atol=1e-5)


def test_hard_assignment_equals_vlad():
    """With a huge alpha the soft assignment is the cosine argmax: NetVLAD == hard VLAD."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(6, 16)).astype(np.float32)
    feats = rng.normal(size=(1, 16, 4, 5)).astype(np.float32)
    layer = NetVLAD(16, 6)
    with torch.no_grad():
        cn = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        layer.conv.weight.copy_(torch.from_numpy(1e4 * cn)[:, :, None, None])
        layer.centroids.copy_(torch.from_numpy(centres))
        got = layer(torch.from_numpy(feats))[0].numpy()
    local = feats[0].reshape(16, -1).T
    local = local / np.linalg.norm(local, axis=1, keepdims=True)
    want = vlad(local, centres, cosine=True)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_hand_made_soft_assignment():
    """Two descriptors, two clusters, zero assignment weights: a_k = 1/2 for both."""
    layer = NetVLAD(2, 2)
    with torch.no_grad():
        layer.conv.weight.zero_()
        layer.centroids.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        x = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (1, C=2, H=1, W=2): x1=(1,0), x2=(0,1)
        y = layer(x)[0]
    # V_1 = 0.5*((1,0)-(1,0)) + 0.5*((0,1)-(1,0)) = (-0.5, 0.5); V_2 = (0.5, -0.5);
    # each -> unit, then /sqrt(2).
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(y.numpy(), np.array([-s, s, s, -s]) * s, atol=1e-6)


def test_init_from_kmeans_sets_alpha_and_weights():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 8))
    desc = np.concatenate([b + 0.05 * rng.normal(size=(60, 8)) for b in base]).astype(np.float32)
    layer = NetVLAD(8, 4)
    alpha = layer.init_from_kmeans(desc, niter=20)
    assert alpha > 0 and layer.alpha == alpha
    c = layer.centroids.detach().numpy()
    w = layer.conv.weight.detach().numpy()[:, :, 0, 0]
    np.testing.assert_allclose(w, alpha * c / np.linalg.norm(c, axis=1, keepdims=True), rtol=1e-5)
    # recompute alpha from its definition
    x = desc / np.linalg.norm(desc, axis=1, keepdims=True)
    dots = np.sort(x @ (c / np.linalg.norm(c, axis=1, keepdims=True)).T, axis=1)
    assert alpha == pytest.approx(-np.log(0.01) / np.mean(dots[:, -1] - dots[:, -2]), rel=1e-4)


def test_init_rejects_wrong_dim():
    from vpr_ros.errors import VprError
    with pytest.raises(VprError, match=r'\(N, 8\)'):
        NetVLAD(8, 4).init_from_kmeans(np.zeros((100, 5), np.float32))
