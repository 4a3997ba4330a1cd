"""ORB bag of visual words with tf-idf (the DBoW family's scoring idea, flat vocabulary).

Words: k-means on ORB descriptors unpacked to bits (so L2^2 is the Hamming distance), fitted on
the map; idf = log(N / N_i) over the fit images. Descriptor: tf-idf histogram, L2-normalised,
so the inner product is the cosine similarity of tf-idf vectors."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from vpr_ros.encoders.aggregators.vlad import assign, fit_vocabulary
from vpr_ros.encoders.base import Encoder
from vpr_ros.features import orb_bits


class OrbBovw(Encoder):
    name = 'orb_bovw'
    description = 'ORB bag of visual words with tf-idf, vocabulary fitted on the map'
    trainable_fit = True
    default_config: ClassVar[dict[str, Any]] = {'num_words': 1000, 'max_features': 1000, 'max_side': 640,
                                                'seed': 0}

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.words: np.ndarray | None = None
        self.idf: np.ndarray | None = None

    @property
    def raw_dim(self) -> int:
        return int(self.config['num_words'])

    def _features(self, rgb: np.ndarray) -> np.ndarray:
        return orb_bits(rgb, int(self.config['max_features']), int(self.config['max_side']))

    def _histogram(self, feats: np.ndarray) -> np.ndarray:
        hist = np.zeros(self.raw_dim, np.float32)
        if len(feats):
            np.add.at(hist, assign(feats, self.words, cosine=False), 1.0)
        return hist

    def _fit(self, images: Sequence[np.ndarray]) -> None:
        per_image = [self._features(im) for im in images]
        k = min(int(self.config['num_words']), sum(len(f) for f in per_image))
        if k < int(self.config['num_words']):
            from vpr_ros.errors import VprError
            raise VprError(f'orb_bovw: {k} ORB features in the fit images, fewer than num_words '
                           f'{self.config["num_words"]}; lower num_words')
        self.words = fit_vocabulary(np.concatenate(per_image), k, cosine=False, seed=int(self.config['seed']))
        doc_freq = np.zeros(k, np.float64)
        for feats in per_image:
            doc_freq += self._histogram(feats) > 0
        self.idf = np.log(len(per_image) / np.maximum(doc_freq, 1.0)).astype(np.float32)

    def _is_fitted(self) -> bool:
        return self.words is not None and self.idf is not None

    def _get_state(self) -> dict[str, np.ndarray]:
        return {'words': self.words, 'idf': self.idf} if self._is_fitted() else {}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        if 'words' in state and 'idf' in state:
            self.words = np.asarray(state['words'], np.float32)
            self.idf = np.asarray(state['idf'], np.float32)

    def _encode(self, images: list[np.ndarray]) -> np.ndarray:
        out = []
        for im in images:
            hist = self._histogram(self._features(im))
            out.append(hist / max(hist.sum(), 1.0) * self.idf)
        return np.stack(out)
