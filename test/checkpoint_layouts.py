"""Official checkpoint key layouts, written from the published architectures (no torchvision, no
download), and random values to fill them. Shared by the backbone tests and the release tests."""
from __future__ import annotations

from typing import Any

Layout = dict[str, tuple[int, ...]]

RESNET_BLOCKS = {18: ('basic', [2, 2, 2, 2]), 50: ('bottleneck', [3, 4, 6, 3]),
                 101: ('bottleneck', [3, 4, 23, 3])}


def bn(prefix: str, c: int) -> Layout:
    return {f'{prefix}.weight': (c,), f'{prefix}.bias': (c,), f'{prefix}.running_mean': (c,),
            f'{prefix}.running_var': (c,), f'{prefix}.num_batches_tracked': ()}


def torchvision_resnet(depth: int, upto: int = 4, names: dict[str, str] | None = None,
                       fc: bool = False) -> Layout:
    """torchvision ResNet keys up to stage ``upto`` (3 or 4); ``names`` renames top-level children;
    ``fc`` adds the ImageNet classifier (the full ``resnet{depth}().state_dict()``)."""
    names = names or {}
    kind, counts = RESNET_BLOCKS[depth]
    exp = 4 if kind == 'bottleneck' else 1
    out = {f'{names.get("conv1", "conv1")}.weight': (64, 3, 7, 7), **bn(names.get('bn1', 'bn1'), 64)}
    cin = 64
    for s in range(upto):
        planes = 64 * 2 ** s
        layer = names.get(f'layer{s + 1}', f'layer{s + 1}')
        for b in range(counts[s]):
            p = f'{layer}.{b}'
            if kind == 'bottleneck':
                out |= {f'{p}.conv1.weight': (planes, cin, 1, 1), **bn(f'{p}.bn1', planes),
                        f'{p}.conv2.weight': (planes, planes, 3, 3), **bn(f'{p}.bn2', planes),
                        f'{p}.conv3.weight': (planes * 4, planes, 1, 1), **bn(f'{p}.bn3', planes * 4)}
            else:
                out |= {f'{p}.conv1.weight': (planes, cin, 3, 3), **bn(f'{p}.bn1', planes),
                        f'{p}.conv2.weight': (planes, planes, 3, 3), **bn(f'{p}.bn2', planes)}
            if b == 0 and (s > 0 or cin != planes * exp):
                out |= {f'{p}.downsample.0.weight': (planes * exp, cin, 1, 1),
                        **bn(f'{p}.downsample.1', planes * exp)}
            cin = planes * exp
    if fc:
        out |= {'fc.weight': (1000, 512 * exp), 'fc.bias': (1000,)}
    return out


def dinov2_hub(dim: int, depth: int = 12, prefix: str = '', mask_token: bool = True) -> Layout:
    """Keys of the register-free hub ``dinov2_vit?14_pretrain.pth`` (518 px, patch 14, MLP ffn).

    ``mask_token=False``: the DINOv2 copy of MegaLoc's Hugging Face release, the same names without
    the masked-image-modelling token."""
    out: Layout = {
        'cls_token': (1, 1, dim), 'pos_embed': (1, 1 + 37 * 37, dim),
        'patch_embed.proj.weight': (dim, 3, 14, 14), 'patch_embed.proj.bias': (dim,),
        'norm.weight': (dim,), 'norm.bias': (dim,)}
    if mask_token:
        out['mask_token'] = (1, dim)
    for i in range(depth):
        p = f'blocks.{i}'
        out |= {f'{p}.norm1.weight': (dim,), f'{p}.norm1.bias': (dim,),
                f'{p}.attn.qkv.weight': (3 * dim, dim), f'{p}.attn.qkv.bias': (3 * dim,),
                f'{p}.attn.proj.weight': (dim, dim), f'{p}.attn.proj.bias': (dim,),
                f'{p}.ls1.gamma': (dim,),
                f'{p}.norm2.weight': (dim,), f'{p}.norm2.bias': (dim,),
                f'{p}.mlp.fc1.weight': (4 * dim, dim), f'{p}.mlp.fc1.bias': (4 * dim,),
                f'{p}.mlp.fc2.weight': (dim, 4 * dim), f'{p}.mlp.fc2.bias': (dim,),
                f'{p}.ls2.gamma': (dim,)}
    return {prefix + k: v for k, v in out.items()}


def fill(layout: Layout, seed: int = 0) -> dict[str, Any]:
    """Random values that keep a deep network finite: BN/LN scales near 1, positive variances."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in layout.items():
        if key.endswith('num_batches_tracked'):
            out[key] = torch.tensor(7, dtype=torch.long)
        elif key.endswith('running_var'):
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith('.p'):
            out[key] = torch.full(shape, 3.0) + 0.1 * torch.rand(shape, generator=g)
        elif key.endswith(('gamma',)) or (len(shape) == 1 and key.endswith('weight')):
            out[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            out[key] = 0.05 * torch.randn(shape, generator=g)
    return out
