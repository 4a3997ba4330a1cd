"""The encoder catalogue behind ``vpr-ros encoders``: what each encoder outputs and costs.

Networks are built on PyTorch's ``meta`` device (shapes only, no memory, no initialisation), so
listing every encoder takes about a second and needs no weights files.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any

from vpr_ros.encoders.base import Encoder, available_encoders, create_encoder

# Released configurations worth listing next to each encoder's default (name -> config overrides).
RELEASED_VARIANTS: dict[str, list[dict[str, Any]]] = {
    'boq': [{'backbone': 'dinov2_vitb14'}],
    'mixvpr': [{'out_dim': 512}, {'out_dim': 128}],
    'convap': [{'out_dim': 4096}, {'out_dim': 2048}, {'out_dim': 512}],
    'cosplace': [{'backbone': 'resnet18', 'out_dim': 512}],
}


def parameter_count(encoder: Encoder) -> int:
    """Parameters of the encoder's network(s); 0 for classical encoders (map-fitted state not counted)."""
    from torch import nn

    seen: set[int] = set()
    total = 0
    candidates = list(vars(encoder).values())
    candidates += [getattr(v, 'model', None) for v in list(candidates)]  # e.g. DenseFeatures.model
    for value in candidates:
        if isinstance(value, nn.Module):
            for p in value.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
    return total


def _build(name: str, config: dict[str, Any]) -> Encoder:
    import torch

    log = logging.getLogger('vpr_ros')
    level = log.level
    log.setLevel(logging.ERROR)  # no "random initialisation" warnings for a listing
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # loading real tensors into meta ones is a (warned) no-op
            try:
                with torch.device('meta'):
                    return create_encoder(name, config)
            except Exception:  # an encoder that reads tensor values while building: build it for real
                return create_encoder(name, config)
    finally:
        log.setLevel(level)


def _row(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    encoder = _build(name, overrides)
    size = encoder.input_size
    dim = int(encoder.dim)
    return {
        'name': name,
        'config': ' '.join(f'{k}={v}' for k, v in overrides.items()),
        'dim': dim,
        'input_size': f'{size[0]}x{size[1]}' if size else 'any',
        'parameters': parameter_count(encoder),
        'bytes_fp32': dim * 4,
        'bytes_fp16': dim * 2,
        'per': 'vector' if encoder.multi_vector else 'image',
        'fits_on_map': bool(encoder.requires_fit),
        'description': type(encoder).description,
    }


def encoder_table(names: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per encoder (default config) and per listed released variant.

    Row keys: name, config (overrides of the variant, '' for the default), dim, input_size
    ('HxW' or 'any'), parameters, bytes_fp32 / bytes_fp16 (one map entry: one image, or one vector
    for multi-vector encoders, see 'per'), per, fits_on_map (learns a vocabulary/PCA/layer from the
    map images), description. Unknown names raise ConfigError.
    """
    rows = []
    for name in names or available_encoders():
        rows.append(_row(name, {}))
        rows.extend(_row(name, overrides) for overrides in RELEASED_VARIANTS.get(name, []))
    return rows
