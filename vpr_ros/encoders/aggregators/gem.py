"""GeM pooling (Radenovic et al.): f_c = (mean_u max(x_cu, eps)^p)^(1/p), p learnable (init 3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GeM(nn.Module):
    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p, requires_grad=learnable)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1))
        return F.normalize(pooled.pow(1.0 / self.p), dim=-1)
