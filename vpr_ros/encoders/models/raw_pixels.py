"""Raw pixels: a tiny grayscale thumbnail, zero-mean and unit-norm. The sanity baseline every
learned or engineered descriptor should clearly beat."""
from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np

from vpr_ros.encoders.base import Encoder


class RawPixels(Encoder):
    name = 'raw_pixels'
    description = 'downsampled normalised grayscale image (baseline)'
    default_config: ClassVar[dict[str, Any]] = {'size': [24, 32]}

    @property
    def raw_dim(self) -> int:
        return int(self.config['size'][0]) * int(self.config['size'][1])

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.config['size'][0]), int(self.config['size'][1])

    def _encode(self, images: list[np.ndarray]) -> np.ndarray:
        h, w = self.input_size
        out = np.empty((len(images), h * w), np.float32)
        for i, im in enumerate(images):
            small = cv2.resize(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), (w, h), interpolation=cv2.INTER_AREA)
            v = small.astype(np.float32).reshape(-1)
            out[i] = v - v.mean()
        return out
