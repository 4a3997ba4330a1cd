"""MegaLoc: the released preprocessing (sides rounded to multiples of 14) and head (SALAD -> linear -> L2)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vpr_ros.encoders import create_encoder
from vpr_ros.encoders.models.megaloc import round_to_patch
from vpr_ros.errors import ConfigError


@pytest.fixture(scope='module')
def encoder():
    return create_encoder('megaloc', {})


def test_rounding_is_the_releases():
    assert [round_to_patch(s) for s in (90, 120, 480, 640, 7, 21, 35)] == [84, 126, 476, 644, 14, 28, 28]


def test_images_keep_their_size_rounded_to_14(encoder):
    rgb = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    assert tuple(encoder.preprocess([rgb]).shape) == (1, 3, 84, 126)
    assert encoder.input_size is None and encoder.dim == 8448
    fixed = create_encoder('megaloc', {'image_size': [56, 70]})
    assert tuple(fixed.preprocess([rgb]).shape) == (1, 3, 56, 70)
    with pytest.raises(ConfigError, match='multiples of 14'):
        create_encoder('megaloc', {'image_size': [60, 70]})


def test_head_is_salad_then_linear_then_l2(encoder):
    torch.manual_seed(0)
    x = (torch.randn(2, 768, 9, 9), torch.randn(2, 768))
    model = encoder.model
    with torch.no_grad():
        salad = model.aggregator.agg(x)
        assert salad.shape == (2, 64 * 256 + 256)
        np.testing.assert_allclose(salad.norm(dim=1).numpy(), 1.0, atol=1e-5)
        want = F.normalize(salad @ model.aggregator.linear.weight.T + model.aggregator.linear.bias, dim=-1)
        np.testing.assert_allclose(model.head(x).numpy(), want.numpy(), atol=1e-6)


def test_encodes_unit_vectors(encoder):
    # 9x9 patches: SALAD needs more patches than its 64 clusters
    rgb = np.random.default_rng(1).integers(0, 256, (2, 120, 130, 3), dtype=np.uint8)
    out = encoder.encode(list(rgb))
    assert out.shape == (2, 8448)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
