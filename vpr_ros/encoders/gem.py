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
    cropped_resnet,
    efficientnet_channels,
    efficientnet_trunk,
    resnet_depth,
    resnet_stages,
)
from vpr_ros.encoders.aggregators.cosplace import Flatten, GeMPool, L2Norm
from vpr_ros.errors import ConfigError


def pooling_head(pool: nn.Module, l2_before_pool: bool) -> nn.Sequential:
    """The benchmark's layout: [L2Norm, pool, Flatten] or [pool, L2Norm, Flatten]."""
    if l2_before_pool:
        return nn.Sequential(L2Norm(1), pool, Flatten())
    return nn.Sequential(pool, L2Norm(1), Flatten())


def resnet_crop(encoder: ZooEncoder) -> tuple[int, str]:
    return resnet_depth(encoder.config['backbone']), _crop(encoder)


def resnet_channels(depth: int, crop: str) -> int:
    return (256 if crop == 'layer3' else 512) * (1 if depth < 50 else 4)


def _crop(encoder: ZooEncoder) -> str:
    crop = encoder.config['crop']
    if crop not in ('layer3', 'layer4'):
        raise ConfigError(f'encoder {encoder.name!r}: crop must be layer3 or layer4, got {crop!r}')
    return crop


def cnn_trunk(encoder: ZooEncoder, backbone_weights: str | None,
              max_depth: int = 152) -> list[nn.Module] | nn.Module:
    """The ``backbone``/``crop`` of ``encoder``: ResNet stages (released layout) or an EfficientNet trunk."""
    if encoder.efficientnet:
        return efficientnet_trunk(encoder.config['backbone'], 16 if _crop(encoder) == 'layer3' else 32,
                                  backbone_weights)
    depth, crop = resnet_crop(encoder)
    if depth > max_depth:
        raise ConfigError(f'encoder {encoder.name!r}: backbone {encoder.config["backbone"]} '
                          'is not supported here')
    return resnet_stages(cropped_resnet(depth, crop, backbone_weights))


def cnn_channels(encoder: ZooEncoder) -> int:
    if encoder.efficientnet:
        return efficientnet_channels(encoder.config['backbone'], 16 if _crop(encoder) == 'layer3' else 32)
    return resnet_channels(*resnet_crop(encoder))


class GeMEncoder(ZooEncoder):
    name = 'gem'
    description = 'ResNet (ImageNet or fine-tuned) + GeM pooling, 2048-d (ResNet-50 full) at 480x640'
    legacy_config: ClassVar[dict[str, Any]] = LEGACY_RESIZE
    default_config: ClassVar[dict[str, Any]] = {**ZOO_DEFAULTS, **FLOAT_RESIZE, 'backbone': 'resnet50',
                                                'crop': 'layer4',
                                                'p': 3.0, 'l2_before_pool': False}

    def native_size(self) -> tuple[int, int]:
        return (480, 640)

    def build_architecture(self, backbone_weights: str | None) -> nn.Module:
        head = pooling_head(GeMPool(float(self.config['p'])), bool(self.config['l2_before_pool']))
        return SequentialBackboneModel(cnn_trunk(self, backbone_weights), head)

    @property
    def raw_dim(self) -> int:
        return cnn_channels(self)
