"""Shared base of the encoders that run a torch ``nn.Module``.

Preprocessing (resize, ImageNet normalisation) happens here once; the module's forward takes
a normalised (N, 3, H, W) float tensor and returns (N, D) descriptors. That module is what
ONNX export and the benchmarks' "bare forward" use, and what ``runtime`` runs (``self.network``).
"""
from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np

from vpr_ros.encoders.base import Encoder
from vpr_ros.encoders.runtime import Network, PixelInput, state_digest
from vpr_ros.errors import ConfigError, VprError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
_INTERP = {'area': cv2.INTER_AREA, 'bilinear': cv2.INTER_LINEAR, 'bicubic': cv2.INTER_CUBIC}


def resize_rgb(rgb: np.ndarray, size: tuple[int, int], interpolation: str = 'area') -> np.ndarray:
    h, w = size
    if rgb.shape[:2] == (h, w):
        return rgb
    mode = _INTERP[interpolation]
    if interpolation == 'bicubic' and (rgb.shape[0] > h or rgb.shape[1] > w):
        mode = cv2.INTER_AREA  # anti-aliased downscale, as torchvision's antialias=True
    return cv2.resize(rgb, (w, h), interpolation=mode)


def shrunk_for_fit(rgb: np.ndarray, size: tuple[int, int], interpolation: str = 'area') -> np.ndarray:
    """``rgb`` at ``size`` when that is smaller (what an encoder that resizes with :func:`resize_rgb`
    sees of it either way: a second resize_rgb to the same size returns it as is)."""
    return resize_rgb(rgb, size, interpolation) if rgb.shape[0] * rgb.shape[1] > size[0] * size[1] else rgb


def to_tensor_batch(images: list[np.ndarray], size: tuple[int, int], interpolation: str = 'area',
                    mean: np.ndarray = IMAGENET_MEAN, std: np.ndarray = IMAGENET_STD,
                    float_resize: bool = False):
    """Resize, scale to [0, 1], normalise (ImageNet by default); returns (N, 3, H, W) float32 tensor.

    ``float_resize``: resize the float image, as releases that resize a tensor after ``ToTensor`` do;
    otherwise the resized image is rounded to whole 0-255 values, as a PIL resize before ``ToTensor``
    does. The arithmetic runs in torch on the stacked batch (4x faster than float numpy temporaries).
    """
    import torch

    def resized(rgb: np.ndarray) -> np.ndarray:
        if float_resize and rgb.shape[:2] != tuple(size):  # no resize, nothing to round: stay uint8
            rgb = rgb.astype(np.float32)
        return resize_rgb(rgb, size, interpolation)

    batch = torch.from_numpy(np.stack([resized(im) for im in images]))  # float32 if any image is
    scale = torch.from_numpy(1.0 / (255.0 * std)).view(1, 3, 1, 1)
    shift = torch.from_numpy(mean / std).view(1, 3, 1, 1)
    return (batch.permute(0, 3, 1, 2).float() * scale - shift).contiguous()


class TorchEncoder(Encoder):
    """An encoder whose descriptor is ``self.model(preprocess(images))``."""

    interpolation: ClassVar[str] = 'area'
    pixel_mean: ClassVar[np.ndarray] = IMAGENET_MEAN  # in [0, 1] units, RGB
    pixel_std: ClassVar[np.ndarray] = IMAGENET_STD
    size_multiple: ClassVar[int] = 1  # e.g. 14 for ViT patch grids

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        size = self.config.get('image_size')
        if size is not None:
            if (not isinstance(size, (list, tuple)) or len(size) != 2
                    or any(int(s) <= 0 or int(s) % self.size_multiple for s in size)):
                raise ConfigError(f'encoder {self.name!r}: image_size must be [height, width], positive '
                                  f'multiples of {self.size_multiple}; got {size!r}')
        if not isinstance(self.config.get('resize_uint8', True), bool):
            raise ConfigError(f"encoder {self.name!r}: resize_uint8 must be true or false, "
                              f"got {self.config['resize_uint8']!r}")
        self.model = self.build_model()
        self.model.eval()
        self.network = Network(self.name, self.model, self.input_size, self.config, self._network_identity,
                               self.preprocess, self._pixel_input())

    def _pixel_input(self) -> PixelInput | None:
        """What lets an exported graph take resized uint8 images: a fixed input size, resized images
        rounded to uint8 and the standard normalisation (``preprocess`` not overridden)."""
        if (self.input_size is None or self.float_resize
                or type(self).preprocess is not TorchEncoder.preprocess):
            return None
        size, interpolation = self.input_size, self.interpolation
        return PixelInput(self.pixel_mean, self.pixel_std,
                          lambda images: np.stack([resize_rgb(im, size, interpolation) for im in images]))

    def _network_identity(self) -> dict[str, Any]:
        """What the exported graph depends on: the config that changes descriptors, weights, fitted state."""
        config = {k: v for k, v in self.identity()['config'].items() if k != 'precision'}
        return {'encoder': self.name, 'config': config, 'weights': self.weights_fingerprint(),
                'state': state_digest(self._get_state())}

    def build_model(self):
        """Return the torch module (weights loaded)."""
        raise NotImplementedError

    @property
    def input_size(self) -> tuple[int, int] | None:
        size = self.config.get('image_size')
        return (int(size[0]), int(size[1])) if size is not None else None

    def fit_image(self, rgb: np.ndarray) -> np.ndarray:
        # preprocess() resizes every image with resize_rgb, which leaves one of the target size as is;
        # a float resize of the full image is not a float resize of a rounded smaller one: keep those
        if (self.input_size is None or self.float_resize
                or type(self).preprocess is not TorchEncoder.preprocess):
            return rgb
        return shrunk_for_fit(rgb, self.input_size, self.interpolation)

    @property
    def float_resize(self) -> bool:
        """Resize in float (config ``resize_uint8: false``, see _zoo.FLOAT_RESIZE); else round to uint8."""
        return self.config.get('resize_uint8', True) is False

    def target_size(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """(H, W) an image of ``shape`` is resized to: ``input_size``, or its own size."""
        return self.input_size or (int(shape[0]), int(shape[1]))

    def preprocess(self, images: list[np.ndarray]):
        """The normalised (N, 3, H, W) batch of images that share one ``target_size``."""
        sizes = sorted({self.target_size(im.shape) for im in images})
        if len(sizes) != 1:
            raise VprError(f'encoder {self.name!r}: preprocess() takes images of one input size, got '
                           f'{sizes}; encode() groups images by size')
        return to_tensor_batch(images, sizes[0], self.interpolation, self.pixel_mean, self.pixel_std,
                               self.float_resize)

    def forward(self, batch) -> np.ndarray:
        """The network on a preprocessed batch, on the runtime the config chose (runtime/network.py)."""
        return self.network.run(batch)

    def _encode(self, images: list[np.ndarray]) -> np.ndarray:
        """One forward per input size: a batch never resizes an image to another image's size."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(self.target_size(im.shape), []).append(i)
        if len(groups) == 1:
            return self.network.run_images(images)
        out: np.ndarray | None = None
        for rows in groups.values():
            desc = self.network.run_images([images[i] for i in rows])
            if out is None:
                out = np.empty((len(images), desc.shape[1]), desc.dtype)
            out[rows] = desc
        assert out is not None
        return out
