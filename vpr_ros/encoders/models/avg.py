"""ResNet + global average pooling (AVG / SPoC), the simplest pooled-CNN baseline.

``backbone`` resnet18/50/101/152, ``crop`` layer4 (2048-d for ResNet-50) or layer3,
``l2_before_pool`` as in gem.py. 480x640 input, ImageNet mean/std. There is no released AVG
place-recognition model: ``weights: PATH`` loads a checkpoint in this layout (``backbone.{0,1,4,5,6[,7]}.*``,
optional ``module.`` prefix; e.g. a deep-visual-geo-localization-benchmark SPoC model), and
``backbone_weights: PATH`` a torchvision ImageNet ResNet.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from vpr_ros.encoders._zoo import ZOO_DEFAULTS, SequentialBackboneModel, ZooEncoder
from vpr_ros.encoders.backbones import RESNET_NAMES
from vpr_ros.encoders.models.gem import cnn_channels, crop_stride, pooling_head


class MeanPool(nn.Module):
    """Spatial mean: (B, C, H, W) -> (B, C, 1, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1), keepdim=True)


class AvgEncoder(ZooEncoder):
    name = 'avg'
    description = 'ResNet (ImageNet or fine-tuned) + global average pooling, 2048-d (ResNet-50) at 480x640'
    default_config: ClassVar[dict[str, Any]] = {**ZOO_DEFAULTS, 'backbone': 'resnet50', 'crop': 'layer4',
                                                'l2_before_pool': False}
    backbones = tuple(RESNET_NAMES)

    def native_size(self) -> tuple[int, int]:
        return (480, 640)

    def build_architecture(self, backbone_weights: str | None) -> nn.Module:
        head = pooling_head(MeanPool(), bool(self.config['l2_before_pool']))
        return SequentialBackboneModel(self.backbone_trunk(crop_stride(self), backbone_weights)[0], head)

    @property
    def raw_dim(self) -> int:
        return cnn_channels(self)
