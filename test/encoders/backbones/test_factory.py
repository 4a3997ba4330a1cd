"""The backbone factory: every backbone by name and stride, its channels, and the releases' checks."""
from __future__ import annotations

import pytest
import torch

from vpr_ros.encoders import create_encoder
from vpr_ros.encoders.backbones import BACKBONES, backbone_channels, build_backbone
from vpr_ros.errors import ConfigError

# (name, stride) -> (channels, first state-dict key under the trunk: the hub/torchvision names)
EXPECTED = {('resnet18', 16): (256, 'model.conv1.weight'), ('resnet50', 32): (2048, 'model.conv1.weight'),
            ('resnet152', 16): (1024, 'model.conv1.weight'),
            ('efficientnet_lite0', 16): (112, 'model._conv_stem.weight'),
            ('efficientnet_lite0', 32): (1280, 'model._conv_stem.weight'),
            ('dinov2_vits14', 14): (384, 'model.cls_token'), ('dinov2_vitb14', 14): (768, 'model.cls_token')}


@pytest.mark.parametrize('name, stride', list(EXPECTED))
def test_every_backbone_is_built_by_name_with_the_channels_it_announces(name: str, stride: int) -> None:
    with torch.device('meta'):
        trunk, channels = build_backbone(name, stride, None)
    assert (channels, next(iter(trunk.state_dict()))) == EXPECTED[name, stride]
    assert backbone_channels(name, stride) == channels
    assert {n for n, _ in EXPECTED} | {'resnet34', 'resnet101', 'efficientnet_lite1', 'efficientnet_lite2'} \
        == set(BACKBONES)


def test_the_trunk_gives_its_map_at_the_stride_and_the_token_heads_their_global_token() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 96)
    resnet, _ = build_backbone('resnet18', 16, None)
    assert tuple(resnet.eval()(x).shape) == (2, 256, 4, 6)
    vit, _ = build_backbone('dinov2_vits14', 14, None, token=True)
    fmap, cls = vit.eval()(torch.randn(1, 3, 56, 70))
    assert tuple(fmap.shape) == (1, 384, 4, 5) and tuple(cls.shape) == (1, 384)


def test_unknown_names_strides_and_tokenless_backbones_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unsupported backbone 'vgg16'"):
        build_backbone('vgg16', 16, None)
    with pytest.raises(ConfigError, match='no feature map at stride 8'):
        backbone_channels('resnet50', 8)
    with pytest.raises(ConfigError, match='global token'):
        build_backbone('resnet50', 16, None, token=True)


def test_a_release_accepts_only_the_backbones_it_was_released_with_and_efficientnet() -> None:
    expected = ("encoder 'convap': backbone must be one of resnet50, efficientnet_lite0, efficientnet_lite1, "
                "efficientnet_lite2, got 'resnet18'")
    with pytest.raises(ConfigError, match=expected):
        create_encoder('convap', {'backbone': 'resnet18'})
    with pytest.raises(ConfigError, match="encoder 'salad': backbone must be one of dinov2_vitb14"):
        create_encoder('salad', {'backbone': 'dinov2_vits14'})
