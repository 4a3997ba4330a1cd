"""NetVLAD (Arandjelovic et al., CVPR 2016): soft-assignment VLAD as a differentiable layer.

Local descriptors x_i (the C channels of each position of the feature map) are L2-normalised,
softly assigned to K clusters with a 1x1 convolution without bias (``a_k(x_i) = softmax_k(w_k . x_i)``),
and aggregated as residuals ``V_k = sum_i a_k(x_i) (x_i - c_k)``; each V_k is L2-normalised
(intra-normalisation), the K x C matrix is flattened cluster-major and L2-normalised again.
Parameter names (``conv.weight`` (K, C, 1, 1), ``centroids`` (K, C)) are those of the
deep-visual-geo-localization-benchmark checkpoints.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.encoders.aggregators.vlad import fit_vocabulary
from vpr_ros.errors import VprError


class NetVLAD(nn.Module):
    """(B, C, H, W) feature map -> (B, K*C) L2-normalised NetVLAD descriptor."""

    def __init__(self, dim: int, clusters: int = 64, normalize_input: bool = True) -> None:
        super().__init__()
        self.dim = int(dim)
        self.clusters = int(clusters)
        self.normalize_input = normalize_input
        self.conv = nn.Conv2d(self.dim, self.clusters, kernel_size=1, bias=False)
        self.centroids = nn.Parameter(torch.rand(self.clusters, self.dim))
        self.alpha = 0.0  # set by init_from_kmeans; kept for inspection only

    @property
    def output_dim(self) -> int:
        return self.clusters * self.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize_input:
            x = F.normalize(x, p=2, dim=1)
        assign = F.softmax(self.conv(x).flatten(2), dim=1)  # (B, K, N)
        feats = x.flatten(2)  # (B, C, N)
        # sum_i a_ki (x_i - c_k) = sum_i a_ki x_i - c_k sum_i a_ki: one batched matmul, no (B, K, C, N)
        # tensor.
        vlad = torch.bmm(assign, feats.transpose(1, 2)) - assign.sum(dim=2, keepdim=True) * self.centroids
        vlad = F.normalize(vlad, p=2, dim=2)
        return F.normalize(vlad.flatten(1), p=2, dim=1)

    @torch.no_grad()
    def init_from_kmeans(self, local_descriptors: np.ndarray, seed: int = 0, niter: int = 100,
                         max_points: int = 50_000) -> float:
        """Initialise centroids and assignment weights from k-means on local descriptors.

        ``local_descriptors``: (N, C) backbone features (normalised here, as the layer's input is).
        k-means (faiss, ``niter`` iterations) on at most ``max_points`` normalised descriptors gives
        the centres c_k; alpha = -log(0.01) / mean(top1 - top2) of the normalised-centre dot products
        of the descriptors, and the assignment weights are alpha * normalize(c_k). Returns alpha.
        """
        x = np.asarray(local_descriptors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise VprError(f'NetVLAD init needs (N, {self.dim}) local descriptors, got {x.shape}')
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        centres = fit_vocabulary(x, self.clusters, cosine=False, seed=seed, niter=niter,
                                 max_points=max_points)
        if len(x) > max_points:
            x = x[np.random.default_rng(seed).choice(len(x), max_points, replace=False)]
        centres_n = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
        dots = np.sort(x @ centres_n.T, axis=1)
        gap = float(np.mean(dots[:, -1] - dots[:, -2]))
        if gap <= 0:
            raise VprError('NetVLAD init: degenerate k-means (top-1 and top-2 centre similarities are equal)')
        alpha = float(-np.log(0.01) / gap)
        self.centroids.copy_(torch.from_numpy(centres))
        self.conv.weight.copy_(torch.from_numpy(alpha * centres_n)[:, :, None, None])
        self.alpha = alpha
        return alpha
