"""MixVPR (WACV 2023): ResNet-50 cropped after layer3 + MixVPR feature mixing, as released.

Released configurations (ResNet-50, 320x320 input -> 1024 x 20 x 20 map, mix_depth 4, mlp_ratio 1):
``out_dim`` 4096 (1024 channels x 4 rows), 512 (256 x 2) and 128 (64 x 2). Bicubic resize (the
official demo), ImageNet mean/std. The map size is fixed by the image size: the released weights
only fit 320x320 (another ``image_size`` builds a MixVPR for that grid, random unless trained).

``weights: PATH`` loads the released checkpoint (``resnet50_MixVPR_<dim>_channels(..)_rows(..).ckpt``,
a plain or Lightning-wrapped state dict) strictly: ``backbone.model.{conv1,bn1,layer1..3}.*`` and
``aggregator.{mix.<i>.mix.{0,1,3},channel_proj,row_proj}.*``.

``backbone: efficientnet_lite0`` (for ``vpr-ros train``, not a release; see _zoo.py): the stride-16
stage (112 ch x 15 x 20 at 240x320) feeds the same mixer and projections.
"""
from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from vpr_ros.encoders._zoo import ZOO_DEFAULTS, BackboneAggregator, ZooEncoder, resnet_map_size
from vpr_ros.encoders.aggregators.mixvpr import MixVPR
from vpr_ros.errors import ConfigError

# out_dim -> (out_channels, out_rows)
MIXVPR_RELEASES: dict[int, tuple[int, int]] = {4096: (1024, 4), 512: (256, 2), 128: (64, 2)}


class MixVPREncoder(ZooEncoder):
    name = 'mixvpr'
    description = 'MixVPR (WACV 2023): ResNet-50 layer3 + feature mixing, 4096/512/128-d at 320x320'
    default_config: ClassVar[dict[str, Any]] = {**ZOO_DEFAULTS, 'out_dim': 4096, 'backbone': 'resnet50'}
    default_interpolation = 'bicubic'
    backbones = ('resnet50',)

    def _release(self) -> tuple[int, int]:
        out_dim = int(self.config['out_dim'])
        if out_dim not in MIXVPR_RELEASES:
            raise ConfigError(f'encoder mixvpr: out_dim must be one of {sorted(MIXVPR_RELEASES)}, '
                              f'got {out_dim}')
        return MIXVPR_RELEASES[out_dim]

    def native_size(self) -> tuple[int, int]:
        return (320, 320)

    def build_architecture(self, backbone_weights: str | None) -> nn.Module:
        channels, rows = self._release()
        h, w = resnet_map_size(*self.input_size, stride=16)  # TF 'SAME' padding halves the same way
        trunk, cin = self.backbone_trunk(16, backbone_weights)
        return BackboneAggregator(trunk, MixVPR(cin, h, w, channels, mix_depth=4, mlp_ratio=1, out_rows=rows))

    @property
    def raw_dim(self) -> int:
        channels, rows = self._release()
        return channels * rows
