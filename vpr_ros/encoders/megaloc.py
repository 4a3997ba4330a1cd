"""MegaLoc (Berton & Masone, CVPRW 2025): DINOv2 ViT-B/14 + SALAD aggregation projected to 8448-d.

Built from the released single-file model (``megaloc_model.py``, facts only): DINOv2 ViT-B/14
(hub names, final LayerNorm applied, returns the patch map and the CLS token), a SALAD aggregator
with 64 clusters x 256 dims + a 256-d token (hidden MLP width 512, dropout 0.3, Sinkhorn 3
iterations, dustbin init 1) -> 16640 values, L2-normalised inside SALAD, then ``Linear(16640 ->
8448)`` and a final L2. Parameter names follow the release, so ``megaloc.torch`` (the v1.0 release
asset, a plain state dict) loads strictly with ``weights: PATH``: ``backbone.model.*`` (DINOv2 hub
names), ``aggregator.agg.{token_features,cluster_features,score}.*``, ``aggregator.agg.dust_bin``,
``aggregator.linear.{weight,bias}``.

Preprocessing as released: ImageNet mean/std; the image is used at its own size with height and
width rounded to the nearest multiple of 14 (the release resizes inside ``forward`` with an
anti-aliased resize; here the same target size is reached with area interpolation, set
``interpolation: bilinear`` to change it). ``image_size: [H, W]`` (multiples of 14) fixes the
size instead - advisable on a CPU for large camera images (a 1920x1080 frame is 10k patches).
``backbone: efficientnet_lite0`` (a training backbone, see _zoo.py): as for ``salad``, at 240x320.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.encoders._zoo import EFFICIENTNET_SIZE, ZOO_DEFAULTS, ZooEncoder
from vpr_ros.encoders.aggregators.salad import SALAD
from vpr_ros.encoders.salad import token_trunk
from vpr_ros.encoders.torch_encoder import to_tensor_batch

NUM_CLUSTERS, CLUSTER_DIM, TOKEN_DIM, FEAT_DIM = 64, 256, 256, 8448


class MegaLocAggregator(nn.Module):
    """SALAD (``agg``) followed by the released linear projection (``linear``)."""

    def __init__(self, num_channels: int, feat_dim: int = FEAT_DIM, num_clusters: int = NUM_CLUSTERS,
                 cluster_dim: int = CLUSTER_DIM, token_dim: int = TOKEN_DIM) -> None:
        super().__init__()
        self.agg = SALAD(num_channels, num_clusters, cluster_dim, token_dim)
        self.linear = nn.Linear(self.agg.output_dim, feat_dim)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.linear(self.agg(inputs))


class MegaLocModel(nn.Module):
    """backbone -> aggregator -> L2: the release's ``MegaLocModel`` layout."""

    def __init__(self, backbone: nn.Module, aggregator: MegaLocAggregator) -> None:
        super().__init__()
        self.backbone = backbone
        self.aggregator = aggregator

    def head(self, features: Any) -> torch.Tensor:
        return F.normalize(self.aggregator(features), p=2, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def round_to_patch(side: int, patch: int = 14) -> int:
    """The release's rounding: nearest multiple of the patch size (Python round: halves to even)."""
    return max(patch, round(side / patch) * patch)


class MegaLocEncoder(ZooEncoder):
    name = 'megaloc'
    description = 'MegaLoc (CVPRW 2025): DINOv2 ViT-B/14 + SALAD 64x256+256 -> linear 8448-d, any size (x14)'
    default_config: ClassVar[dict[str, Any]] = {**ZOO_DEFAULTS, 'backbone': 'dinov2_vitb14'}
    size_multiple = 14

    def native_size(self) -> tuple[int, int]:
        return (322, 322)  # only used where one size must be assumed (catalogue, export)

    @property
    def input_size(self) -> tuple[int, int] | None:  # type: ignore[override]
        size = self.config.get('image_size')
        if size is not None:
            return (int(size[0]), int(size[1]))
        return EFFICIENTNET_SIZE if self.efficientnet else None

    def preprocess(self, images: list[np.ndarray]):
        size = self.input_size or tuple(round_to_patch(s) for s in images[0].shape[:2])
        return to_tensor_batch(images, size, self.interpolation, self.pixel_mean, self.pixel_std)

    def build_architecture(self, backbone_weights: str | None) -> nn.Module:
        trunk, channels = token_trunk(self, backbone_weights)
        return MegaLocModel(trunk, MegaLocAggregator(channels))

    @property
    def raw_dim(self) -> int:
        return FEAT_DIM
