"""ResNet (18/34/50/101/152) in plain torch with torchvision's module names.

Module names and structure follow ``torchvision.models.resnet`` (``conv1``, ``bn1``, ``relu``,
``maxpool``, ``layer1``..``layer4`` of BasicBlock/Bottleneck with ``downsample.0/.1``, ``avgpool``,
``fc``), and the Bottleneck puts its stride on the 3x3 conv (torchvision's "ResNet v1.5"), so a
torchvision ImageNet checkpoint (``resnet50-0676ba61.pth``, ``resnet18-f37072fd.pth``...) loads
strictly. ``features`` stops after the ``crop`` stage (BoQ uses ResNet-50 cropped after layer3).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

# depth -> (block kind, blocks per stage)
RESNET_DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
}
STAGES = ('layer1', 'layer2', 'layer3', 'layer4')
# Names accepted by ResNet.trainable_from, in forward order ('conv1' = the stem conv1 + bn1).
TRAINABLE_POINTS = ('conv1',) + STAGES + ('fc',)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual (ResNet-18/34); stride on the first conv."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride, v1.5), 1x1 expand x4, with a residual (ResNet-50+)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNet(nn.Module):
    """torchvision-compatible ResNet whose ``features`` end after the ``crop`` stage.

    ``full=True`` (default) keeps the stages after ``crop`` and the ImageNet classifier ``fc`` so a
    complete torchvision checkpoint loads strictly; ``full=False`` builds only what ``features``
    uses, so a checkpoint saved from a cropped network (no layer4/fc keys) loads strictly instead.
    """

    def __init__(self, depth: int = 50, crop: str = 'layer4', num_classes: int = 1000,
                 full: bool = True) -> None:
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f'unsupported ResNet depth {depth}; supported: {sorted(RESNET_DEPTHS)}')
        if crop not in ('layer3', 'layer4'):
            raise ValueError(f"ResNet crop must be 'layer3' or 'layer4', got {crop!r}")
        kind, counts = RESNET_DEPTHS[depth]
        block = BasicBlock if kind == 'basic' else Bottleneck
        self.depth = depth
        self.crop = crop
        self.full = full
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        built = STAGES if full else STAGES[:STAGES.index(crop) + 1]
        cin = 64
        for i, name in enumerate(built):
            planes = 64 * 2 ** i
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or cin != planes * block.expansion:
                downsample = nn.Sequential(_conv1x1(cin, planes * block.expansion, stride),
                                           nn.BatchNorm2d(planes * block.expansion))
            blocks = [block(cin, planes, stride, downsample)]
            cin = planes * block.expansion
            blocks += [block(cin, planes) for _ in range(1, counts[i])]
            setattr(self, name, nn.Sequential(*blocks))
        if full:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512 * block.expansion, num_classes)
        self._out_channels = 64 * 2 ** STAGES.index(crop) * block.expansion
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation, so an un-loaded network behaves like theirs.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def out_channels(self) -> int:
        """Channels of the ``features`` map (R50: 1024 after layer3, 2048 after layer4; R18: 256/512)."""
        return self._out_channels

    @property
    def stride(self) -> int:
        """Input pixels per ``features`` cell: 16 after layer3, 32 after layer4."""
        return 16 if self.crop == 'layer3' else 32

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised image -> (B, out_channels, ~H/stride, ~W/stride) map after ``crop``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in STAGES[:STAGES.index(self.crop) + 1]:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The full ImageNet classifier (all four stages, average pool, ``fc``), whatever ``crop`` is."""
        if not self.full:
            raise RuntimeError('logits() needs ResNet(full=True): layer4/fc were not built')
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in STAGES:
            x = getattr(self, name)(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def trainable_from(self, name: str) -> None:
        """Freeze (requires_grad=False) every stage before ``name``; ``name`` and later ones train.

        ``name`` is one of ``TRAINABLE_POINTS`` ('conv1' = everything trains, 'fc' = only the
        classifier). BoQ's default (only layer3 trains) is ``trainable_from('layer3')``. This only
        stops gradients: BatchNorm running statistics still update in ``train()`` mode.
        """
        if name not in TRAINABLE_POINTS:
            raise ValueError(f'unknown ResNet stage {name!r}; one of {list(TRAINABLE_POINTS)}')
        first = TRAINABLE_POINTS.index(name)
        for i, point in enumerate(TRAINABLE_POINTS):
            modules = [self.conv1, self.bn1] if point == 'conv1' else [getattr(self, point, None)]
            for module in modules:
                if module is not None:
                    module.requires_grad_(i >= first)


def fill_batchnorm_counters(module: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """Copy of ``state`` with a zero ``num_batches_tracked`` added for every BatchNorm of ``module``
    whose other entries are present but whose counter is not.

    torchvision's ImageNet ResNet files date from before PyTorch 0.4.1 added that buffer, so they
    lack it. The counter only matters for momentum=None BatchNorm (not used here); zero is the value
    of a freshly built network. BatchNorms absent from ``state`` stay absent, so strict loading
    still reports them.
    """
    out = dict(state)
    for name, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.track_running_stats:
            prefix = f'{name}.' if name else ''
            if f'{prefix}running_mean' in out and f'{prefix}num_batches_tracked' not in out:
                out[f'{prefix}num_batches_tracked'] = torch.tensor(0, dtype=torch.long)
    return out


def load_torchvision_resnet(model: ResNet, path: str) -> None:
    """Load a torchvision ImageNet ResNet checkpoint into ``model`` strictly (counters filled)."""
    from vpr_ros.encoders.weights import load_strict, read_state_dict

    load_strict(model, fill_batchnorm_counters(model, read_state_dict(path)), path)
