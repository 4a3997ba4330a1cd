"""CosPlace (CVPR 2022): ResNet (all conv stages) + L2 -> GeM -> FC -> L2, as released.

Released backbones/dims (``{backbone}_{dim}_cosplace.pth``): ResNet18 32..512, ResNet50 /
ResNet101 / ResNet152 32..2048 (``out_dim``: any power of two in that range). The VGG16 releases
are not supported (no VGG backbone here). Evaluated at 480x640 (``image_size`` [480, 640]),
ImageNet mean/std. ``weights: PATH`` loads the release strictly: ``backbone.{0,1,4,5,6,7}.*``
(Sequential of torchvision ResNet children) and ``aggregation.{1.p,3.weight,3.bias}``.
``backbone: efficientnet_lite0`` (a training backbone, see _zoo.py): the 1280-channel conv head,
``out_dim`` 32..1024.
"""
from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from vpr_ros.encoders._zoo import ZOO_DEFAULTS, SequentialBackboneModel, ZooEncoder
from vpr_ros.encoders.aggregators.cosplace import CosPlaceHead
from vpr_ros.encoders.backbones import EFFICIENTNET_BACKBONES
from vpr_ros.errors import ConfigError

COSPLACE_BACKBONES = ('resnet18', 'resnet50', 'resnet101', 'resnet152')
COSPLACE_DIMS = {'resnet18': (32, 64, 128, 256, 512)} | {
    b: (32, 64, 128, 256, 512, 1024, 2048) for b in ('resnet50', 'resnet101', 'resnet152')} | {
    b: (32, 64, 128, 256, 512, 1024) for b in EFFICIENTNET_BACKBONES}


class CosPlaceEncoder(ZooEncoder):
    name = 'cosplace'
    description = 'CosPlace (CVPR 2022): ResNet + GeM + FC, 32-2048-d (ResNet-50 2048-d default) at 480x640'
    default_config: ClassVar[dict[str, Any]] = {**ZOO_DEFAULTS, 'backbone': 'resnet50', 'out_dim': 2048}
    backbones = COSPLACE_BACKBONES

    def native_size(self) -> tuple[int, int]:
        return (480, 640)

    def _out_dim(self) -> int:
        backbone, out_dim = self.config['backbone'], int(self.config['out_dim'])
        if backbone == 'vgg16':
            raise ConfigError('encoder cosplace: the VGG16 CosPlace releases are not supported (no VGG-16 '
                              'backbone in vpr_ros); use resnet18/50/101/152')
        if backbone in COSPLACE_DIMS and out_dim not in COSPLACE_DIMS[backbone]:
            raise ConfigError(f'encoder cosplace: {backbone} was released with out_dim in '
                              f'{list(COSPLACE_DIMS[backbone])}, got {out_dim}')
        return out_dim

    def build_architecture(self, backbone_weights: str | None) -> nn.Module:
        out_dim = self._out_dim()
        trunk, channels = self.backbone_trunk(32, backbone_weights)
        return SequentialBackboneModel(trunk, CosPlaceHead(channels, out_dim))

    @property
    def raw_dim(self) -> int:
        return self._out_dim()
