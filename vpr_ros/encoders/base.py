"""The tiny encoder base class and the registry.

An encoder turns a batch of HxWx3 uint8 RGB images into L2-normalised float32 descriptors.
Each encoder lives in its own module ``vpr_ros/encoders/models/<name>.py`` that defines exactly one
:class:`Encoder` subclass whose ``name`` is the module name (hloc style: the config name selects it).

Encoders that fit state on the map (a VLAD vocabulary, a PCA) implement ``_fit`` and keep that
state as plain numpy arrays (``get_state``/``set_state``), which the map stores without pickle.
Every encoder also understands the generic post-processing keys ``pca_dim``/``pca_whiten``:
a PCA (optionally whitened) fitted on the map's L2-normalised raw descriptors (the representation
it is applied to), stored in the map.
"""
from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from vpr_ros import DEFAULT_ENCODER  # noqa: F401 - re-exported by vpr_ros.encoders
from vpr_ros.encoders.runtime import RUNTIME_DEFAULTS, SPEED_KEYS, Network
from vpr_ros.encoders.runtime import settings as runtime_settings
from vpr_ros.errors import ConfigError, VprError
from vpr_ros.frames import validate_rgb
from vpr_ros.textio import short_repr
from vpr_ros.threadpools import blas_threads_for_fitting

# Keys that change how fast an encoder runs, never what it outputs: a map built with other
# values of these is still compatible.
RUNTIME_KEYS = frozenset({'threads', 'batch_size'}) | SPEED_KEYS
COMMON_DEFAULTS: dict[str, Any] = {'threads': 0, 'batch_size': 8, 'pca_dim': 0, 'pca_whiten': False,
                                   **RUNTIME_DEFAULTS}
CALIBRATION_IMAGES = 64  # map images int8 calibration looks at (spread evenly over the map)


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)


class Encoder(ABC):
    """Base class: ``encode(images) -> (N, D)`` float32, rows L2-normalised."""

    name: ClassVar[str] = ''
    description: ClassVar[str] = ''
    default_config: ClassVar[dict[str, Any]] = {}
    multi_vector: ClassVar[bool] = False  # True: one image -> a set of vectors (see describe())
    trainable_fit: ClassVar[bool] = False  # True: _fit() must run on map images before encoding
    # Config keys added after maps existed, with the value a map that lacks the key was built with.
    legacy_config: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        merged = {**COMMON_DEFAULTS, 'runtime': runtime_settings.default_runtime(), **self.default_config}
        unknown = set(config or {}) - set(merged)
        if unknown:
            raise ConfigError(f'encoder {self.name!r}: unknown config keys {sorted(unknown)}; '
                              f'known: {sorted(merged)}')
        merged.update(config or {})
        self.config: dict[str, Any] = merged
        self._pca_mean: np.ndarray | None = None
        self._pca_proj: np.ndarray | None = None
        for key, low in (('threads', 0), ('batch_size', 1), ('pca_dim', 0)):
            value = self.config[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f'encoder {self.name!r}: {key} must be an integer >= {low}, '
                                  f'got {short_repr(value)}')
        runtime_settings.validate(self.name, self.config)

    # ----- what subclasses implement ---------------------------------------------------------
    @property
    @abstractmethod
    def raw_dim(self) -> int:
        """Dimension before the optional PCA."""

    @abstractmethod
    def _encode(self, images: list[np.ndarray]) -> np.ndarray:
        """Encode one batch of validated RGB images to (N, raw_dim) float32 (normalised or not)."""

    def _fit(self, images: Sequence[np.ndarray]) -> None:
        """Fit map-specific state (vocabularies). Only called when ``trainable_fit`` is True."""

    def _get_state(self) -> dict[str, np.ndarray]:
        return {}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what ``_get_state`` returned."""

    def _is_fitted(self) -> bool:
        return True

    def weights_fingerprint(self) -> str:
        """A stable digest of the weights the encoder uses ('none' when it has no weights)."""
        return 'none'

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(height, width) the images are resized to, or None if any size is used as is."""
        return None

    def fit_image(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb`` reduced to what :meth:`fit` reads of it, to hold hundreds of fit images at once
        (a 4K frame is 25 MB). An encoder that resizes every image to one size returns it resized
        the same way, so the fit sees the very same pixels; the default keeps the image as is."""
        return rgb

    # ----- the shared machinery -------------------------------------------------------------
    @property
    def dim(self) -> int:
        pca = int(self.config['pca_dim'])
        return pca if pca else self.raw_dim

    @property
    def requires_fit(self) -> bool:
        return self.trainable_fit or int(self.config['pca_dim']) > 0 or self.config['precision'] == 'int8'

    @property
    def is_fitted(self) -> bool:
        pca_ok = not int(self.config['pca_dim']) or self._pca_proj is not None
        int8_ok = self.config['precision'] != 'int8' or all(n.int8_ranges for n in self.networks())
        return self._is_fitted() and pca_ok and int8_ok

    # ----- the runtime of the exported networks (vpr_ros/encoders/runtime) ---------------------
    def networks(self) -> list[Network]:
        """The exportable networks this encoder runs (attributes, or an attribute's ``network``)."""
        found: list[Network] = []
        for value in vars(self).values():
            for candidate in (value, getattr(value, 'network', None)):
                if isinstance(candidate, Network) and all(candidate is not n for n in found):
                    found.append(candidate)
        return found

    def runtimes(self) -> dict[str, str]:
        """Network label -> the runtime it runs on ('' until its first use chose one)."""
        return {n.label: n.resolved for n in self.networks()}

    def calibrate(self, images: Sequence[np.ndarray]) -> None:
        """int8 only: activation ranges of every network over (up to CALIBRATION_IMAGES of) ``images``."""
        if self.config['precision'] != 'int8':
            return
        networks = self.networks()
        if not networks:
            raise ConfigError(f'encoder {self.name!r} has no exported network: precision int8 does not apply')
        step = max(1, len(images) // CALIBRATION_IMAGES)
        sample = [validate_rgb(im) for im in images[::step][:CALIBRATION_IMAGES]]
        size = max(1, int(self.config['batch_size']))
        for net in networks:
            net.calibrate(net.preprocess(sample[i:i + size]) for i in range(0, len(sample), size))

    def fit(self, images: Sequence[np.ndarray]) -> None:
        """Fit everything the encoder learns from the map images (vocabulary, then PCA)."""
        images = [validate_rgb(im) for im in images]
        if not images:
            raise VprError(f'encoder {self.name!r}: no images to fit on')
        self.calibrate(images)  # first: the vocabulary and PCA are fitted on what the int8 graph gives
        if self.trainable_fit:
            self._fit(images)
            for net in self.networks():  # a network fitted on the map (netvlad) has another graph
                net.refresh()
        pca_dim = int(self.config['pca_dim'])
        if pca_dim:
            # Fitted on what _apply_pca projects: the L2-normalised raw descriptors.
            raw = l2_normalize(np.concatenate(self._encode_raw_sets(images), axis=0))
            self._fit_pca(raw, pca_dim)

    def _fit_pca(self, raw: np.ndarray, pca_dim: int) -> None:
        """Fit on ``raw`` rows as ``_apply_pca`` will see them (L2-normalised raw descriptors)."""
        if pca_dim > min(raw.shape):
            raise ConfigError(f'encoder {self.name!r}: pca_dim {pca_dim} needs at least {pca_dim} map '
                              f'vectors and raw dim >= {pca_dim} (have {raw.shape[0]} x {raw.shape[1]})')
        raw = raw.astype(np.float64)
        mean = raw.mean(axis=0)
        centred = raw - mean
        # Eigen-decomposition of the smaller Gram matrix (D x D or N x N): 5x faster than an SVD
        # of the N x D data (SegVLAD: 6k x 3584 in 7 s against 34 s on one core).
        tall = centred.shape[0] >= centred.shape[1]
        with blas_threads_for_fitting():
            evals, evecs = np.linalg.eigh(centred.T @ centred if tall else centred @ centred.T)
            top = np.argsort(evals)[::-1][:pca_dim]
            s = np.sqrt(np.maximum(evals[top], 0.0))
            if tall:
                proj = evecs[:, top]
            else:  # right singular vectors X^T u / s; directions without variance stay zero
                usable = s > 1e-9 * max(float(s[0]), 1e-300)
                proj = (centred.T @ evecs[:, top]) / np.where(usable, s, np.inf)
        if self.config['pca_whiten']:
            var = (s[:pca_dim] ** 2) / max(raw.shape[0] - 1, 1)
            proj = proj / np.sqrt(var + 1e-9)
        self._pca_mean, self._pca_proj = mean.astype(np.float32), proj.astype(np.float32)

    def get_state(self) -> dict[str, np.ndarray]:
        state = dict(self._get_state())
        if self._pca_proj is not None:
            state['pca.mean'], state['pca.proj'] = self._pca_mean, self._pca_proj
        for net in self.networks():
            if net.int8_ranges is not None:
                state[f'int8.{net.label}'] = np.array(net.int8_ranges)
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        own = {k: v for k, v in state.items() if not k.startswith(('pca.', 'int8.'))}
        self._set_state(own)
        if 'pca.proj' in state:
            self._pca_mean, self._pca_proj = state['pca.mean'], state['pca.proj']
        for net in self.networks():  # the fitted state is part of a network's cache key
            if f'int8.{net.label}' in state:
                net.int8_ranges = str(state[f'int8.{net.label}'])
                net.reset()
            net.refresh()

    def _check_ready(self) -> None:
        if not self.is_fitted:
            raise VprError(f'encoder {self.name!r} needs fitting on map images first (it learns a '
                           'vocabulary or PCA); build a map, or load one that stores this state')

    def _apply_pca(self, x: np.ndarray) -> np.ndarray:
        if self._pca_proj is None:
            return l2_normalize(x)
        return l2_normalize((l2_normalize(x) - self._pca_mean) @ self._pca_proj)

    def _batches(self, images: Sequence[np.ndarray]) -> Iterable[list[np.ndarray]]:
        size = max(1, int(self.config['batch_size']))
        for i in range(0, len(images), size):
            yield [validate_rgb(im) for im in images[i:i + size]]

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, dim) float32 L2-normalised descriptors of a list of HxWx3 uint8 RGB images."""
        if self.multi_vector:
            raise VprError(f'encoder {self.name!r} gives a set of vectors per image: use describe()')
        self._check_ready()
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = [self._encode(batch) for batch in self._batches(images)]
        return self._apply_pca(np.concatenate(out, axis=0))

    def _encode_raw_sets(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self.multi_vector:
            sets: list[np.ndarray] = []
            for batch in self._batches(images):
                sets.extend(self._describe(batch))
            return sets
        return [row[None] for batch in self._batches(images) for row in self._encode(batch)]

    def _describe(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Multi-vector encoders: one (m_i, raw_dim) array per image."""
        raise NotImplementedError

    def describe(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One (m_i, dim) array of L2-normalised vectors per image (m_i == 1 for global encoders)."""
        self._check_ready()
        if not self.multi_vector:
            return [row[None] for row in self.encode(images)]
        return [self._apply_pca(s) if len(s) else np.zeros((0, self.dim), np.float32)
                for s in self._encode_raw_sets(images)]

    def identity(self) -> dict[str, Any]:
        """What a map records to decide later whether this encoder produced it."""
        return {'name': self.name,
                'config': {k: v for k, v in self.config.items() if k not in RUNTIME_KEYS},
                'weights_fingerprint': self.weights_fingerprint(), 'dim': self.dim,
                'multi_vector': self.multi_vector}


class VocabularyState:
    """Mixin for encoders whose state is one vocabulary ``centers`` (K, D) fitted on the map."""

    centers: np.ndarray | None = None

    @property
    def vocabulary_shape(self) -> tuple[int, int]:
        raise NotImplementedError

    def _is_fitted(self) -> bool:
        return self.centers is not None

    def _get_state(self) -> dict[str, np.ndarray]:
        return {'centers': self.centers} if self.centers is not None else {}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        if 'centers' in state:
            centers = np.asarray(state['centers'], np.float32)
            if centers.shape != tuple(self.vocabulary_shape):
                raise ConfigError(f'encoder {getattr(self, "name", "?")!r}: '
                                  f'stored vocabulary {centers.shape} '
                                  f'does not match num_clusters x feature dim {self.vocabulary_shape}')
            self.centers = centers


# ----- registry ----------------------------------------------------------------------------
def available_encoders() -> list[str]:
    """Names of the encoders: the modules of vpr_ros/encoders/models."""
    import vpr_ros.encoders.models as models

    return sorted(m.name for m in pkgutil.iter_modules(models.__path__) if not m.name.startswith('_'))


def encoder_class(name: str) -> type[Encoder]:
    if name not in available_encoders():
        raise ConfigError(f'unknown encoder {name!r}; available: {", ".join(available_encoders())}')
    module = importlib.import_module(f'vpr_ros.encoders.models.{name}')
    found = [obj for obj in vars(module).values()
             if isinstance(obj, type) and issubclass(obj, Encoder) and obj.name == name]
    if len(found) != 1:
        raise VprError(f'module vpr_ros.encoders.models.{name} must define one Encoder with name {name!r}')
    return found[0]


def create_encoder(name: str, config: dict[str, Any] | None = None,
                   state: dict[str, np.ndarray] | None = None) -> Encoder:
    """Instantiate an encoder by name; ``state`` restores what was fitted on a map."""
    encoder = encoder_class(name)(config)
    if state:
        encoder.set_state(state)
    return encoder
