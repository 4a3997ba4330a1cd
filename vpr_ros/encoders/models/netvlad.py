"""ResNet + NetVLAD (Arandjelovic et al. 2016), in the deep-visual-geo-localization-benchmark form.

``backbone`` resnet18/50/101 cropped at ``crop`` layer3 ("conv4", the benchmark's choice: 256 /
1024 / 1024 channels) or layer4, ``clusters`` K = 64 -> K x C dims (65536 for ResNet-50 conv4).
480x640 input (the benchmark's), resized in float as the benchmark does (``resize_uint8``, see
_zoo.py), ImageNet mean/std.

* ``weights: PATH`` - a benchmark NetVLAD checkpoint (``best_model.pth`` of ``resnet{18,50,101}conv4
  -netvlad``; its ``model_state_dict``, ``module.`` prefix dropped) loaded strictly:
  ``backbone.{0,1,4,5,6}.*``, ``aggregation.centroids`` (K, C), ``aggregation.conv.weight`` (K, C, 1, 1).
* no ``weights`` - the NetVLAD layer is initialised on the map images, as the benchmark initialises it
  before training: k-means (100 iterations) on up to ``fit_descriptors`` L2-normalised local
  features sampled evenly over the map images, alpha from the centre margins. That state (centroids
  and assignment weights) is fitted by ``fit`` and stored in the map. Combine with
  ``backbone_weights: PATH`` (torchvision ImageNet ResNet) for a meaningful training-free NetVLAD.

``backbone: efficientnet_lite0`` (a training backbone, see _zoo.py): ``crop`` layer3 = the stride-16
stage (112 ch -> 7168-d), layer4 = the 1280-channel conv head.

Not supported: the original MATLAB VGG-16 NetVLAD (``Pitts30K_struct.mat``, hloc): not a torch
checkpoint and no VGG-16 backbone here.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from vpr_ros.encoders._zoo import (
    FLOAT_RESIZE,
    LEGACY_RESIZE,
    ZOO_DEFAULTS,
    SequentialBackboneModel,
    ZooEncoder,
)
from vpr_ros.encoders.aggregators.netvlad import NetVLAD
from vpr_ros.encoders.models.gem import cnn_channels, crop_stride
from vpr_ros.errors import ConfigError, VprError

_STATE_KEYS = ('netvlad.centroids', 'netvlad.conv_weight')


class NetVLADEncoder(ZooEncoder):
    name = 'netvlad'
    description = 'ResNet conv4 + NetVLAD (64 clusters; benchmark checkpoints, or k-means init on the map)'
    legacy_config: ClassVar[dict[str, Any]] = LEGACY_RESIZE
    default_config: ClassVar[dict[str, Any]] = {**ZOO_DEFAULTS, **FLOAT_RESIZE, 'backbone': 'resnet50',
                                                'crop': 'layer3',
                                                'clusters': 64, 'fit_descriptors': 50_000}
    backbones = ('resnet18', 'resnet34', 'resnet50', 'resnet101')

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        # Released weights carry the NetVLAD layer; otherwise it is fitted on the map images.
        self.trainable_fit = not self.config['weights']
        self._fitted = not self.trainable_fit

    def native_size(self) -> tuple[int, int]:
        return (480, 640)

    def _clusters(self) -> int:
        k = int(self.config['clusters'])
        if k < 2:
            raise ConfigError(f'encoder netvlad: clusters must be >= 2, got {k}')
        return k

    def build_architecture(self, backbone_weights: str | None) -> nn.Module:
        trunk, channels = self.backbone_trunk(crop_stride(self), backbone_weights)
        return SequentialBackboneModel(trunk, NetVLAD(channels, self._clusters()))

    def fingerprint_module(self) -> nn.Module:
        # The fitted layer is map state (stored with the map), not weights.
        return self.model.backbone

    @property
    def raw_dim(self) -> int:
        return cnn_channels(self) * self._clusters()

    # ----- map fitting -------------------------------------------------------------------------
    def _fit(self, images: Sequence[np.ndarray]) -> None:
        target = int(self.config['fit_descriptors'])
        per_image = max(1, -(-target // len(images)))
        rng = np.random.default_rng(0)
        chunks = []
        for batch in self._batches(images):
            with torch.inference_mode():
                fmap = self.model.backbone(self.preprocess(batch)).float()
            local = fmap.flatten(2).transpose(1, 2).numpy()  # (B, N, C)
            for feats in local:
                take = min(per_image, len(feats))
                chunks.append(feats[rng.choice(len(feats), take, replace=False)])
        desc = np.concatenate(chunks)
        if len(desc) < self._clusters():
            raise VprError(f'encoder netvlad: {len(desc)} local features from {len(images)} images '
                           'is fewer than '
                           f'{self._clusters()} clusters; use more or larger map images')
        self.model.aggregation.init_from_kmeans(desc, seed=0, niter=100, max_points=target)
        self._fitted = True

    def _is_fitted(self) -> bool:
        return self._fitted

    def _get_state(self) -> dict[str, np.ndarray]:
        if not self.trainable_fit or not self._fitted:
            return {}
        layer = self.model.aggregation
        return {'netvlad.centroids': layer.centroids.detach().numpy().copy(),
                'netvlad.conv_weight': layer.conv.weight.detach().numpy()[:, :, 0, 0].copy()}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        if not self.trainable_fit:
            return
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise VprError(f'encoder netvlad: map state lacks {missing}')
        layer = self.model.aggregation
        centroids = torch.from_numpy(np.asarray(state['netvlad.centroids'], np.float32))
        weight = torch.from_numpy(np.asarray(state['netvlad.conv_weight'], np.float32))
        expected = tuple(layer.centroids.shape)
        if tuple(centroids.shape) != expected or tuple(weight.shape) != expected:
            raise VprError(f'encoder netvlad: map state shapes {tuple(centroids.shape)}/'
                           f'{tuple(weight.shape)} do not match the layer {expected}')
        with torch.no_grad():
            layer.centroids.copy_(centroids)
            layer.conv.weight.copy_(weight[:, :, None, None])
        self._fitted = True
