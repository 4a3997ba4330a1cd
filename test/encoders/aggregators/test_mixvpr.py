"""MixVPR aggregator: released configs, parameter count, key layout, mixer residual."""
import numpy as np
import pytest
import torch

from vpr_ros.encoders.aggregators.mixvpr import FeatureMixerLayer, MixVPR
from vpr_ros.errors import VprError


def test_released_4096_config_params_and_keys():
    agg = MixVPR(in_channels=1024, in_h=20, in_w=20, out_channels=1024, mix_depth=4, mlp_ratio=1, out_rows=4)
    assert agg.output_dim == 4096
    n = sum(p.numel() for p in agg.parameters())
    assert n == 2_337_604 and round(n / 1e6, 2) == 2.34
    shapes = {k: tuple(v.shape) for k, v in agg.state_dict().items()}
    assert len(shapes) == 4 * 6 + 4
    assert shapes['mix.0.mix.0.weight'] == (400,)  # LayerNorm over h*w
    assert shapes['mix.3.mix.1.weight'] == (400, 400)
    assert shapes['mix.3.mix.3.bias'] == (400,)
    assert shapes['channel_proj.weight'] == (1024, 1024)
    assert shapes['row_proj.weight'] == (4, 400) and shapes['row_proj.bias'] == (4,)


@pytest.mark.parametrize('out_channels,out_rows,dim', [(256, 2, 512), (64, 2, 128)])
def test_other_released_dims(out_channels, out_rows, dim):
    assert MixVPR(out_channels=out_channels, out_rows=out_rows).output_dim == dim


def test_forward_small():
    torch.manual_seed(0)
    agg = MixVPR(in_channels=16, in_h=3, in_w=4, out_channels=8, mix_depth=2, out_rows=3)
    y = agg(torch.randn(2, 16, 3, 4))
    assert y.shape == (2, 24)
    np.testing.assert_allclose(y.norm(dim=1).detach().numpy(), 1.0, atol=1e-6)
    with pytest.raises(VprError, match='16x3x4'):
        agg(torch.randn(1, 16, 4, 4))


def test_mixer_is_residual_with_zero_init_bias():
    layer = FeatureMixerLayer(6)
    with torch.no_grad():
        layer.mix[3].weight.zero_()
    x = torch.randn(2, 5, 6)
    torch.testing.assert_close(layer(x), x)
    assert all(m.bias.abs().sum().item() == 0 for m in (layer.mix[1], layer.mix[3]))
