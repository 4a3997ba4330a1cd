"""AnyLoc-style global VLAD over a frozen backbone's dense features (training-free, map vocabulary).

As AnyLoc-VLAD (Keetha et al. 2023): per-patch features L2-normalised, a K = 32 word vocabulary
fitted with cosine k-means on the map's own images, hard assignment by cosine similarity to the
normalised centres, residuals to the raw centre summed per word, intra-normalisation, global L2 ->
K x C dims. ``centres: mean`` keeps the centres as plain means of their members, as the official
code does (fast_pytorch_kmeans); ``centres: unit`` (default) re-normalises them (spherical k-means).
Default by measurement (docs/encoders.md, "Choosing an encoder"): on the sample world unit centres gave
Recall@1 0.962 / 0.412 on the appearance / viewpoint traversals, mean centres 0.995 / 0.263.
The backbone and vocabulary settings are exactly SegVLAD's (``segvlad``), so the two
compare global VLAD against segment retrieval over the same features and vocabulary.
Defaults: EfficientNet-Lite0 block 10 (112 channels, stride 16) at 240 x 320 -> 3584 dims;
``backbone: dinov2_vitb14`` + ``backbone_weights: PATH`` gives the AnyLoc value-facet features; every
dense backbone of backbones/dense.py (DINOv2 ViT-S/B, torchvision ResNets, EfficientNet-Lite) plugs in.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from vpr_ros.encoders.aggregators import vlad
from vpr_ros.encoders.backbones.dense import DenseFeatures, vocabulary_sample
from vpr_ros.encoders.base import Encoder, VocabularyState
from vpr_ros.encoders.runtime import GraphHead
from vpr_ros.encoders.torch_encoder import shrunk_for_fit
from vpr_ros.errors import ConfigError
from vpr_ros.textio import short_repr

DENSE_VLAD_DEFAULTS: dict[str, Any] = {
    'backbone': 'efficientnet_lite0', 'layer': None, 'image_size': [240, 320], 'backbone_weights': None,
    'num_clusters': 32, 'seed': 42, 'centres': 'unit'}


class DenseVladEncoder(VocabularyState, Encoder):
    """Shared part of anyloc_vlad and segvlad: the dense backbone and the map-fitted vocabulary."""

    trainable_fit = True
    # Maps written before the key existed were fitted with unit centres.
    legacy_config: ClassVar[dict[str, Any]] = {'centres': 'unit'}

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        if int(self.config['num_clusters']) < 1:
            raise ConfigError(f'encoder {self.name!r}: num_clusters must be >= 1')
        if self.config['centres'] not in vlad.CENTRE_FORMS:
            raise ConfigError(f"encoder {self.name!r}: centres must be one of {vlad.CENTRE_FORMS}, "
                              f"got {short_repr(self.config['centres'])}")
        self.dense = DenseFeatures(self.config['backbone'], self.config['layer'], self.config['image_size'],
                                   self.config['backbone_weights'], config=self.config)

    @property
    def raw_dim(self) -> int:
        return int(self.config['num_clusters']) * self.dense.dim

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self.dense.image_size

    def weights_fingerprint(self) -> str:
        return self.dense.fingerprint()

    def _features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, rows, cols, C) L2-normalised dense features, extracted in batches."""
        size = max(1, int(self.config['batch_size']))
        return np.concatenate([self.dense.extract(list(images[i:i + size]))
                               for i in range(0, len(images), size)])

    def _fit_vocabulary(self, feature_maps: np.ndarray) -> None:
        seed = int(self.config['seed'])
        self.centers = vlad.fit_vocabulary(vocabulary_sample(list(feature_maps), seed),
                                           int(self.config['num_clusters']), cosine=True, seed=seed,
                                           centres=self.config['centres'])

    @property
    def vocabulary_shape(self) -> tuple[int, int]:
        return int(self.config['num_clusters']), self.dense.dim


class AnyLocVlad(DenseVladEncoder):
    name = 'anyloc_vlad'
    description = ('AnyLoc-style hard VLAD (K=32, cosine) over dense backbone features, '
                   'vocabulary from the map')
    default_config: ClassVar[dict[str, Any]] = dict(DENSE_VLAD_DEFAULTS)

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        k, dim = self.vocabulary_shape

        def probe(rng: np.random.Generator) -> dict[str, np.ndarray]:
            centres = rng.standard_normal((k, dim)).astype(np.float32)
            return {'centres': centres / np.linalg.norm(centres, axis=1, keepdims=True)}

        # the vocabulary is a graph input: one exported graph serves every map's vocabulary
        self.vlad_head = GraphHead(f'vlad{k}', vlad.vlad_torch, _vlad_numpy, ('centres',), probe)

    def fit_image(self, rgb: np.ndarray) -> np.ndarray:
        # the fit (vocabulary and PCA) reads only the dense features, which resize every image to
        # image_size with resize_rgb (a no-op at that size). SegVLAD also segments the full image.
        return shrunk_for_fit(rgb, self.dense.image_size, self.dense.interpolation)

    def _fit(self, images: Sequence[np.ndarray]) -> None:
        self._fit_vocabulary(self._features(images))

    def _encode(self, images: list[np.ndarray]) -> np.ndarray:
        # on onnxruntime / OpenVINO in f32 the VLAD runs inside the exported graph (docs/runtimes.md)
        return self.dense.network.run_images(images, self.vlad_head, centres=self.centers)


def _vlad_numpy(feature_maps: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return np.stack([vlad.vlad(f.reshape(-1, f.shape[-1]), centres, cosine=True) for f in feature_maps])
