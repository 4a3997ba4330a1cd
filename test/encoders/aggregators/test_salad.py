"""SALAD aggregator: released dims/params/keys, Sinkhorn marginals, output layout."""
import math

import numpy as np
import pytest
import torch

from vpr_ros.encoders.aggregators.salad import SALAD, sinkhorn_log
from vpr_ros.errors import VprError


def test_released_config():
    agg = SALAD(num_channels=768, num_clusters=64, cluster_dim=128, token_dim=256)
    assert agg.output_dim == 8448
    n = sum(p.numel() for p in agg.parameters())
    assert n == 1_411_009 and round(n / 1e6, 2) == 1.41
    shapes = {k: tuple(v.shape) for k, v in agg.state_dict().items()}
    assert shapes == {
        'token_features.0.weight': (512, 768), 'token_features.0.bias': (512,),
        'token_features.2.weight': (256, 512), 'token_features.2.bias': (256,),
        'cluster_features.0.weight': (512, 768, 1, 1), 'cluster_features.0.bias': (512,),
        'cluster_features.3.weight': (128, 512, 1, 1), 'cluster_features.3.bias': (128,),
        'score.0.weight': (512, 768, 1, 1), 'score.0.bias': (512,),
        'score.3.weight': (64, 512, 1, 1), 'score.3.bias': (64,),
        'dust_bin': (),
    }
    assert agg.dust_bin.item() == 1.0


def test_sinkhorn_marginals():
    torch.manual_seed(0)
    b, m, n = 2, 4, 11
    log_p = sinkhorn_log(torch.randn(b, m, n), torch.tensor(1.0), iters=200)
    p = log_p.exp() / (n + m)  # undo the (n+m) rescaling -> a transport plan of total mass 1
    cols = p.sum(dim=1)
    rows = p.sum(dim=2)
    np.testing.assert_allclose(cols.numpy(), 1 / (n + m), atol=1e-5)  # every patch: 1/(n+m)
    np.testing.assert_allclose(rows[:, :m].numpy(), 1 / (n + m), atol=1e-5)  # every cluster: 1/(n+m)
    np.testing.assert_allclose(rows[:, m].numpy(), (n - m) / (n + m), atol=1e-5)  # dustbin
    # after the 3 released iterations the last update (columns) is exact
    p3 = sinkhorn_log(torch.randn(b, m, n), torch.tensor(1.0), iters=3).exp()
    np.testing.assert_allclose(p3.sum(dim=1).numpy(), 1.0, atol=1e-5)


def test_sinkhorn_needs_more_patches_than_clusters():
    with pytest.raises(VprError, match='more patches'):
        sinkhorn_log(torch.zeros(1, 8, 8), torch.tensor(1.0))


def test_output_layout_token_first_then_cluster_dim_major():
    torch.manual_seed(0)
    agg = SALAD(num_channels=8, num_clusters=3, cluster_dim=4, token_dim=5, dropout=0.3).eval()
    x, t = torch.randn(2, 8, 3, 3), torch.randn(2, 8)
    with torch.no_grad():
        y = agg((x, t))
        f = agg.cluster_features(x).flatten(2)  # (B, l, n)
        p = agg.assignment(x)  # (B, m, n)
        v = torch.stack([torch.stack([(p[:, k] * f[:, j]).sum(-1) for k in range(3)], -1)
                         for j in range(4)], 1)  # (B, l, m)
        v = v / v.norm(dim=1, keepdim=True)
        tok = agg.token_features(t)
        want = torch.cat([tok / tok.norm(dim=1, keepdim=True), v.reshape(2, -1)], 1)
        want = want / want.norm(dim=1, keepdim=True)
    assert y.shape == (2, 5 + 12)
    np.testing.assert_allclose(y.numpy(), want.numpy(), atol=1e-6)
    # each cluster block (over l) has the same norm; the token block has norm 1/sqrt(1 + m)
    assert float(y[0, :5].norm()) == pytest.approx(1 / math.sqrt(1 + 3), rel=1e-5)
