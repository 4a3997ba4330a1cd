"""How an encoder's network runs: torch eager, onnxruntime or OpenVINO, in f32, bf16 or int8.

``settings`` holds the config keys and their checks, ``network.Network`` the per-network runtime
choice, export cache and start-up check, ``backends`` the onnxruntime / OpenVINO sessions.
See docs/runtimes.md.
"""
from vpr_ros.encoders.runtime.network import GraphHead, Network, PixelInput, state_digest
from vpr_ros.encoders.runtime.settings import (
           PRECISIONS,
           RUNTIME_DEFAULTS,
           RUNTIMES,
           SPEED_KEYS,
           RuntimeUnavailable,
)

__all__ = ['PRECISIONS', 'RUNTIMES', 'RUNTIME_DEFAULTS', 'SPEED_KEYS', 'GraphHead', 'Network', 'PixelInput',
           'RuntimeUnavailable', 'state_digest']
