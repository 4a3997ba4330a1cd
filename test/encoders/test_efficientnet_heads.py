"""Every trainable head also sits on the EfficientNet-Lite training backbone (real ImageNet weights):
it builds, encodes, and its saved state loads strictly back through ``weights: PATH``."""
import logging

import numpy as np
import pytest
import torch

from vpr_ros.encoders import create_encoder
from vpr_ros.encoders.backbones.efficientnet import lite_weights_path
from vpr_ros.encoders.weights import read_state_dict

HEADS = {  # name -> (extra config, dim)
    'boq': ({}, 256 * 32), 'mixvpr': ({}, 4096), 'netvlad': ({'clusters': 8}, 8 * 112), 'gem': ({}, 1280),
    'avg': ({}, 1280), 'convap': ({'out_dim': 2048}, 2048), 'cosplace': ({'out_dim': 256}, 256),
    'salad': ({}, 8448), 'megaloc': ({}, 8448),
}


@pytest.fixture(scope='module')
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(2)]


@pytest.mark.parametrize('name', sorted(HEADS))
def test_head_on_efficientnet(name, images, tmp_path, caplog):
    extra, dim = HEADS[name]
    cfg = {'backbone': 'efficientnet_lite0', **extra}
    with caplog.at_level(logging.WARNING, logger='vpr_ros.encoders'):
        enc = create_encoder(name, cfg)
    assert 'random initialisation' not in caplog.text  # the backbone is ImageNet-trained
    assert enc.input_size == (240, 320) and enc.dim == dim
    imagenet = read_state_dict(lite_weights_path('lite0'))
    own = enc.model.state_dict()
    assert torch.equal(own['backbone.model._blocks.10._project_conv.weight'],
                       imagenet['_blocks.10._project_conv.weight'])
    if enc.requires_fit:
        enc.fit(images)
    d = enc.encode(images)
    assert d.shape == (2, dim)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    path = tmp_path / 'head.pth'
    torch.save(enc.model.state_dict(), path)
    again = create_encoder(name, {**cfg, 'weights': str(path)})
    assert not again.requires_fit
    np.testing.assert_allclose(again.encode(images), d, atol=1e-5)
    assert again.weights_fingerprint().startswith('sha256:')


@pytest.mark.parametrize('stride,with_token', [(16, False), (32, False), (16, True)])
def test_trunk_split_composes_to_the_trunk(stride, with_token):
    from vpr_ros.encoders.backbones import efficientnet_trunk
    from vpr_ros.errors import ConfigError

    trunk = efficientnet_trunk('efficientnet_lite0', stride, None, with_token).eval()
    keys = set(trunk.state_dict())
    frozen, tail = trunk.split(2)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 3, 96, 128)).astype(np.float32))
    with torch.no_grad():
        whole, parts = trunk(x), tail(frozen(x))
    for a, b in zip(whole if with_token else [whole], parts if with_token else [parts]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)  # same ops; the tail runs channels-last
    assert set(trunk.state_dict()) == keys  # the parts do not re-register the trunk's modules
    assert {id(p) for p in tail.parameters()} <= {id(p) for p in trunk.parameters()}
    with pytest.raises(ConfigError, match='train_blocks'):
        trunk.split(0)
