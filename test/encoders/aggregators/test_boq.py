"""BoQ aggregator: released key layout and parameter counts, forward contract, block semantics."""
import numpy as np
import pytest
import torch

from vpr_ros.encoders.aggregators.boq import BOQ_DINOV2_12288, BOQ_RESNET50_16384, BoQBlock, BoQConfig

# Representative keys of the released checkpoints (prefixed 'aggregator.' there) and their shapes.
R50_KEYS = {
    'proj_c.weight': (512, 1024, 3, 3), 'proj_c.bias': (512,),
    'norm_input.weight': (512,), 'norm_input.bias': (512,),
    'boqs.0.encoder.self_attn.in_proj_weight': (1536, 512), 'boqs.0.encoder.self_attn.in_proj_bias': (1536,),
    'boqs.0.encoder.self_attn.out_proj.weight': (512, 512), 'boqs.0.encoder.self_attn.out_proj.bias': (512,),
    'boqs.0.encoder.linear1.weight': (2048, 512), 'boqs.0.encoder.linear1.bias': (2048,),
    'boqs.0.encoder.linear2.weight': (512, 2048), 'boqs.0.encoder.linear2.bias': (512,),
    'boqs.0.encoder.norm1.weight': (512,), 'boqs.0.encoder.norm2.bias': (512,),
    'boqs.1.queries': (1, 64, 512),
    'boqs.1.self_attn.in_proj_weight': (1536, 512), 'boqs.1.self_attn.out_proj.bias': (512,),
    'boqs.1.norm_q.weight': (512,),
    'boqs.1.cross_attn.in_proj_weight': (1536, 512), 'boqs.1.cross_attn.out_proj.weight': (512, 512),
    'boqs.1.norm_out.bias': (512,),
    'fc.weight': (32, 128), 'fc.bias': (32,),
}


def shapes_of(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_resnet50_release_layout_and_params():
    agg = BOQ_RESNET50_16384.build()
    shapes = shapes_of(agg)
    for key, shape in R50_KEYS.items():
        assert shapes[key] == shape, key
    # 2 (proj_c) + 2 (norm_input) + 2 blocks x (12 encoder + 1 queries + 4 self_attn + 2 norm_q
    # + 4 cross_attn + 2 norm_out) + 2 (fc)
    assert len(shapes) == 2 + 2 + 2 * 25 + 2 == 56
    n = sum(p.numel() for p in agg.parameters())
    assert n == 15_301_152 and round(n / 1e6, 2) == 15.30
    assert BOQ_RESNET50_16384.output_dim == agg.output_dim == 16384
    assert agg.boqs[0].encoder.self_attn.num_heads == 8


def test_dinov2_release_layout_and_params():
    agg = BOQ_DINOV2_12288.build()
    shapes = shapes_of(agg)
    assert shapes['proj_c.weight'] == (384, 768, 3, 3)
    assert shapes['boqs.0.queries'] == (1, 64, 384)
    assert shapes['boqs.1.encoder.linear1.weight'] == (1536, 384)
    assert shapes['fc.weight'] == (32, 128)
    assert len(shapes) == 56
    n = sum(p.numel() for p in agg.parameters())
    assert n == 8_626_080 and round(n / 1e6, 2) == 8.63
    assert agg.output_dim == 12288
    assert agg.boqs[1].cross_attn.num_heads == 6


def test_encoder_layer_is_post_norm_relu_no_dropout():
    enc = BOQ_DINOV2_12288.build().boqs[0].encoder
    assert enc.norm_first is False
    assert enc.dropout.p == 0 and enc.dropout1.p == 0 and enc.dropout2.p == 0
    assert enc.linear1.out_features == 4 * 384


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return BoQConfig(in_channels=16, proj_channels=64, num_queries=4, num_layers=2, row_dim=3).build().eval()


def test_forward_returns_descriptor_and_attention(tiny):
    x = torch.randn(2, 16, 3, 5)
    with torch.no_grad():
        desc, attns = tiny(x)
    assert desc.shape == (2, 64 * 3)
    np.testing.assert_allclose(desc.norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert len(attns) == 2 and all(a.shape == (2, 4, 15) for a in attns)
    np.testing.assert_allclose(attns[0].sum(-1).numpy(), 1.0, atol=1e-5)  # softmax over tokens


def test_cross_attention_has_no_query_residual():
    """The block output depends on the queries only through the attention weights: with a single
    token the attention is 1, so the output is norm_out(out_proj(v_proj(x))) whatever the queries."""
    torch.manual_seed(0)
    block = BoQBlock(64, 3, 1).eval()
    x = torch.randn(1, 1, 64)
    with torch.no_grad():
        _, out1, _ = block(x)
        block.queries.add_(torch.randn_like(block.queries) * 5)
        _, out2, _ = block(x)
    torch.testing.assert_close(out1, out2)
    assert torch.allclose(out1[0, 0], out1[0, 2])  # every query gives the same vector


def test_concat_order_and_channel_major_flatten(tiny):
    """Rebuild the descriptor by hand: cat(block outputs, query axis) -> fc over queries -> (d, r) flatten."""
    x = torch.randn(1, 16, 3, 5)
    with torch.no_grad():
        desc, _ = tiny(x)
        t = tiny.norm_input(tiny.proj_c(x).flatten(2).transpose(1, 2))
        t, o1, _ = tiny.boqs[0](t)
        _, o2, _ = tiny.boqs[1](t)
        cat = torch.cat([o1, o2], dim=1)[0]  # (2M, d): block 0's queries first
        w, b = tiny.fc.weight, tiny.fc.bias  # (r, 2M)
        mat = cat.T @ w.T + b  # (d, r)
        want = mat.reshape(-1)  # index c*r + j
        want = want / want.norm()
    np.testing.assert_allclose(desc[0].numpy(), want.numpy(), atol=1e-5)
    # swapping the two blocks' fc columns must change the descriptor: the order matters
    with torch.no_grad():
        swapped = torch.cat([w[:, 4:], w[:, :4]], dim=1)
        alt = (cat.T @ swapped.T + b).reshape(-1)
    assert not torch.allclose(alt / alt.norm(), want, atol=1e-3)
