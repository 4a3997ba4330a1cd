"""DINOv2-SALAD (CVPR 2024): DINOv2 ViT-B/14 (final norm applied) + SALAD optimal-transport aggregation.

8448-d (64 clusters x 128 + 256-d global token) at 322x322, H and W multiples of 14; resize with
area interpolation (the release evaluates with an anti-aliased bilinear PIL resize), ImageNet
mean/std. ``weights: PATH`` loads ``dino_salad.ckpt`` strictly: ``backbone.model.*`` (DINOv2 hub
names) and ``aggregator.{token_features,cluster_features,score}.*``, ``aggregator.dust_bin``.
``backbone: efficientnet_lite0`` (a training backbone, see _zoo.py): the stride-16 stage as the
patch map (300 patches at 240x320) and its spatial mean in place of the CLS token.
"""
from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from vpr_ros.encoders._zoo import ZOO_DEFAULTS, BackboneAggregator, ZooEncoder
from vpr_ros.encoders.aggregators.salad import SALAD


class SaladEncoder(ZooEncoder):
    name = 'salad'
    description = 'DINOv2-SALAD (CVPR 2024): ViT-B/14 + Sinkhorn aggregation, 8448-d at 322x322'
    default_config: ClassVar[dict[str, Any]] = {**ZOO_DEFAULTS, 'backbone': 'dinov2_vitb14'}
    size_multiple = 14
    backbones = ('dinov2_vitb14',)

    def native_size(self) -> tuple[int, int]:
        return (322, 322)

    def build_architecture(self, backbone_weights: str | None) -> nn.Module:
        trunk, channels = self.backbone_trunk(16, backbone_weights, token=True)
        return BackboneAggregator(trunk, SALAD(channels, 64, 128, 256))

    @property
    def raw_dim(self) -> int:
        return 64 * 128 + 256
