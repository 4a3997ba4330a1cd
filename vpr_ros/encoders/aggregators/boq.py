"""BoQ, "Bag of Learnable Queries" (Ali-bey, Chaib-draa, Giguere, CVPR 2024), as released.

* ``proj_c``: 3x3 conv (padding 1, bias) C_in -> d on the backbone map; flattened to N = H*W tokens
  and LayerNorm'ed (``norm_input``).
* L cascaded :class:`BoQBlock` s. Each refines the tokens with a post-norm transformer encoder
  layer (d//64 heads, FFN 4d, ReLU, no dropout), then M learnable queries (self-attention +
  residual + ``norm_q``; input-independent) cross-attend to the refined tokens, with **no
  residual** from the queries, followed by ``norm_out`` -> (B, M, d). The refined tokens feed the
  next block.
* The L outputs are concatenated along the query axis (B, L*M, d); ``fc`` Linear(L*M -> row_dim)
  acts on the query axis -> (B, d, row_dim), flattened channel-major (index c*row_dim + r) and
  L2-normalised -> d*row_dim values.

``forward`` returns ``(descriptor, attns)``: attns is the list (one per block) of cross-attention
maps (B, M, N), averaged over heads, detached. Module names give exactly the released key layout
(``proj_c``, ``norm_input``, ``boqs.<i>.{encoder,queries,self_attn,norm_q,cross_attn,norm_out}``, ``fc``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class BoQBlock(nn.Module):
    """One block: tokens (B, N, d) -> (refined tokens (B, N, d), output (B, M, d), attention (B, M, N))."""

    def __init__(self, dim: int, num_queries: int, num_heads: int) -> None:
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(d_model=dim, nhead=num_heads, dim_feedforward=4 * dim,
                                                  dropout=0.0, batch_first=True)
        self.queries = nn.Parameter(torch.randn(1, num_queries, dim))
        self.self_attn = nn.MultiheadAttention(dim, num_heads=num_heads, batch_first=True)
        self.norm_q = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads=num_heads, batch_first=True)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.encoder(x)
        q = self.queries.expand(x.shape[0], -1, -1)
        q = self.norm_q(q + self.self_attn(q, q, q, need_weights=False)[0])
        out, attn = self.cross_attn(q, x, x, need_weights=True)  # no residual: by design
        return x, self.norm_out(out), attn.detach()


class BoQ(nn.Module):
    """(B, in_channels, H, W) -> ((B, proj_channels * row_dim) L2-normalised, [attention maps])."""

    def __init__(self, in_channels: int = 1024, proj_channels: int = 512, num_queries: int = 64,
                 num_layers: int = 2, row_dim: int = 32) -> None:
        super().__init__()
        self.proj_c = nn.Conv2d(in_channels, proj_channels, kernel_size=3, padding=1)
        self.norm_input = nn.LayerNorm(proj_channels)
        self.boqs = nn.ModuleList([BoQBlock(proj_channels, num_queries, proj_channels // 64)
                                   for _ in range(num_layers)])
        self.fc = nn.Linear(num_layers * num_queries, row_dim)
        self.output_dim = proj_channels * row_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.norm_input(self.proj_c(x).flatten(2).transpose(1, 2))  # (B, N, d)
        outs, attns = [], []
        for block in self.boqs:
            x, out, attn = block(x)
            outs.append(out)
            attns.append(attn)
        out = self.fc(torch.cat(outs, dim=1).transpose(1, 2))  # (B, d, row_dim)
        return F.normalize(out.flatten(1), p=2, dim=-1), attns


@dataclass(frozen=True)
class BoQConfig:
    """Hyper-parameters of one BoQ aggregator."""

    in_channels: int
    proj_channels: int
    num_queries: int
    num_layers: int
    row_dim: int

    @property
    def output_dim(self) -> int:
        return self.proj_channels * self.row_dim

    def build(self) -> BoQ:
        return BoQ(self.in_channels, self.proj_channels, self.num_queries, self.num_layers, self.row_dim)


# The two released models (BoQ hubconf): ResNet-50 cropped after layer3, and DINOv2 ViT-B/14.
BOQ_RESNET50_16384 = BoQConfig(in_channels=1024, proj_channels=512, num_queries=64, num_layers=2, row_dim=32)
BOQ_DINOV2_12288 = BoQConfig(in_channels=768, proj_channels=384, num_queries=64, num_layers=2, row_dim=32)
