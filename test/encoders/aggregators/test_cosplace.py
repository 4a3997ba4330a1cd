"""CosPlace head: released key names, dims and the GeM-then-FC computation."""
import numpy as np
import torch

from vpr_ros.encoders.aggregators.cosplace import CosPlaceHead


def test_released_key_layout():
    head = CosPlaceHead(2048, 512)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {'1.p': (1,), '3.weight': (512, 2048), '3.bias': (512,)}
    assert head[1].p.item() == 3.0


def test_known_answer():
    torch.manual_seed(0)
    head = CosPlaceHead(4, 3)
    x = torch.rand(2, 4, 3, 5) + 0.1
    xn = x / x.norm(dim=1, keepdim=True)
    gem = xn.pow(3).mean(dim=(2, 3)).pow(1 / 3)
    want = torch.nn.functional.normalize(head[3](gem), dim=1)
    got = head(x)
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(got.norm(dim=1).detach().numpy(), 1.0, atol=1e-6)
