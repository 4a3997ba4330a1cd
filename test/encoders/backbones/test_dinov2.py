"""DINOv2: facebookresearch checkpoint layout (test/checkpoint_layouts.py, no network), strict loading,
position-embedding interpolation, forward/value-facet maths, freezing."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from test.checkpoint_layouts import dinov2_hub
from vpr_ros.encoders.backbones.dinov2 import DinoV2, dinov2_vitb14, dinov2_vits14
from vpr_ros.encoders.weights import load_strict, read_state_dict
from vpr_ros.errors import WeightsError

torch.set_num_threads(2)


def tiny(depth: int = 3) -> DinoV2:
    """A ViT small enough for exact-maths tests (pos-embed grid 4x4 = 56 px)."""
    torch.manual_seed(0)
    return DinoV2(embed_dim=32, depth=depth, num_heads=4, img_size=56).eval()


@pytest.mark.parametrize('factory, dim, n_params',
                         [(dinov2_vits14, 384, 22_056_576), (dinov2_vitb14, 768, 86_580_480)])
def test_layout_matches_hub(factory, dim: int, n_params: int) -> None:
    model = factory()
    layout = dinov2_hub(dim)
    assert len(layout) == 175
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == layout
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert (model.embed_dim, model.patch_size, model.num_heads) == (dim, 14, dim // 64)
    assert model.blocks[0].ls1.gamma.eq(1.0).all()  # hub init_values=1.0
    if dim == 768:  # spelled out for ViT-B/14
        state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert state['pos_embed'] == (1, 1370, 768)
        assert state['blocks.11.attn.qkv.weight'] == (2304, 768)
        assert state['blocks.0.mlp.fc1.weight'] == (3072, 768)
        assert state['patch_embed.proj.weight'] == (768, 3, 14, 14)


def test_file_round_trip_vits14(tmp_path) -> None:
    g = torch.Generator().manual_seed(1)
    state = {k: torch.randn(shape, generator=g) * 0.02 for k, shape in dinov2_hub(384).items()}
    path = tmp_path / 'dinov2_vits14_pretrain.pth'
    torch.save(state, path)
    a, b = dinov2_vits14().eval(), dinov2_vits14().eval()
    load_strict(a, read_state_dict(str(path)), str(path))
    load_strict(b, read_state_dict(str(path)), str(path))
    x = torch.randn(1, 3, 28, 42)
    with torch.no_grad():
        pa, ca = a.forward_features(x, apply_norm=True)
        pb, cb = b.forward_features(x, apply_norm=True)
    assert torch.equal(pa, pb) and torch.equal(ca, cb)


def test_truncated_and_mismatched_files(tmp_path) -> None:
    model = tiny()
    path = tmp_path / 'vit.pth'
    torch.save(model.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 100])
    with pytest.raises(WeightsError):
        read_state_dict(str(path))
    state = model.state_dict()
    del state['blocks.1.ls2.gamma']
    state['blocks.1.ls3.gamma'] = torch.ones(32)
    with pytest.raises(WeightsError) as err:
        load_strict(model, state, 'vit.pth')
    assert 'blocks.1.ls2.gamma' in str(err.value) and 'blocks.1.ls3.gamma' in str(err.value)


def test_output_shapes_322() -> None:
    torch.manual_seed(0)
    model = DinoV2(embed_dim=32, depth=1, num_heads=4).eval()  # hub grid 37x37, narrow and shallow for speed
    with torch.no_grad():
        patches, cls = model.forward_features(torch.randn(2, 3, 322, 322), apply_norm=False)
    assert patches.shape == (2, 32, 23, 23) and cls.shape == (2, 32)


@pytest.mark.parametrize('size', [(320, 322), (322, 320), (13, 14), (0, 14)])
def test_size_not_multiple_of_14_raises(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match='multiple of the patch size 14'):
        tiny().forward_features(torch.randn(1, 3, *size), apply_norm=True)


def test_native_grid_uses_table_unchanged() -> None:
    model = tiny()
    assert model.interpolated_pos_embed(4, 4) is model.pos_embed


def _cubic_sample(values: list[float], src: float, a: float = -0.75) -> float:
    """1-D Keys cubic convolution (PyTorch's bicubic kernel, a=-0.75) with clamped borders."""
    def kernel(d: float) -> float:
        d = abs(d)
        if d <= 1:
            return ((a + 2) * d - (a + 3)) * d * d + 1
        return (((d - 5) * d + 8) * d - 4) * a if d < 2 else 0.0
    base = math.floor(src)
    return sum(values[min(max(base + j, 0), len(values) - 1)] * kernel(src - (base + j))
               for j in range(-1, 3))


def test_pos_embed_interpolation_is_upstream_bicubic_with_offset() -> None:
    model = tiny()
    with torch.no_grad():
        # A table that varies only down the rows must stay row-only after resizing to a
        # non-square grid: catches rows/cols being swapped.
        rows_only = torch.arange(4.0).repeat_interleave(4)[:, None].expand(16, 32)
        model.pos_embed[0, 1:] = rows_only
    pos = model.interpolated_pos_embed(3, 7)
    assert pos.shape == (1, 1 + 21, 32)
    grid = pos[0, 1:, 0].reshape(3, 7)
    assert torch.allclose(grid, grid[:, :1].expand(3, 7))
    assert grid[0, 0] < grid[1, 0] < grid[2, 0]
    # Sampling positions follow scale_factor = (n + 0.1) / 4, not the output size (upstream's offset).
    for r in range(3):
        src = (r + 0.5) * 4 / 3.1 - 0.5
        assert math.isclose(grid[r, 0].item(), _cubic_sample([0.0, 1.0, 2.0, 3.0], src), rel_tol=1e-5)
    assert torch.equal(pos[:, 0], model.pos_embed[:, 0])


def _reference_forward(model: DinoV2, x: torch.Tensor) -> torch.Tensor:
    """Upstream's maths written out: explicit softmax attention, tokens before the final norm."""
    t, _, _ = model.tokens(x)
    for blk in model.blocks:
        b, n, d = t.shape
        hd = d // model.num_heads
        qkv = F.linear(blk.norm1(t), blk.attn.qkv.weight, blk.attn.qkv.bias)
        qkv = qkv.reshape(b, n, 3, model.num_heads, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = ((q * hd ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        y = F.linear((attn @ v).transpose(1, 2).reshape(b, n, d), blk.attn.proj.weight, blk.attn.proj.bias)
        t = t + y * blk.ls1.gamma
        m = F.linear(F.gelu(F.linear(blk.norm2(t), blk.mlp.fc1.weight, blk.mlp.fc1.bias)),
                     blk.mlp.fc2.weight, blk.mlp.fc2.bias)
        t = t + m * blk.ls2.gamma
    return t


def test_forward_matches_reference_maths() -> None:
    model = tiny()
    with torch.no_grad():
        for p in model.parameters():  # LayerScale 1.0 and zero biases would hide layout bugs
            p.add_(torch.randn_like(p) * 0.1)
        x = torch.randn(2, 3, 42, 28)
        ref = _reference_forward(model, x)
        patches, cls = model.forward_features(x, apply_norm=False)
        patches_n, cls_n = model.forward_features(x, apply_norm=True)
    assert torch.allclose(cls, ref[:, 0], atol=1e-5)
    assert torch.allclose(patches, ref[:, 1:].reshape(2, 3, 2, 32).permute(0, 3, 1, 2), atol=1e-5)
    normed = model.norm(ref)
    assert torch.allclose(cls_n, normed[:, 0], atol=1e-5)
    assert torch.allclose(patches_n, normed[:, 1:].reshape(2, 3, 2, 32).permute(0, 3, 1, 2), atol=1e-5)


def test_value_facet_is_last_third_of_qkv_and_stops_early() -> None:
    model = tiny(depth=3)
    captured: list[torch.Tensor] = []
    calls = {'later': 0}
    h1 = model.blocks[1].attn.qkv.register_forward_hook(lambda m, i, o: captured.append(o))
    h2 = model.blocks[2].register_forward_hook(lambda m, i, o: calls.__setitem__('later', calls['later'] + 1))
    x = torch.randn(1, 3, 28, 56)
    with torch.no_grad():
        model.forward_features(x, apply_norm=False)
        assert calls['later'] == 1
        facet = model.value_facet(x, 1)
    h1.remove()
    h2.remove()
    assert calls['later'] == 1  # value_facet did not run the block after `layer`
    expected = captured[0][:, 1:, 64:].reshape(1, 2, 4, 32).permute(0, 3, 1, 2)
    assert facet.shape == (1, 32, 2, 4)
    assert torch.equal(facet, expected)
    assert torch.equal(captured[1], captured[0])  # the hook fired again inside value_facet
    with pytest.raises(ValueError, match='out of range'):
        model.value_facet(x, 3)


def test_set_trainable_blocks() -> None:
    model = tiny(depth=4)
    model.set_trainable_blocks(2)
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable == {k for k, _ in model.named_parameters()
                         if k.startswith(('blocks.2.', 'blocks.3.', 'norm.'))}
    model.set_trainable_blocks(0)
    assert not any(p.requires_grad for p in model.parameters())
    model.set_trainable_blocks(4)
    frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {'cls_token', 'pos_embed', 'mask_token', 'patch_embed.proj.weight',
                      'patch_embed.proj.bias'}
    with pytest.raises(ValueError, match='out of range'):
        model.set_trainable_blocks(5)
