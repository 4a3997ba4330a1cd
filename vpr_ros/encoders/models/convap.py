"""Conv-AP (GSV-Cities, Neurocomputing 2022): full ResNet-50 (layer4, 2048 ch) + Conv-AP, as released.

Released ``out_dim`` 8192 / 4096 / 2048 / 512 = (2048 / 1024 / 512 / 128 channels) x 2 x 2, at
320x320 (bilinear resize: the 8192-d model's training resize), ImageNet mean/std.
``weights: PATH`` loads ``resnet50_ConvAP_<C>_2x2.ckpt`` strictly: ``backbone.model.{conv1,bn1,
layer1..4}.*`` and ``aggregator.channel_pool.{weight,bias}``. ``backbone: efficientnet_lite0`` (a
training backbone, see _zoo.py): the 1280-channel conv head.
"""
from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from vpr_ros.encoders._zoo import ZOO_DEFAULTS, BackboneAggregator, ZooEncoder
from vpr_ros.encoders.aggregators.convap import ConvAP
from vpr_ros.errors import ConfigError

CONVAP_RELEASES = (8192, 4096, 2048, 512)


class ConvAPEncoder(ZooEncoder):
    name = 'convap'
    description = ('Conv-AP (GSV-Cities): ResNet-50 + 1x1 conv + 2x2 average pool, '
                   '8192/4096/2048/512-d at 320x320')
    default_config: ClassVar[dict[str, Any]] = {**ZOO_DEFAULTS, 'out_dim': 8192, 'backbone': 'resnet50'}
    default_interpolation = 'bilinear'
    backbones = ('resnet50',)

    def native_size(self) -> tuple[int, int]:
        return (320, 320)

    def _out_dim(self) -> int:
        out_dim = int(self.config['out_dim'])
        if out_dim not in CONVAP_RELEASES:
            raise ConfigError(f'encoder convap: out_dim must be one of {list(CONVAP_RELEASES)}, '
                              f'got {out_dim}')
        return out_dim

    def build_architecture(self, backbone_weights: str | None) -> nn.Module:
        trunk, channels = self.backbone_trunk(32, backbone_weights)
        return BackboneAggregator(trunk, ConvAP(channels, self._out_dim() // 4, 2, 2))

    @property
    def raw_dim(self) -> int:
        return self._out_dim()
