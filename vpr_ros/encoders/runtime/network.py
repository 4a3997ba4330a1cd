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

Graph variants (``run_images``). An owner that gives its ``PixelInput`` gets, in f32 and bf16, a
graph that takes the resized uint8 images (N, H, W, 3) and normalises them itself: no float batch
is built in torch and copied out per frame. A ``GraphHead`` (anyloc_vlad's VLAD) is computed inside
the graph in f32, from extra inputs (the map's vocabulary) so the graph does not depend on the map;
in bf16 and int8, and on torch, it runs outside (numpy) as before. int8 keeps the float-input graph
its stored calibration ranges name. Every variant is probed against torch like the f32 graph.
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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class PixelInput:
    """How an owner turns RGB images into its network's input: ``stack`` resizes them to the input size
    as uint8 (N, H, W, 3), then (x / 255 - mean) / std per channel (``mean``, ``std``: RGB, [0, 1] units)
    as ``torch_encoder.to_tensor_batch`` computes it."""

    mean: np.ndarray
    std: np.ndarray
    stack: Callable[[list[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class GraphHead:
    """A computation on the network's output that an f32 graph includes (``label`` names the variant).

    ``module(output, *inputs)`` in torch (exported), ``numpy(output, **inputs)`` the same outside a
    graph; ``inputs`` names the extra graph inputs in ``module``'s order, ``probe`` gives seeded values
    for them (the start-up check)."""

    label: str
    module: Any
    numpy: Callable[..., np.ndarray]
    inputs: tuple[str, ...]
    probe: Callable[[np.random.Generator], dict[str, np.ndarray]]


def _graph_module(module: Any, pixels: PixelInput | None, head: GraphHead | None) -> Any:
    """``module`` with the pixel normalisation before it and ``head`` after it, as one torch module."""
    import torch

    if pixels is None and head is None:
        return module
    # normalised in the image's own (N, H, W, 3) layout, then transposed: OpenVINO then feeds the first
    # convolution without a layout reorder (measured 2 % less CPU a frame than normalising after it)
    scale = None if pixels is None else torch.from_numpy(1.0 / (255.0 * pixels.std)).view(1, 1, 1, 3)
    shift = None if pixels is None else torch.from_numpy(pixels.mean / pixels.std).view(1, 1, 1, 3)

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = module
            self.head = head.module if head is not None else None

        def forward(self, image: Any, *inputs: Any) -> Any:
            x = image if scale is None else (image.float() * scale - shift).permute(0, 3, 1, 2)
            out = self.network(x)
            return out if self.head is None else self.head(out, *inputs)

    return Graph().eval()


def export_graph(model: Any, example: Any, path: str, extra: dict[str, Any] | None = None) -> None:
    """Trace ``model`` on ``example`` (N, ...; dynamic batch) and the ``extra`` named inputs (fixed
    shapes) into ONNX at ``path``, atomically."""
    import torch

    extra = extra or {}

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix='.onnx.tmp')
    os.close(fd)
    try:
        # Traced with autograd on: under no_grad PyTorch swaps nn.TransformerEncoderLayer (BoQ) for a
        # fused kernel that has no ONNX mapping.
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(model, (example, *extra.values()), tmp, dynamo=False, opset_version=OPSET,
                              input_names=[INPUT_NAME, *extra], output_names=[OUTPUT_NAME],
                              do_constant_folding=True,
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
    """``run(batch)``: the module's output for a preprocessed (N, 3, H, W) float batch, as numpy;
    ``run_images(images, head)``: the same from RGB images, through the fastest graph variant.

    ``config`` is the owning encoder's config (read at every call: ``threads`` may change while
    running); ``identity`` returns what identifies the module's weights (called when the runtime is
    resolved); ``pixels`` lets f32/bf16 graphs take resized uint8 images.
    """

    def __init__(self, label: str, module: Any, input_size: tuple[int, int] | None, config: dict[str, Any],
                 identity: Callable[[], dict[str, Any]],
                 preprocess: Callable[[list[np.ndarray]], Any], pixels: PixelInput | None = None) -> None:
        self.label, self.module, self.input_size, self.config = label, module, input_size, config
        self.preprocess = preprocess  # RGB images -> the network's input batch (int8 calibration)
        self.pixels = pixels
        self.heads_in_graph = True  # False runs a head outside the graph (benchmarks compare the two)
        self._identity = identity
        self._backend: Any = None
        self._variants: dict[tuple[bool, str], Any] = {}  # (pixel input, head label) -> backend | None
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
        """The backend of the primary graph (pixel input when the owner gives one, except for int8)."""
        with self._lock:
            if self._backend is None:
                self._backend = self._resolve()
                self._variants = {(self._pixel_graphs(), ''): self._backend}
            return self._backend

    def _pixel_graphs(self) -> bool:
        return self.pixels is not None and self.config['precision'] != 'int8'

    def run(self, batch: Any) -> np.ndarray:
        backend = self.backend()
        threads = int(self.config['threads'])
        if isinstance(backend, TorchRun):
            return backend.run(batch, threads)
        if self._pixel_graphs():  # the float-input graph is a variant here (fitting paths, benchmarks)
            backend = self._variant(False, None)
            if backend is None:
                raise RuntimeUnavailable(f'{self.label}: the float-input graph does not run on '
                                         f'{self.resolved}')
        limit_blas_pools()
        use_torch_threads(threads)  # torch preprocessed the batch; its pool follows the same count
        return backend.run(np.ascontiguousarray(batch.numpy(), dtype=np.float32), pool_threads(threads))

    def run_images(self, images: list[np.ndarray], head: GraphHead | None = None,
                   **inputs: np.ndarray) -> np.ndarray:
        """The output for RGB ``images`` (one target size), ``head`` applied (its ``inputs`` by name):
        on torch the preprocessed batch and ``head.numpy``; on a graph runtime the uint8 images into
        the pixel-input graph (when the owner gives ``pixels``), with the head inside it in f32."""
        backend = self.backend()
        if isinstance(backend, TorchRun):
            out = backend.run(self.preprocess(images), int(self.config['threads']))
            return out if head is None else head.numpy(out, **inputs)
        pixels = self._pixel_graphs()
        in_graph = head if head is not None and self.heads_in_graph and self.config['precision'] == 'f32' \
            else None
        graph = self._variant(pixels, in_graph) if in_graph is not None else None
        if graph is None:
            graph, in_graph = self._variant(pixels, None), None
        threads = pool_threads(int(self.config['threads']))
        limit_blas_pools()
        if pixels:
            image = np.ascontiguousarray(self.pixels.stack(images), dtype=np.uint8)
        else:
            use_torch_threads(int(self.config['threads']))
            image = np.ascontiguousarray(self.preprocess(images).numpy(), dtype=np.float32)
        feeds = {INPUT_NAME: image}
        if in_graph is not None:
            feeds.update((k, np.ascontiguousarray(inputs[k], np.float32)) for k in in_graph.inputs)
        out = graph.run(feeds, threads)
        return out if head is None or in_graph is not None else head.numpy(out, **inputs)

    def reset(self) -> None:
        """Resolve the runtime again at the next call (after the config or the calibration changed)."""
        with self._lock:
            self._backend = None
            self._variants = {}

    def refresh(self) -> None:
        """Resolve again if the weights or fitted state changed since the graph was chosen (netvlad)."""
        if self._backend is not None and not isinstance(self._backend, TorchRun) \
                and self._resolved_key != self.cache_key():
            self.reset()

    def _variant(self, pixels: bool, head: GraphHead | None) -> Any:
        """The backend of a graph variant on the resolved runtime, made on first use; None (and one
        warning) when it cannot be made, so the caller takes the primary graph's path."""
        key = (pixels, head.label if head is not None else '')
        with self._lock:
            if key not in self._variants:
                name = self._backend.name
                try:
                    self._variants[key] = self._open_graph(name, pixels, head)
                except RuntimeUnavailable as exc:
                    log.warning('%s: the %s graph variant does not run on %s (%s); running without it',
                                self.label, _variant_name(pixels, head), name, exc)
                    self._variants[key] = None
            return self._variants[key]

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
        return self._open_graph(name, self._pixel_graphs(), None)

    def _open_graph(self, name: str, pixels: bool, head: GraphHead | None) -> Any:
        """Runtime ``name`` on one graph variant in the config's precision (the f32 graph checked first)."""
        precision = self.config['precision']
        self._resolved_key = self.cache_key()
        path = self.graph_path(self._resolved_key, pixels, head)
        backend = self._checked_f32(name, path, pixels, head)
        if precision == 'f32':
            chosen = backend
        elif precision == 'bf16':
            chosen = self._load(name, path, 'bf16', lambda: self._export(path, pixels, head))
        else:
            if self.int8_ranges is None:
                raise VprError(f'{self.label}: precision int8 needs calibration on the map images first '
                               '(build the map with precision: int8)')
            int8_path = self._int8_graph(path)
            chosen = self._load(name, int8_path, 'int8', lambda: self._quantise(path, int8_path))
        if chosen is not backend:
            self._check_output(chosen, pixels, head)
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

    def graph_path(self, key: str | None = None, pixels: bool = False, head: GraphHead | None = None) -> str:
        """The f32 graph in the cache (``key``: the cache key when known), exported now if it is not
        there; ``pixels``/``head`` name a variant (the float-input graph without head by default)."""
        suffix = ('-u8' if pixels else '') + (f'-{head.label}' if head is not None else '')
        name = f'{self.label}-{key or self.cache_key()}{suffix}.onnx'
        path = os.path.join(settings.cache_dir(self.config), name)
        if not os.path.isfile(path):
            self._export(path, pixels, head)
        return path

    def _export(self, path: str, pixels: bool = False, head: GraphHead | None = None) -> None:
        import torch

        log.info('%s: exporting the network to %s', self.label, path)
        feeds = self.probe(pixels, head, seed=0)
        example = torch.from_numpy(feeds.pop(INPUT_NAME))
        module = _graph_module(self.module.to('cpu').eval(), self.pixels if pixels else None, head)
        try:
            export_graph(module, example, path, {k: torch.from_numpy(v) for k, v in feeds.items()})
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

    def probe(self, pixels: bool = False, head: GraphHead | None = None,
              seed: int = 1) -> dict[str, np.ndarray]:
        """Seeded inputs of a graph variant: a random image (uint8 pixels, or a normalised-looking
        float batch) and the head's inputs."""
        h, w = self.input_size
        rng = np.random.default_rng(seed)
        image = (rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8) if pixels
                 else rng.standard_normal((1, 3, h, w)).astype(np.float32))
        return {INPUT_NAME: image, **(head.probe(rng) if head is not None else {})}

    def _torch_output(self, feeds: dict[str, np.ndarray], pixels: bool, head: GraphHead | None) -> np.ndarray:
        import torch

        module = _graph_module(self.module.to('cpu').eval(), self.pixels if pixels else None, head)
        with torch.inference_mode():
            return module(*(torch.from_numpy(v) for v in feeds.values())).float().numpy()

    def _checked_f32(self, name: str, path: str, pixels: bool = False, head: GraphHead | None = None) -> Any:
        """The f32 graph on runtime ``name``, checked against torch (rebuilt once when it disagrees)."""
        feeds = self.probe(pixels, head)
        want = self._torch_output(feeds, pixels, head)
        for attempt in range(2):
            backend = self._load(name, path, 'f32', lambda: self._export(path, pixels, head))
            try:
                got = backend.run(feeds, 1)
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
                self._export(path, pixels, head)
        raise RuntimeUnavailable(f'{name} differs from torch by {diff:.1e} (> {settings.F32_TOLERANCE:g}) '
                                 'on the probe input')

    def _check_output(self, backend: Any, pixels: bool = False, head: GraphHead | None = None) -> None:
        feeds = self.probe(pixels, head)
        got, want = backend.run(feeds, 1), self._torch_output(feeds, pixels, head)
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


def _variant_name(pixels: bool, head: GraphHead | None) -> str:
    return ' + '.join((['uint8 pixel input'] if pixels else ['float input'])
                      + ([f'{head.label} head'] if head is not None else []))


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
