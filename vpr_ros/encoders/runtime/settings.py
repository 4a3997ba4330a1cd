"""The encoder config keys that choose how an exported network runs, and their checks.

``runtime``: ``auto`` (default; the environment variable ``VPR_ROS_RUNTIME`` changes the default
of configs that do not name one) | ``torch`` | ``onnxruntime`` | ``openvino``. ``auto`` takes the first
runtime of ``AUTO_ORDER`` that is installed, supports the precision and device, and passes the
start-up probe against torch (network.py); ``torch`` is always there. The order is the measured
speed order (docs/runtimes.md).
``precision``: ``f32`` (default; equal to torch within ``F32_TOLERANCE``) | ``bf16`` (OpenVINO on a
CPU with bf16 support) | ``int8`` (post-training static quantisation calibrated on the map's
images; onnxruntime or OpenVINO). Precision changes the descriptors, so it is part of a map's
encoder identity; runtime, device and the cache directory are not.
``device``: ``cpu`` | ``cuda`` (torch on CUDA, or onnxruntime's TensorRT/CUDA providers).
``runtime_cache``: directory of the exported graphs; '' = ``$XDG_CACHE_HOME/vpr_ros/graphs``
(``~/.cache/vpr_ros/graphs``).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any

from vpr_ros.errors import ConfigError, VprError

RUNTIMES = ('auto', 'torch', 'onnxruntime', 'openvino')
PRECISIONS = ('f32', 'bf16', 'int8')
DEVICES = ('cpu', 'cuda')
RUNTIME_DEFAULTS: dict[str, Any] = {'runtime': 'auto', 'precision': 'f32', 'device': 'cpu',
                                    'runtime_cache': ''}
# Keys of RUNTIME_DEFAULTS that change only how fast descriptors are computed (precision changes them).
SPEED_KEYS = frozenset({'runtime', 'device', 'runtime_cache'})
F32_TOLERANCE = 1e-5
# Which runtimes can run which precision, fastest first (measured: benchmarks/bench_runtime.py).
AUTO_ORDER: dict[str, tuple[str, ...]] = {'f32': ('openvino', 'onnxruntime', 'torch'),
                                          'bf16': ('openvino',), 'int8': ('openvino', 'onnxruntime')}
PIP_NAME = {'onnxruntime': 'onnxruntime', 'openvino': 'openvino'}


class RuntimeUnavailable(VprError):
    """A requested runtime, precision or device cannot be used on this machine or with this encoder."""


def default_runtime() -> str:
    """The runtime of a config that names none: ``$VPR_ROS_RUNTIME``, else auto."""
    return os.environ.get('VPR_ROS_RUNTIME') or 'auto'


def validate(encoder: str, config: dict[str, Any]) -> None:
    for key, allowed in (('runtime', RUNTIMES), ('precision', PRECISIONS), ('device', DEVICES)):
        if config[key] not in allowed:
            from_env = key == 'runtime' and config[key] == default_runtime()
            source = ' (from VPR_ROS_RUNTIME)' if from_env else ''
            raise ConfigError(f'encoder {encoder!r}: {key} must be one of {", ".join(allowed)}; '
                              f'got {config[key]!r}{source}')
    if not isinstance(config['runtime_cache'], str):
        raise ConfigError(f"encoder {encoder!r}: runtime_cache must be a directory path or '', "
                          f"got {config['runtime_cache']!r}")
    runtime, precision = config['runtime'], config['precision']
    if runtime != 'auto' and runtime not in AUTO_ORDER[precision]:
        raise ConfigError(f'encoder {encoder!r}: precision {precision} runs on '
                          f'{" or ".join(AUTO_ORDER[precision])}, not runtime {runtime}')
    if config['device'] == 'cuda' and precision != 'f32':
        raise ConfigError(f'encoder {encoder!r}: precision {precision} is a CPU setting; '
                          'use f32 with device cuda')
    if config['device'] == 'cuda' and runtime == 'openvino':
        raise ConfigError(f'encoder {encoder!r}: device cuda runs on torch or onnxruntime, not openvino')


def installed(runtime: str) -> bool:
    return runtime == 'torch' or importlib.util.find_spec(runtime) is not None


def require_installed(runtime: str) -> None:
    if not installed(runtime):
        raise RuntimeUnavailable(f'runtime {runtime!r} is not installed: pip install {PIP_NAME[runtime]} '
                                 "(or use runtime: auto / torch)")


def cache_dir(config: dict[str, Any]) -> str:
    if config.get('runtime_cache'):
        return os.path.expanduser(str(config['runtime_cache']))
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'vpr_ros', 'graphs')
