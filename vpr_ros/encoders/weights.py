"""Loading checkpoints safely and strictly, and fingerprinting them."""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from typing import Any

from vpr_ros.errors import WeightsError

# Wrappers released checkpoints put around the state dict (Lightning: 'state_dict').
_NESTING_KEYS = ('state_dict', 'model_state_dict', 'model')


def is_safetensors(path: str) -> bool:
    """A ``.safetensors`` file (by name, or by its header: 8-byte little-endian length, then JSON)."""
    if path.endswith('.safetensors'):
        return True
    with open(path, 'rb') as fh:
        head = fh.read(9)
    return (len(head) == 9 and head[8:9] == b'{'
            and 2 <= int.from_bytes(head[:8], 'little') <= os.path.getsize(path) - 8)


def _read_safetensors(path: str) -> dict[str, Any]:
    try:
        from safetensors.torch import load_file
    except ImportError as exc:
        raise WeightsError(f'{path} is a .safetensors file: install the safetensors package '
                           '(pip install safetensors; it is in requirements.txt)') from exc
    try:
        return load_file(path, device='cpu')
    except Exception as exc:  # truncated file, bad header
        raise WeightsError(f'cannot read weights {path}: {type(exc).__name__}: {str(exc)[:200]}') from exc


def read_state_dict(path: str) -> dict[str, Any]:
    """A checkpoint's state dict with clear errors: ``.safetensors`` files (read without pickle) or
    ``torch.load(path, weights_only=True)``, Lightning-style nesting unwrapped."""
    import torch

    if not path:
        raise WeightsError('no weights file given')
    if not os.path.isfile(path):
        raise WeightsError(f'weights file not found: {path}')
    if is_safetensors(path):
        return _read_safetensors(path)
    import numpy as np

    core = np._core.multiarray
    # Training checkpoints (e.g. deep-visual-geo-localization-benchmark) keep numpy arrays such as
    # recalls beside the state dict: allow exactly those numpy types, nothing that runs code.
    numpy_ok = [np.ndarray, np.dtype, type(np.dtype(np.float64)), core._reconstruct, core.scalar,
                (core._reconstruct, 'numpy.core.multiarray._reconstruct'),
                (core.scalar, 'numpy.core.multiarray.scalar')]
    try:
        with torch.serialization.safe_globals(numpy_ok):
            obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, pickle with non-tensor objects...
        raise WeightsError(f'cannot read weights {path}: {type(exc).__name__}: {str(exc)[:200]}') from exc
    for key in _NESTING_KEYS:
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(hasattr(v, 'shape') for v in obj.values()):
        raise WeightsError(f'{path} does not hold a state dict of tensors')
    return obj


def load_strict(module: Any, state: dict[str, Any], source: str, prefix: str = '') -> None:
    """Load ``state`` (optionally only the keys under ``prefix``) strictly into ``module``.

    Missing and unexpected keys and shape mismatches are all listed in one WeightsError.
    """
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f'{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
                    for k in set(own) & set(state) if tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        def show(items: list[str]) -> str:
            return ', '.join(items[:8]) + (f' ... (+{len(items) - 8})' if len(items) > 8 else '')
        parts = [f'missing keys [{show(missing)}]' if missing else '',
                 f'unexpected keys [{show(unexpected)}]' if unexpected else '',
                 f'shape mismatches [{show(shapes)}]' if shapes else '']
        raise WeightsError(f'{source} does not match {type(module).__name__}: '
                           + '; '.join(p for p in parts if p))
    module.load_state_dict(state, strict=True)


@lru_cache(maxsize=32)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b''):
            h.update(chunk)
    return 'sha256:' + h.hexdigest()[:16]


def file_fingerprint(path: str) -> str:
    """sha256 prefix of a weights file (cached by path, size and mtime)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise WeightsError(f'weights file not found: {path}') from exc
    return _digest(os.path.abspath(path), st.st_size, st.st_mtime_ns)


def state_fingerprint(state: dict[str, Any]) -> str:
    """Digest of in-memory parameters (for encoders whose weights are random-initialised)."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return 'sha256:' + h.hexdigest()[:16]
