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

import torch
from torch import nn

from vpr_ros.encoders._zoo import (
    ZOO_DEFAULTS,
    BackboneAggregator,
    ZooEncoder,
    check_patch_multiple,
    dinov2_backbone,
    efficientnet_trunk,
)
from vpr_ros.encoders.aggregators.salad import SALAD
from vpr_ros.errors import ConfigError


class DinoTokenTrunk(nn.Module):
    """DINOv2 as ``model``; returns (normed patch map, normed CLS token), SALAD's backbone output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_features(x, apply_norm=True)


def token_trunk(encoder: ZooEncoder, backbone_weights: str | None) -> tuple[nn.Module, int]:
    """(backbone giving (patch map, token), channels) for SALAD-style heads."""
    if encoder.efficientnet:
        eff = efficientnet_trunk(encoder.config['backbone'], 16, backbone_weights, with_token=True)
        return eff, eff.out_channels
    if encoder.config['backbone'] != 'dinov2_vitb14':
        raise ConfigError(f'encoder {encoder.name!r}: backbone must be dinov2_vitb14 or '
                          'efficientnet_lite0/1/2, '
                          f'got {encoder.config["backbone"]!r}')
    if encoder.input_size is not None:
        check_patch_multiple(encoder.name, encoder.input_size)
    return DinoTokenTrunk(dinov2_backbone('dinov2_vitb14', backbone_weights)), 768


class SaladEncoder(ZooEncoder):
    name = 'salad'
    description = 'DINOv2-SALAD (CVPR 2024): ViT-B/14 + Sinkhorn aggregation, 8448-d at 322x322'
    default_config: ClassVar[dict[str, Any]] = {**ZOO_DEFAULTS, 'backbone': 'dinov2_vitb14'}
    size_multiple = 14

    def native_size(self) -> tuple[int, int]:
        return (322, 322)

    def build_architecture(self, backbone_weights: str | None) -> nn.Module:
        trunk, channels = token_trunk(self, backbone_weights)
        return BackboneAggregator(trunk, SALAD(channels, 64, 128, 256))

    @property
    def raw_dim(self) -> int:
        return 64 * 128 + 256
