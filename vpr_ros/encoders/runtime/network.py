"""One exportable torch module of an encoder, run by the runtime its config asks for.

The first call resolves the runtime (``settings.AUTO_ORDER`` for ``runtime: auto``): the module
is exported to ONNX once and cached on disk (``settings.cache_dir``) under a key made of the
encoder's identity (name, descriptor-changing config, weights fingerprint, fitted state), the
input shape, the opset and the torch version; nothing is downloaded. Before a runtime is used its
f32 graph is checked against torch on a seeded probe input (``F32_TOLERANCE``); an unreadable or
disagreeing cached file is rebuilt once. Lower precisions are derived from the checked f32 graph:
bf16 is OpenVINO's inference precision on the same graph, int8 a QDQ graph quantised by
onnxruntime's static quantiser from activation ranges calibrated on the map's images (the ranges
are encoder state, stored in the map, so every process rebuilds the same int8 graph).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from vpr_ros.encoders.runtime import settings
from vpr_ros.encoders.runtime.backends import GraphLoadError, OpenVinoBackend, OrtBackend
from vpr_ros.encoders.runtime.settings import RuntimeUnavailable
from vpr_ros.errors import VprError
from vpr_ros.threadpools import limit_blas_pools, max_torch_threads, pool_threads, use_torch_threads

log = logging.getLogger('vpr_ros.encoders.runtime')

OPSET = 17
INPUT_NAME, OUTPUT_NAME = 'image', 'descriptor'
GRAPH_FORMAT = 1  # bump when what is exported changes without the key noticing
INT8_OPS = ['Conv', 'MatMul', 'Gemm']  # the heavy operators int8 replaces; everything else stays f32


def export_graph(model: Any, example: Any, path: str) -> None:
    """Trace ``model`` on ``example`` (N, 3, H, W) into ONNX at ``path`` (dynamic batch), atomically."""
    import torch

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix='.onnx.tmp')
    os.close(fd)
    try:
        # Traced with autograd on: under no_grad PyTorch swaps nn.TransformerEncoderLayer (BoQ) for a
        # fused kernel that has no ONNX mapping.
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(model, (example,), tmp, dynamo=False, opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: {0: 'batch'}, OUTPUT_NAME: {0: 'batch'}})
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:24]


def state_digest(state: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        value = np.ascontiguousarray(state[key])
        h.update(key.encode() + str(value.dtype).encode() + str(value.shape).encode() + value.tobytes())
    return h.hexdigest()[:24]


class TorchRun:
    """torch eager as a runtime (always installed)."""

    name = 'torch'

    def __init__(self, module: Any, device: str) -> None:
        import torch

        if device == 'cuda':
            if not torch.cuda.is_available():
                raise RuntimeUnavailable('device cuda: torch sees no CUDA GPU on this machine')
            module.to('cuda')
        self.module, self.device, self._torch = module, device, torch

    def run(self, batch: Any, threads: int) -> np.ndarray:
        torch = self._torch
        use_torch_threads(threads)
        with torch.inference_mode():
            out = self.module(batch.to(self.device) if self.device != 'cpu' else batch)
        return out.float().cpu().numpy()


class Network:
    """``run(batch)``: the module's output for a preprocessed (N, 3, H, W) float batch, as numpy.

    ``config`` is the owning encoder's config (read at every call: ``threads`` may change while
    running); ``identity`` returns what identifies the module's weights (called when the runtime is
    resolved).
    """

    def __init__(self, label: str, module: Any, input_size: tuple[int, int] | None, config: dict[str, Any],
                 identity: Callable[[], dict[str, Any]],
                 preprocess: Callable[[list[np.ndarray]], Any]) -> None:
        self.label, self.module, self.input_size, self.config = label, module, input_size, config
        self.preprocess = preprocess  # RGB images -> the network's input batch (int8 calibration)
        self._identity = identity
        self._backend: Any = None
        self._resolved_key = ''
        self._lock = threading.Lock()
        self.int8_ranges: str | None = None  # JSON of onnxruntime's calibration ranges (encoder state)
        self.probe_diff: float | None = None  # max |runtime - torch| of the f32 graph on the probe

    # ----- running ---------------------------------------------------------------------------
    @property
    def runtime(self) -> str:
        """The runtime in use (resolves it on first access)."""
        return self.backend().name

    @property
    def resolved(self) -> str:
        """The runtime in use, '' before the first call chose one."""
        backend = self._backend
        return backend.name if backend is not None else ''

    def backend(self) -> Any:
        with self._lock:
            if self._backend is None:
                self._backend = self._resolve()
            return self._backend

    def run(self, batch: Any) -> np.ndarray:
        backend = self.backend()
        threads = int(self.config['threads'])
        if isinstance(backend, TorchRun):
            return backend.run(batch, threads)
        limit_blas_pools()
        use_torch_threads(threads)  # torch still preprocesses; its pool follows the same count
        return backend.run(np.ascontiguousarray(batch.numpy(), dtype=np.float32), pool_threads(threads))

    def reset(self) -> None:
        """Resolve the runtime again at the next call (after the config or the calibration changed)."""
        with self._lock:
            self._backend = None

    def refresh(self) -> None:
        """Resolve again if the weights or fitted state changed since the graph was chosen (netvlad)."""
        if self._backend is not None and not isinstance(self._backend, TorchRun) \
                and self._resolved_key != self.cache_key():
            self.reset()

    # ----- choosing ---------------------------------------------------------------------------
    @property
    def exportable(self) -> bool:
        return self.input_size is not None

    def candidates(self) -> tuple[str, ...]:
        requested, precision = self.config['runtime'], self.config['precision']
        if requested != 'auto':
            return (requested,)
        order = settings.AUTO_ORDER[precision]
        if self.config['device'] == 'cuda':
            order = tuple(r for r in order if r != 'openvino')
        return order if self.exportable else tuple(r for r in order if r == 'torch')

    def _resolve(self) -> Any:
        order = self.candidates()
        if not order:
            raise RuntimeUnavailable(f'{self.label}: precision {self.config["precision"]} needs an exported '
                                     'graph, and this network has no fixed input size (set image_size)')
        failures = []
        for name in order:
            try:
                backend = self._open(name)
            except RuntimeUnavailable as exc:
                if len(order) == 1:
                    raise
                failures.append(f'{name}: {exc}')
                if settings.installed(name):
                    log.warning('%s: runtime %s not used (%s)', self.label, name, exc)
                continue
            if failures:
                log.info('%s: runs on %s (%s)', self.label, name, '; '.join(failures))
            return backend
        raise RuntimeUnavailable(f'{self.label}: no runtime can run it ({"; ".join(failures)})')

    def _open(self, name: str) -> Any:
        precision, device = self.config['precision'], self.config['device']
        if name == 'torch':
            if precision != 'f32':
                raise RuntimeUnavailable(f'precision {precision} does not run on torch')
            return TorchRun(self.module, device)
        settings.require_installed(name)
        if not self.exportable:
            raise RuntimeUnavailable(f'{self.label} has no fixed input size (set image_size), so it has no '
                                     'graph to export')
        self._resolved_key = self.cache_key()
        path = self.graph_path(self._resolved_key)
        backend = self._checked_f32(name, path)
        if precision == 'f32':
            chosen = backend
        elif precision == 'bf16':
            chosen = self._load(name, path, 'bf16', lambda: self._export(path))
        else:
            if self.int8_ranges is None:
                raise VprError(f'{self.label}: precision int8 needs calibration on the map images first '
                               '(build the map with precision: int8)')
            int8_path = self._int8_graph(path)
            chosen = self._load(name, int8_path, 'int8', lambda: self._quantise(path, int8_path))
        if chosen is not backend:
            self._check_output(chosen)
        if int(self.config['threads']) == 0:  # an adapted count: ready before the first busy frame needs it
            for threads in {1, max_torch_threads()}:
                chosen.prepare(threads)
        log.info('%s: runtime %s, precision %s, graph %s (f32 graph vs torch on the probe: max |diff| %.1e)',
                 self.label, name, precision, os.path.basename(path), self.probe_diff)
        return chosen

    # ----- the cached graphs ------------------------------------------------------------------
    def cache_key(self) -> str:
        import torch

        h, w = self.input_size or (0, 0)
        return digest({'network': self.label, 'identity': self._identity(), 'input': [3, h, w],
                       'opset': OPSET, 'torch': torch.__version__, 'format': GRAPH_FORMAT})

    def graph_path(self, key: str | None = None) -> str:
        """The f32 graph in the cache (``key``: the cache key when known), exported now if it is not there."""
        path = os.path.join(settings.cache_dir(self.config), f'{self.label}-{key or self.cache_key()}.onnx')
        if not os.path.isfile(path):
            self._export(path)
        return path

    def _export(self, path: str) -> None:
        import torch

        log.info('%s: exporting the network to %s', self.label, path)
        h, w = self.input_size
        example = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        module = self.module.to('cpu').eval()
        try:
            export_graph(module, example, path)
        except OSError as exc:
            raise RuntimeUnavailable(f'cannot write the graph cache {path}: {exc}') from exc
        except Exception as exc:  # the exporter raises many types for unsupported operators
            raise RuntimeUnavailable(f'{self.label} does not export to ONNX: {type(exc).__name__}: '
                                     f'{str(exc).splitlines()[0][:200]}') from exc

    def _make(self, name: str, path: str, precision: str) -> Any:
        if name == 'onnxruntime':
            return OrtBackend(path, self.config['device'])
        return OpenVinoBackend(path, precision)

    def _load(self, name: str, path: str, precision: str, rebuild: Callable[[], None]) -> Any:
        """The backend of ``path``; a damaged file is rebuilt once, a graph the runtime cannot convert
        (an intact file: e.g. OpenVINO and SALAD's optimal-transport head) is RuntimeUnavailable."""
        try:
            return self._make(name, path, precision)
        except GraphLoadError as exc:
            if _intact(path):
                raise
            log.warning('%s: %s; rebuilding the cached graph', self.label, exc)
            rebuild()
            return self._make(name, path, precision)

    def probe(self) -> np.ndarray:
        h, w = self.input_size
        return np.random.default_rng(1).standard_normal((1, 3, h, w)).astype(np.float32)

    def _torch_output(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module.to('cpu').eval()(torch.from_numpy(x)).float().numpy()

    def _checked_f32(self, name: str, path: str) -> Any:
        """The f32 graph on runtime ``name``, checked against torch (rebuilt once when it disagrees)."""
        x = self.probe()
        want = self._torch_output(x)
        for attempt in range(2):
            backend = self._load(name, path, 'f32', lambda: self._export(path))
            try:
                got = backend.run(x, 1)
            except Exception as exc:  # e.g. a graph of another input shape under this name
                log.warning('%s: %s failed on the probe: %s', self.label, name,
                            str(exc).splitlines()[0][:200])
                got = np.zeros(0, np.float32)
            diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else float('inf')
            if diff <= settings.F32_TOLERANCE:
                self.probe_diff = diff
                return backend
            if attempt == 0:
                log.warning('%s: cached graph %s differs from torch by %.1e on the probe; rebuilding',
                            self.label, path, diff)
                self._export(path)
        raise RuntimeUnavailable(f'{name} differs from torch by {diff:.1e} (> {settings.F32_TOLERANCE:g}) '
                                 'on the probe input')

    def _check_output(self, backend: Any) -> None:
        x = self.probe()
        got, want = backend.run(x, 1), self._torch_output(x)
        if got.shape != want.shape or not np.all(np.isfinite(got)):
            raise RuntimeUnavailable(f'{backend.name} {self.config["precision"]} gave shape {got.shape} or '
                                     f'non-finite values (torch: {want.shape})')

    # ----- int8 -------------------------------------------------------------------------------
    def _int8_graph(self, f32_path: str) -> str:
        path = f32_path[:-len('.onnx')] + f'-int8-{digest(self.int8_ranges)}.onnx'
        if not os.path.isfile(path):
            self._quantise(f32_path, path)
        return path

    def calibrate(self, batches: Iterable[Any]) -> None:
        """Activation ranges of the f32 graph over ``batches`` (preprocessed map images) for int8."""
        if not settings.installed('onnxruntime'):
            raise RuntimeUnavailable('precision int8 is calibrated by onnxruntime, which is not installed: '
                                     'pip install onnxruntime')
        from onnxruntime.quantization import CalibrationDataReader

        if not self.exportable:
            raise RuntimeUnavailable(f'{self.label}: int8 needs a fixed input size (set image_size)')
        f32_path = self.graph_path()
        feeds = ({INPUT_NAME: np.ascontiguousarray(b.numpy(), dtype=np.float32)} for b in batches)

        class Reader(CalibrationDataReader):
            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(feeds, None)

        with tempfile.TemporaryDirectory(prefix='vpr_ros_int8_') as tmp:
            ranges = os.path.join(tmp, 'ranges.json')
            _quantize(f32_path, os.path.join(tmp, 'int8.onnx'), Reader(), ranges)
            with open(ranges, encoding='utf-8') as fh:
                self.int8_ranges = fh.read()
        self.reset()

    def _quantise(self, f32_path: str, out_path: str) -> None:
        with tempfile.TemporaryDirectory(prefix='vpr_ros_int8_') as tmp:
            ranges = os.path.join(tmp, 'ranges.json')
            with open(ranges, 'w', encoding='utf-8') as fh:
                fh.write(self.int8_ranges or '')
            fd, part = tempfile.mkstemp(dir=os.path.dirname(out_path), suffix='.onnx.tmp')
            os.close(fd)
            try:
                _quantize(f32_path, part, None, ranges)
                os.replace(part, out_path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(part)


def _intact(path: str) -> bool:
    """True when ``path`` parses as an ONNX model (then a runtime's load failure is the runtime's)."""
    try:
        import onnx

        onnx.load(path, load_external_data=False)
        return True
    except Exception:  # ImportError, or onnx's DecodeError on a damaged file
        return False


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """The quantiser logs advice ('consider pre-processing') through the root logger at WARNING."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _quantize(f32_path: str, out_path: str, reader: Any, ranges_path: str) -> None:
    """onnxruntime static QDQ quantisation (u8 activations, per-channel s8 weights, MinMax ranges);
    with ``reader`` the ranges are calibrated and written to ``ranges_path``, else read from it."""
    if not settings.installed('onnxruntime'):
        raise RuntimeUnavailable('precision int8 is quantised by onnxruntime, which is not installed: '
                                 'pip install onnxruntime')
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with _quiet_logging():
        quantize_static(f32_path, out_path, reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=INT8_OPS, calibrate_method=CalibrationMethod.MinMax,
                        calibration_cache_path=ranges_path)
