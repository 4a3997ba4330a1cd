"""RootSIFT + VLAD: the classical baseline. The K-word codebook is fitted by k-means on the map's
own images at build time and stored in the map. Descriptor: intra-normalised VLAD, then L2
(optionally signed-square-rooted first: ``power_norm``). Dim = K x 128."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from vpr_ros.encoders.aggregators import vlad
from vpr_ros.encoders.base import Encoder, VocabularyState
from vpr_ros.features import rootsift


class SiftVlad(VocabularyState, Encoder):
    name = 'sift_vlad'
    description = 'RootSIFT (OpenCV) + VLAD, codebook fitted on the map'
    trainable_fit = True
    default_config: ClassVar[dict[str, Any]] = {'num_clusters': 64, 'max_features': 1000, 'max_side': 640,
                                                'power_norm': False, 'seed': 0}

    @property
    def raw_dim(self) -> int:
        return int(self.config['num_clusters']) * 128

    def _features(self, rgb: np.ndarray) -> np.ndarray:
        return rootsift(rgb, int(self.config['max_features']), int(self.config['max_side']))

    def _fit(self, images: Sequence[np.ndarray]) -> None:
        feats = np.concatenate([self._features(im) for im in images])
        self.centers = vlad.fit_vocabulary(feats, int(self.config['num_clusters']), cosine=False,
                                           seed=int(self.config['seed']))

    @property
    def vocabulary_shape(self) -> tuple[int, int]:
        return int(self.config['num_clusters']), 128

    def _encode(self, images: list[np.ndarray]) -> np.ndarray:
        return np.stack([vlad.vlad(self._features(im), self.centers, cosine=False,
                                   power=bool(self.config['power_norm'])) for im in images])
