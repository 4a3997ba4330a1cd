"""Conv-AP (GSV-Cities, Ali-bey et al. 2022): 1x1 conv channel reduction, 2x2 adaptive average pool, L2.

Parameter names (``channel_pool.weight``/``bias``) are those of the released GSV-Cities checkpoints;
the output is ``out_channels * s1 * s2`` values, flattened channel-major.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvAP(nn.Module):
    """(B, C, H, W) -> (B, out_channels * s1 * s2) L2-normalised."""

    def __init__(self, in_channels: int, out_channels: int = 512, s1: int = 2, s2: int = 2) -> None:
        super().__init__()
        self.channel_pool = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True)
        self.AAP = nn.AdaptiveAvgPool2d((s1, s2))  # noqa: N815 - the released name (holds no parameters)
        self.output_dim = out_channels * s1 * s2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.AAP(self.channel_pool(x))
        return F.normalize(x.flatten(1), p=2, dim=1)
