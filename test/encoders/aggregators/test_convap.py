"""Conv-AP aggregator: released layouts (GSV-Cities ResNet-50 layer4 models) and output."""
import numpy as np
import torch

from vpr_ros.encoders.aggregators.convap import ConvAP


def test_released_dims():
    for out_dim in (8192, 4096, 2048, 512):
        agg = ConvAP(2048, out_dim // 4)
        assert agg.output_dim == out_dim
        shapes = {k: tuple(v.shape) for k, v in agg.state_dict().items()}
        assert shapes == {'channel_pool.weight': (out_dim // 4, 2048, 1, 1),
                          'channel_pool.bias': (out_dim // 4,)}


def test_pooling_layout_is_channel_major():
    agg = ConvAP(1, 2)
    with torch.no_grad():
        agg.channel_pool.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
        agg.channel_pool.bias.zero_()
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = agg(x)[0].detach().numpy()
    quads = np.array([2.5, 4.5, 10.5, 12.5])  # 2x2 means of the 4x4 ramp, row-major
    want = np.concatenate([quads, 2 * quads])
    np.testing.assert_allclose(y, want / np.linalg.norm(want), rtol=1e-6)
