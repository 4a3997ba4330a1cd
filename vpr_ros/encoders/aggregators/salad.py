"""SALAD (Izquierdo & Civera, CVPR 2024): optimal-transport aggregation of ViT patch features.

Re-implemented from the method description (the official code is GPL-3.0; only its facts are used:
layer shapes, parameter names, marginals, iteration count and output layout).

Input: ``(patch_map (B, C, h, w), cls_token (B, C))``. With n = h*w patches and m clusters:
* ``token_features``: Linear(C -> 512) - ReLU - Linear(512 -> token_dim) on the CLS token;
* ``cluster_features``: 1x1 conv C -> 512, dropout, ReLU, 1x1 conv 512 -> cluster_dim (f_j per patch);
* ``score``: same shape of MLP to m scores per patch; a learnable dustbin score z (init 1) is
  appended as an extra row;
* log-domain Sinkhorn (3 iterations, regularisation 1) with marginals 1/(n+m) for each of the m
  cluster rows and each of the n patches and (n-m)/(n+m) for the dustbin row; the transport plan
  is rescaled by (n+m), exponentiated, and the dustbin row dropped -> P (m x n);
* V_k = sum_j P_kj f_j, L2-normalised over cluster_dim per cluster, laid out (cluster_dim, m)
  and flattened; the L2-normalised token goes first; final L2 -> token_dim + m*cluster_dim
  (256 + 64*128 = 8448 for the released model).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.errors import VprError


def sinkhorn_log(scores: torch.Tensor, dustbin: torch.Tensor, iters: int = 3) -> torch.Tensor:
    """Transport plan (B, m+1, n), rescaled by (n+m), in the log domain.

    ``scores``: (B, m, n) cluster scores; ``dustbin``: scalar score of the extra row.
    """
    b, m, n = scores.shape
    if n <= m:
        raise VprError(f'SALAD needs more patches than clusters (n={n} <= m={m}): use a larger image')
    couplings = torch.cat([scores, dustbin.reshape(1, 1, 1).expand(b, 1, n)], dim=1)
    norm = -math.log(n + m)
    log_mu = torch.cat([scores.new_full((m,), norm), scores.new_full((1,), math.log(n - m) + norm)])
    log_nu = scores.new_full((n,), norm)
    u = torch.zeros_like(couplings[:, :, 0])
    v = torch.zeros_like(couplings[:, 0, :])
    for _ in range(iters):
        u = log_mu - torch.logsumexp(couplings + v.unsqueeze(1), dim=2)
        v = log_nu - torch.logsumexp(couplings + u.unsqueeze(2), dim=1)
    return couplings + u.unsqueeze(2) + v.unsqueeze(1) - norm


def _mlp_conv(cin: int, hidden: int, cout: int, dropout: float) -> nn.Sequential:
    # Index layout 0 conv / 1 dropout / 2 ReLU / 3 conv is what the released key names follow.
    drop: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, hidden, 1), drop, nn.ReLU(), nn.Conv2d(hidden, cout, 1))


class SALAD(nn.Module):
    """(patch map, CLS token) -> (B, token_dim + num_clusters * cluster_dim) L2-normalised."""

    def __init__(self, num_channels: int = 768, num_clusters: int = 64, cluster_dim: int = 128,
                 token_dim: int = 256, dropout: float = 0.3, sinkhorn_iters: int = 3) -> None:
        super().__init__()
        self.num_clusters, self.cluster_dim, self.token_dim = num_clusters, cluster_dim, token_dim
        self.sinkhorn_iters = sinkhorn_iters
        self.token_features = nn.Sequential(nn.Linear(num_channels, 512), nn.ReLU(),
                                            nn.Linear(512, token_dim))
        self.cluster_features = _mlp_conv(num_channels, 512, cluster_dim, dropout)
        self.score = _mlp_conv(num_channels, 512, num_clusters, dropout)
        self.dust_bin = nn.Parameter(torch.tensor(1.0))

    @property
    def output_dim(self) -> int:
        return self.token_dim + self.num_clusters * self.cluster_dim

    def assignment(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, m, n) transport plan from clusters to patches (dustbin row dropped)."""
        log_p = sinkhorn_log(self.score(x).flatten(2), self.dust_bin, self.sinkhorn_iters)
        return torch.exp(log_p)[:, :-1, :]

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, token = inputs
        f = self.cluster_features(x).flatten(2)  # (B, l, n)
        p = self.assignment(x)  # (B, m, n)
        t = self.token_features(token)
        v = torch.einsum('bln,bmn->blm', f, p)
        v = F.normalize(v, p=2, dim=1).flatten(1)  # per-cluster L2 over l; layout (l, m)
        out = torch.cat([F.normalize(t, p=2, dim=-1), v], dim=-1)
        return F.normalize(out, p=2, dim=-1)
