"""ONNX export of an encoder's network, verified against onnxruntime.

What is exported is the encoder's torch module: the input is the preprocessed batch (N, 3, H, W)
float32 - resized to the encoder's ``input_size``, scaled to [0, 1], normalised with the encoder's
mean/std - and the output is the (N, D) L2-normalised descriptor. Resizing/normalisation and the
optional map PCA stay outside the graph. The batch axis is dynamic; H and W are fixed.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from vpr_ros.encoders.runtime.network import INPUT_NAME, OPSET, OUTPUT_NAME, export_graph
from vpr_ros.errors import VprError


def export_onnx(name: str, out_path: str, config: dict | None = None, batch: int = 1,
                state: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Export encoder ``name`` (with ``config``) to ``out_path`` and check it with onnxruntime (CPU).

    ``batch`` is the batch size of the example input used for tracing and for the check (the
    exported batch axis is dynamic anyway). ``state`` is map-fitted state for encoders that fit
    their network on a map (e.g. netvlad without released weights). Returns ``{'path',
    'max_abs_diff', 'opset', 'input_shape', 'output_dim', 'input_name', 'output_name'}``.
    """
    import torch

    from vpr_ros.encoders import create_encoder
    from vpr_ros.encoders.torch_encoder import TorchEncoder

    if int(batch) < 1:
        raise VprError(f'export batch must be >= 1, got {batch}')
    encoder = create_encoder(name, config, state)
    if not isinstance(encoder, TorchEncoder):
        raise VprError(f'encoder {name!r} is not a torch network (it is {type(encoder).__name__}: classical '
                       'or multi-stage), so it has no single graph to export; ONNX export covers the '
                       'TorchEncoder-based encoders')
    if int(encoder.config.get('pca_dim', 0)):
        raise VprError(f'encoder {name!r}: the map PCA (pca_dim) is applied outside the network and is not '
                       'exported; export with pca_dim 0 and apply the map PCA to the output')
    if not encoder.is_fitted:
        raise VprError(f'encoder {name!r} learns part of its network on the map images: pass the map\'s '
                       'fitted state (state=...) or released weights to export it')
    size = encoder.input_size
    if size is None:
        raise VprError(f'encoder {name!r} has no fixed input size: set image_size to export it')
    model = encoder.model.eval()
    shape = (int(batch), 3, int(size[0]), int(size[1]))
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    export_graph(model, example, out_path)
    diff, dim = _verify(model, out_path, shape)
    return {'path': os.path.abspath(out_path), 'max_abs_diff': diff, 'opset': OPSET,
            'input_shape': list(shape),
            'output_dim': dim, 'input_name': INPUT_NAME, 'output_name': OUTPUT_NAME}


def _verify(model: Any, path: str, shape: tuple[int, ...]) -> tuple[float, int]:
    """Max |torch - onnxruntime| on a fresh random input of ``shape``, and the output dimension."""
    import onnxruntime as ort
    import torch

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = model(x).float().numpy()
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    if got.shape != want.shape:
        raise VprError(f'ONNX output shape {got.shape} differs from torch {want.shape}')
    return float(np.max(np.abs(got - want))), int(want.shape[1])
