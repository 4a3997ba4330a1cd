"""DINOv2 ViT/14 (register-free) in plain torch with facebookresearch/dinov2 parameter names.

Parameter names and shapes match the torch.hub ``dinov2_vit{s,b}14`` construction (img_size 518,
patch 14, LayerScale init 1.0, plain GELU MLP with ratio 4, ``block_chunks=0`` so blocks are
``blocks.{i}``, LayerNorm eps 1e-6), so the released ``dinov2_vit{s,b}14_pretrain.pth`` files and
checkpoints embedding them (BoQ, SALAD) load strictly.

Position embeddings are interpolated the way the register-free hub models do it, both in the
version the reference facts were read from (``027a9ac``) and in later versions whose hub defaults
are ``interpolate_offset=0.1, interpolate_antialias=False``: bicubic, align_corners=False, no
antialias, with ``scale_factor = (n + 0.1) / 37`` per axis (the 0.1 "offset" changes the sampling
positions slightly compared with asking for an output size), and the 37x37 table used unchanged
for a 518x518 input. (The ``*_reg`` register models use offset 0 + antialias; not implemented.)
Attention uses ``F.scaled_dot_product_attention``: same maths as upstream's explicit softmax,
equal up to float rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_LN_EPS = 1e-6
_INTERPOLATE_OFFSET = 0.1


class PatchEmbed(nn.Module):
    """Non-overlapping patch x patch conv: (B, 3, H, W) -> (B, H/p * W/p, D) tokens, row-major."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection laid out as (3, heads, head_dim)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'embed dim {dim} is not divisible by {num_heads} heads')
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class LayerScale(nn.Module):
    """Per-channel learned scale ``gamma`` applied to a residual branch."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> GELU (erf) -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1 x)), then x + ls2(mlp(norm2 x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, init_value: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, init_value)
        self.norm2 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2(nn.Module):
    """DINOv2 vision transformer; inputs are ImageNet-normalised (B, 3, H, W), H and W multiples of 14."""

    def __init__(self, embed_dim: int, depth: int, num_heads: int, patch_size: int = 14, img_size: int = 518,
                 mlp_ratio: float = 4.0, init_value: float = 1.0) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f'img_size {img_size} is not a multiple of patch_size {patch_size}')
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.depth = depth
        self.grid_size = img_size // patch_size  # side of the stored position-embedding grid (37)
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size ** 2, embed_dim))
        # Used upstream only for masked-image training; kept so released checkpoints load strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, init_value) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=_LN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def patch_grid(self, height: int, width: int) -> tuple[int, int]:
        """(rows, cols) of patch tokens for an input of ``height`` x ``width`` pixels."""
        p = self.patch_size
        if height % p or width % p or height <= 0 or width <= 0:
            raise ValueError(f'DINOv2 input size {height}x{width} is not a positive multiple of the patch '
                             f'size {p} in both dimensions (resize or centre-crop it first)')
        return height // p, width // p

    def interpolated_pos_embed(self, rows: int, cols: int) -> torch.Tensor:
        """(1, 1 + rows*cols, D) position embeddings for a rows x cols patch grid (see module docstring)."""
        m = self.grid_size
        if rows == m and cols == m:
            return self.pos_embed
        pos = self.pos_embed.float()
        grid = pos[:, 1:].reshape(1, m, m, self.embed_dim).permute(0, 3, 1, 2)
        scale = ((rows + _INTERPOLATE_OFFSET) / m, (cols + _INTERPOLATE_OFFSET) / m)
        grid = F.interpolate(grid, scale_factor=scale, mode='bicubic', align_corners=False)
        # cannot happen with offset 0.1 < 1, but a wrong grid would be silent
        if grid.shape[-2:] != (rows, cols):
            raise RuntimeError(f'position-embedding interpolation gave {tuple(grid.shape[-2:])}, '
                               f'wanted {(rows, cols)}')
        grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, self.embed_dim)
        return torch.cat((pos[:, :1], grid), dim=1).to(self.pos_embed.dtype)

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Patch-embed ``x`` and add the CLS token and position embeddings: ((B, 1+N, D), rows, cols)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'DINOv2 expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}')
        # int(): under ONNX/JIT tracing shapes are traced tensors, which F.interpolate's scale_factor
        # rejects; the grid is a constant of the exported graph anyway (only the batch axis is dynamic).
        rows, cols = self.patch_grid(int(x.shape[-2]), int(x.shape[-1]))
        t = self.patch_embed(x)
        t = torch.cat((self.cls_token.expand(t.shape[0], -1, -1).to(t.dtype), t), dim=1)
        return t + self.interpolated_pos_embed(rows, cols).to(t.dtype), rows, cols

    def _to_map(self, patch_tokens: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        b, _, d = patch_tokens.shape
        return patch_tokens.reshape(b, rows, cols, d).permute(0, 3, 1, 2).contiguous()

    def forward_features(self, x: torch.Tensor, apply_norm: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Run all blocks; returns (patch map (B, D, H/14, W/14), CLS token (B, D)).

        ``apply_norm`` selects whether the final LayerNorm is applied to both (SALAD: yes; BoQ: no).
        """
        t, rows, cols = self.tokens(x)
        for block in self.blocks:
            t = block(t)
        if apply_norm:
            t = self.norm(t)
        return self._to_map(t[:, 1:], rows, cols), t[:, 0]

    def forward(self, x: torch.Tensor, apply_norm: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_features(x, apply_norm)

    def value_facet(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """'value' features of ``blocks[layer]`` (AnyLoc/SegVLAD): (B, D, H/14, W/14), CLS dropped.

        That is the last third of ``blocks[layer].attn.qkv``'s output (all heads, head-major
        channel order); blocks after ``layer`` and the rest of ``blocks[layer]`` are not run.
        """
        if not 0 <= layer < self.depth:
            raise ValueError(f'DINOv2 layer {layer} out of range: this model has blocks 0..{self.depth - 1}')
        t, rows, cols = self.tokens(x)
        for block in self.blocks[:layer]:
            t = block(t)
        target = self.blocks[layer]
        v = target.attn.qkv(target.norm1(t))[:, 1:, 2 * self.embed_dim:]
        return self._to_map(v, rows, cols)

    def set_trainable_blocks(self, n: int) -> None:
        """Freeze everything except the last ``n`` blocks (and the final norm when ``n > 0``)."""
        if not 0 <= n <= self.depth:
            raise ValueError(f'trainable block count {n} out of range 0..{self.depth}')
        self.requires_grad_(False)
        if n:
            for block in self.blocks[self.depth - n:]:
                block.requires_grad_(True)
            self.norm.requires_grad_(True)


def dinov2_vits14() -> DinoV2:
    """ViT-S/14: D=384, 12 blocks, 6 heads (~21 M parameters), randomly initialised."""
    return DinoV2(embed_dim=384, depth=12, num_heads=6)


def dinov2_vitb14() -> DinoV2:
    """ViT-B/14: D=768, 12 blocks, 12 heads (~86 M parameters), randomly initialised."""
    return DinoV2(embed_dim=768, depth=12, num_heads=12)
