"""BoQ (Bag of Learnable Queries, CVPR 2024) on ResNet-50 or DINOv2 ViT-B/14, as released.

``backbone: resnet50`` - ResNet-50 cropped after layer3 (1024 ch, stride 16), 384x384 input,
16384-d descriptor; ``backbone: dinov2_vitb14`` - DINOv2 ViT-B/14 patch tokens without the final
LayerNorm (768 ch, 23x23 patches at 322x322), 12288-d. Preprocessing as released: bicubic
(anti-aliased) resize of the float image (``resize_uint8``, see _zoo.py), ImageNet mean/std.

``weights: PATH`` loads ``resnet50_16384.pth`` / ``dinov2_12288.pth`` from the BoQ v1.0 release
strictly: keys ``backbone.net.{0,1,4,5,6}.*`` (ResNet: Sequential(conv1, bn1, relu, maxpool,
layer1, layer2, layer3)) or ``backbone.dino.*`` (DINOv2 hub names, incl. the unused ``norm`` and
``mask_token``), then ``aggregator.*`` (see aggregators/boq.py).

``backbone: efficientnet_lite0`` (for ``vpr-ros train``, not a release; see _zoo.py): the stride-16
stage (112 ch, 15x20 tokens at 240x320) and a lighter BoQ (d=256, 4 heads, 64 queries, 2 blocks,
32 rows -> 8192-d) so that training runs on a CPU.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from vpr_ros.encoders._zoo import EFFICIENTNET_SIZE, FLOAT_RESIZE, LEGACY_RESIZE, ZOO_DEFAULTS, ZooEncoder
from vpr_ros.encoders.aggregators.boq import BOQ_DINOV2_12288, BOQ_RESNET50_16384, BoQ, BoQConfig
from vpr_ros.encoders.backbones import EFFICIENTNET_BACKBONES, DinoV2Trunk, ResNetTrunk, resnet_stages
from vpr_ros.errors import ConfigError

# backbone name -> (aggregator config, native (H, W))
BOQ_RELEASES: dict[str, tuple[BoQConfig, tuple[int, int]]] = {
    'resnet50': (BOQ_RESNET50_16384, (384, 384)),
    'dinov2_vitb14': (BOQ_DINOV2_12288, (322, 322)),
} | {name: (BoQConfig(in_channels=120 if name == 'efficientnet_lite2' else 112, proj_channels=256,
                      num_queries=64, num_layers=2, row_dim=32), EFFICIENTNET_SIZE)
     for name in EFFICIENTNET_BACKBONES}


class BoQResNetTrunk(nn.Module):
    """ResNet stages as ``net`` (an nn.Sequential), the name BoQ's checkpoint uses."""

    def __init__(self, stages: list[nn.Module]) -> None:
        super().__init__()
        self.net = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BoQDinoTrunk(nn.Module):
    """DINOv2 as ``dino``; returns the patch map of the last block, final norm not applied (as BoQ)."""

    def __init__(self, dino: nn.Module) -> None:
        super().__init__()
        self.dino = dino

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dino.forward_features(x, apply_norm=False)[0]


class BoQModel(nn.Module):
    """backbone + BoQ aggregator; ``forward`` gives the descriptor only (the aggregator's ``[0]``)."""

    def __init__(self, backbone: nn.Module, aggregator: BoQ) -> None:
        super().__init__()
        self.backbone = backbone
        self.aggregator = aggregator

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.aggregator(features)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def forward_with_attention(
            self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], tuple[int, int]]:
        """(descriptor, per-block cross-attention (B, M, N), token grid (h, w) with N = h*w)."""
        fmap = self.backbone(x)
        desc, attns = self.aggregator(fmap)
        return desc, attns, (int(fmap.shape[-2]), int(fmap.shape[-1]))


class BoQEncoder(ZooEncoder):
    name = 'boq'
    description = 'BoQ (CVPR 2024): ResNet-50 16384-d at 384x384 or DINOv2 ViT-B/14 12288-d at 322x322'
    default_config: ClassVar[dict[str, Any]] = {**ZOO_DEFAULTS, **FLOAT_RESIZE, 'backbone': 'resnet50'}
    legacy_config: ClassVar[dict[str, Any]] = LEGACY_RESIZE
    default_interpolation = 'bicubic'
    backbones = ('resnet50', 'dinov2_vitb14')

    def _release(self) -> tuple[BoQConfig, tuple[int, int]]:
        backbone = self.config['backbone']
        if backbone not in BOQ_RELEASES:
            raise ConfigError(f'encoder boq: backbone must be one of {sorted(BOQ_RELEASES)}, '
                              f'got {backbone!r}')
        return BOQ_RELEASES[backbone]

    def native_size(self) -> tuple[int, int]:
        return self._release()[1]

    def build_architecture(self, backbone_weights: str | None) -> nn.Module:
        agg_config, _ = self._release()
        trunk, _ = self.backbone_trunk(16, backbone_weights)
        # BoQ's own names: the ResNet stages as backbone.net.*, DINOv2 as backbone.dino.*
        if isinstance(trunk, ResNetTrunk):
            trunk = BoQResNetTrunk(resnet_stages(trunk.model))
        elif isinstance(trunk, DinoV2Trunk):
            trunk = BoQDinoTrunk(trunk.model)
        return BoQModel(trunk, agg_config.build())

    @property
    def raw_dim(self) -> int:
        return self._release()[0].output_dim

    def attention(self, images: list) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """Cross-attention maps of each block for RGB images: ([(N, M, h*w)] per block, (h, w))."""
        batch = self.preprocess(images)
        with torch.inference_mode():
            _, attns, grid = self.model.forward_with_attention(batch)
        return [a.float() for a in attns], grid
