"""ResNet + GeM pooling (Radenovic et al.), the classic training-free / fine-tuned VPR baseline.

``backbone`` resnet18/50/101/152, ``crop`` layer4 (full, 2048-d for ResNet-50) or layer3 (1024-d),
``p`` the GeM exponent (3), ``l2_before_pool`` (L2-normalise each local feature before pooling, the
deep-visual-geo-localization-benchmark default). 480x640 input, resized in float as the benchmark
does (``resize_uint8``, see _zoo.py), ImageNet mean/std.

``weights: PATH`` loads a benchmark (DVGL) ResNet-GeM checkpoint strictly (its ``model_state_dict``,
``module.`` prefix dropped): ``backbone.{0,1,4,5,6[,7]}.*`` and ``aggregation.<i>.p`` (i = 1 with
``l2_before_pool``, else 0) - set ``backbone``/``crop``/``l2_before_pool`` to the checkpoint's. The
``-fc`` variants (GeM + fully connected) are not supported. ``backbone_weights: PATH`` = a
torchvision ImageNet ResNet: the usual training-free GeM. ``backbone: efficientnet_lite0`` (a
training backbone, see _zoo.py): ``crop`` layer4 = the 1280-channel conv head, layer3 = the
stride-16 stage.
"""
from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from vpr_ros.encoders._zoo import (
    FLOAT_RESIZE,
    LEGACY_RESIZE,
    ZOO_DEFAULTS,
    SequentialBackboneModel,
    ZooEncoder,
)
from vpr_ros.encoders.aggregators.cosplace import Flatten, GeMPool, L2Norm
from vpr_ros.encoders.backbones import RESNET_NAMES, backbone_channels
from vpr_ros.errors import ConfigError

CROP_STRIDES = {'layer3': 16, 'layer4': 32}


def pooling_head(pool: nn.Module, l2_before_pool: bool) -> nn.Sequential:
    """The benchmark's layout: [L2Norm, pool, Flatten] or [pool, L2Norm, Flatten]."""
    if l2_before_pool:
        return nn.Sequential(L2Norm(1), pool, Flatten())
    return nn.Sequential(pool, L2Norm(1), Flatten())


def crop_stride(encoder: ZooEncoder) -> int:
    """Total stride of the configured ``crop``: a ResNet stage, or EfficientNet's stride-16 stage
    (layer3) / conv head (layer4)."""
    crop = encoder.config['crop']
    if crop not in CROP_STRIDES:
        raise ConfigError(f'encoder {encoder.name!r}: crop must be layer3 or layer4, got {crop!r}')
    return CROP_STRIDES[crop]


def cnn_channels(encoder: ZooEncoder) -> int:
    return backbone_channels(encoder.config['backbone'], crop_stride(encoder))


class GeMEncoder(ZooEncoder):
    name = 'gem'
    description = 'ResNet (ImageNet or fine-tuned) + GeM pooling, 2048-d (ResNet-50 full) at 480x640'
    legacy_config: ClassVar[dict[str, Any]] = LEGACY_RESIZE
    default_config: ClassVar[dict[str, Any]] = {**ZOO_DEFAULTS, **FLOAT_RESIZE, 'backbone': 'resnet50',
                                                'crop': 'layer4',
                                                'p': 3.0, 'l2_before_pool': False}
    backbones = tuple(RESNET_NAMES)

    def native_size(self) -> tuple[int, int]:
        return (480, 640)

    def build_architecture(self, backbone_weights: str | None) -> nn.Module:
        head = pooling_head(GeMPool(float(self.config['p'])), bool(self.config['l2_before_pool']))
        return SequentialBackboneModel(self.backbone_trunk(crop_stride(self), backbone_weights)[0], head)

    @property
    def raw_dim(self) -> int:
        return cnn_channels(self)
