"""CosPlace head (Berton et al., CVPR 2022): channel L2 -> GeM(p=3) -> flatten -> Linear(C -> D) -> L2.

Built as an ``nn.Sequential`` so its parameter names are those of the released checkpoints when
it is the model's ``aggregation``: ``aggregation.1.p`` (GeM exponent) and ``aggregation.3.weight``/
``bias`` (the fully connected layer).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class L2Norm(nn.Module):
    """L2 normalisation along ``dim`` (channels for a map, features for a vector)."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2.0, dim=self.dim)


class GeMPool(nn.Module):
    """GeM over space without the final normalisation: (B, C, H, W) -> (B, C, 1, 1)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1), keepdim=True).pow(1.0 / self.p)


class Flatten(nn.Module):
    """(B, C, 1, 1) -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class CosPlaceHead(nn.Sequential):
    """(B, C, H, W) -> (B, out_dim) L2-normalised."""

    def __init__(self, in_channels: int, out_dim: int, p: float = 3.0) -> None:
        super().__init__(L2Norm(1), GeMPool(p), Flatten(), nn.Linear(in_channels, out_dim), L2Norm(1))
        self.output_dim = out_dim
