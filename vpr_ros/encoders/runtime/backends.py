"""The runtimes an exported graph runs on: onnxruntime and OpenVINO (torch eager is network.py's).

Both keep one session / compiled model per thread count, created when that count is first asked
for: their intra-op thread count is fixed at creation, and ``threads: 0`` adapts it to the cores
other processes leave free (vpr_ros/threadpools.py). Neither pool spin-waits: onnxruntime's intra-
and inter-op spinning is switched off, OpenVINO's threads are not pinned to cores (the node shares
a robot's CPU).

``run`` takes the graph's one input as an array, or its inputs as a dict by name. OpenVINO compiles
batch 1 (the node's case) for that static shape, which plans its memory once (measured 10 % faster
than the dynamic-batch compile); other batch sizes share one dynamic-batch compile.
"""
from __future__ import annotations

import threading
from typing import Any, Union

import numpy as np

from vpr_ros.encoders.runtime.settings import RuntimeUnavailable, require_installed

ORT_GPU_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider')
Feeds = Union[np.ndarray, dict[str, np.ndarray]]  # the first input's array, or every input by name


class GraphLoadError(RuntimeUnavailable):
    """A runtime cannot load a graph file: the file is damaged, or the runtime lacks one of its operators."""


class OrtBackend:
    name = 'onnxruntime'

    def __init__(self, path: str, device: str = 'cpu') -> None:
        require_installed('onnxruntime')
        import onnxruntime as ort

        self._ort, self.path, self.device = ort, path, device
        if device == 'cuda':
            available = ort.get_available_providers()
            self.providers = [p for p in ORT_GPU_PROVIDERS if p in available] + ['CPUExecutionProvider']
            if len(self.providers) == 1:
                raise RuntimeUnavailable('device cuda: this onnxruntime has no CUDA or TensorRT provider '
                                         f'(it has {", ".join(available)}); install onnxruntime-gpu')
        else:
            self.providers = ['CPUExecutionProvider']
        self._sessions: dict[int, Any] = {}
        self.session(1)  # reads the file now: a corrupt graph fails here, not on the first frame

    def session(self, threads: int) -> Any:
        if threads not in self._sessions:
            ort = self._ort
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.add_session_config_entry('session.intra_op.allow_spinning', '0')
            options.add_session_config_entry('session.inter_op.allow_spinning', '0')
            options.log_severity_level = 3
            try:
                session = ort.InferenceSession(self.path, options, providers=self.providers)
            except Exception as exc:  # onnxruntime raises its own InvalidProtobuf/Fail types
                first = str(exc).splitlines()[0][:200]
                raise GraphLoadError(f'onnxruntime cannot load {self.path}: {first}') from exc
            self._sessions[threads] = (session, session.get_inputs()[0].name)
        return self._sessions[threads]

    def prepare(self, threads: int) -> None:
        self.session(1 if self.device == 'cuda' else threads)

    def run(self, x: Feeds, threads: int) -> np.ndarray:
        session, name = self.session(1 if self.device == 'cuda' else threads)
        return session.run(None, x if isinstance(x, dict) else {name: x})[0]


def openvino_bf16_supported() -> bool:
    import openvino as ov

    return 'BF16' in ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')


class OpenVinoBackend:
    name = 'openvino'

    def __init__(self, path: str, precision: str = 'f32') -> None:
        require_installed('openvino')
        import openvino as ov

        if precision == 'bf16' and not openvino_bf16_supported():
            raise RuntimeUnavailable('precision bf16: this CPU has no bf16 support (OpenVINO reports none)')
        self._core, self.path = ov.Core(), path
        # int8 graphs carry their own quantize/dequantize nodes; what stays float runs in f32.
        self.hint = 'bf16' if precision == 'bf16' else 'f32'
        try:
            self._model = self._core.read_model(path)
        except Exception as exc:
            raise GraphLoadError(f'OpenVINO cannot read {path}: {str(exc).splitlines()[0][:200]}') from exc
        self._compiled: dict[tuple[int, bool], tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def compiled(self, threads: int, batch1: bool = True) -> tuple[Any, Any]:
        """The compiled model and its infer request for ``threads``: static batch 1, or dynamic batch."""
        if (threads, batch1) not in self._compiled:
            config = {'INFERENCE_PRECISION_HINT': self.hint, 'INFERENCE_NUM_THREADS': threads,
                      'NUM_STREAMS': 1, 'PERFORMANCE_HINT': 'LATENCY', 'ENABLE_CPU_PINNING': False}
            try:
                model = self._core.read_model(self.path) if batch1 else self._model
                if batch1:
                    first = model.inputs[0]
                    shape = first.get_partial_shape()
                    shape[0] = 1
                    model.reshape({first.get_any_name(): shape})
                compiled = self._core.compile_model(model, 'CPU', config)
            except Exception as exc:
                raise GraphLoadError(f'OpenVINO cannot compile {self.path}: '
                                     f'{str(exc).splitlines()[0][:200]}') from exc
            self._compiled[(threads, batch1)] = (compiled, compiled.create_infer_request())
        return self._compiled[(threads, batch1)]

    def prepare(self, threads: int) -> None:
        with self._lock:
            self.compiled(threads)

    def run(self, x: Feeds, threads: int) -> np.ndarray:
        first = self._model.inputs[0].get_any_name()
        feeds = x if isinstance(x, dict) else {first: x}
        batch1 = feeds[first].shape[0] == 1
        with self._lock:  # an infer request serves one call at a time
            _, request = self.compiled(threads, batch1)
            request.infer(feeds, share_inputs=True)
            return np.array(request.get_output_tensor(0).data, copy=True)
