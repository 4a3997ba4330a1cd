"""MixVPR (Ali-bey et al., WACV 2023): all-MLP feature mixing over the flattened spatial axis.

Each of the C channels of a (B, C, H, W) map is a token of length H*W. ``mix_depth`` Feature-Mixer
blocks ``x + W2 ReLU(W1 LN(x))`` act on that length, then ``channel_proj`` Linear(C -> out_channels)
and ``row_proj`` Linear(H*W -> out_rows) reduce both axes; the (out_channels, out_rows) result is
flattened channel-major and L2-normalised. The input grid is fixed by construction (``in_h x in_w``).
Parameter names (``mix.<i>.mix.{0,1,3}``, ``channel_proj``, ``row_proj`` with bias) are those of the
released checkpoints (the README's loading code builds ``row_proj`` with its default bias).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.errors import VprError


class FeatureMixerLayer(nn.Module):
    """x + Linear(ReLU(Linear(LayerNorm(x)))) over the last axis."""

    def __init__(self, in_dim: int, mlp_ratio: float = 1.0) -> None:
        super().__init__()
        hidden = int(in_dim * mlp_ratio)
        self.mix = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, in_dim))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(x)


class MixVPR(nn.Module):
    """(B, in_channels, in_h, in_w) -> (B, out_channels * out_rows) L2-normalised."""

    def __init__(self, in_channels: int = 1024, in_h: int = 20, in_w: int = 20, out_channels: int = 1024,
                 mix_depth: int = 4, mlp_ratio: float = 1.0, out_rows: int = 4) -> None:
        super().__init__()
        self.in_channels, self.in_h, self.in_w = in_channels, in_h, in_w
        hw = in_h * in_w
        self.mix = nn.Sequential(*[FeatureMixerLayer(hw, mlp_ratio) for _ in range(mix_depth)])
        self.channel_proj = nn.Linear(in_channels, out_channels)
        self.row_proj = nn.Linear(hw, out_rows)
        self.output_dim = out_channels * out_rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != (self.in_channels, self.in_h, self.in_w):
            raise VprError(f'MixVPR was built for a {self.in_channels}x{self.in_h}x{self.in_w} feature map, '
                           f'got {tuple(x.shape[1:])} (the input image size fixes the map size)')
        x = self.mix(x.flatten(2))  # (B, C, HW)
        x = self.channel_proj(x.transpose(1, 2)).transpose(1, 2)  # (B, out_channels, HW)
        x = self.row_proj(x)  # (B, out_channels, out_rows)
        return F.normalize(x.flatten(1), p=2, dim=-1)
