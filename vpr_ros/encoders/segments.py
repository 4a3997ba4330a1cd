"""Image segmenters for SegVLAD: RGB image -> (M, H, W) boolean segment masks.

* ``slic`` (default): SLIC/SLICO superpixels from OpenCV contrib (``cv2.ximgproc``), with the
  region size chosen so an image gives about ``target`` segments (tens to ~100 at 240x320).
  A partition: every pixel is in exactly one segment.
* ``graph``: Felzenszwalb-Huttenlocher graph segmentation (``cv2.ximgproc.segmentation``);
  the segment count follows the image content, ``target`` only bounds it through the minimum
  segment size.
* ``sam_onnx``: Segment Anything (or a SAM-family model with the same interface) through
  onnxruntime, as SAM's automatic mask generator at its default settings: a points_per_side^2
  grid of single positive point prompts, three masks per point, keep masks with predicted IoU >
  0.88 and stability score >= 0.95, binarise at logit 0, box NMS at IoU 0.7, no crops, no
  minimum area. Masks may overlap. Needs two user-supplied files: the image encoder (input
  (1, 3, S, S) normalised and padded, or (H, W, 3) raw pixels when exported with preprocessing)
  and the prompt decoder exported as segment-anything's ``SamOnnxModel`` (inputs image_embeddings,
  point_coords, point_labels, mask_input, has_mask_input, orig_im_size; outputs masks (logits at
  orig_im_size), iou_predictions, low_res_masks), ideally with ``return_single_mask=False``.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import cv2
import numpy as np

from vpr_ros.errors import ConfigError, WeightsError

SEGMENTERS = ('slic', 'graph', 'sam_onnx')
DEFAULT_TARGET = 64

# SAM's pixel normalisation (0-255 scale) and its automatic mask generator defaults.
_SAM_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
_SAM_STD = np.array([58.395, 57.12, 57.375], np.float32)
_SAM_INPUTS = ('image_embeddings', 'point_coords', 'point_labels', 'mask_input', 'has_mask_input',
               'orig_im_size')


def masks_from_labels(labels: np.ndarray) -> np.ndarray:
    """(M, H, W) boolean masks of an (H, W) label image, one per distinct label (in sorted order)."""
    labels = np.asarray(labels)
    values, compact = np.unique(labels, return_inverse=True)
    compact = compact.reshape(labels.shape)
    return compact[None] == np.arange(len(values))[:, None, None]


class Segmenter(ABC):
    """RGB uint8 (H, W, 3) -> (M, H, W) boolean masks (M may be 0 for SAM on a blank image)."""

    name: ClassVar[str] = ''

    @abstractmethod
    def segment(self, rgb: np.ndarray) -> np.ndarray:
        """Segment masks of one image, at the image's resolution."""

    def fingerprint(self) -> str:
        """Digest of the model files the segmenter uses ('none' for classical segmenters)."""
        return 'none'


class SlicSegmenter(Segmenter):
    """SLIC superpixels (OpenCV contrib) in CIELAB, about ``target`` per image, connectivity enforced."""

    name = 'slic'
    _ALGORITHMS: ClassVar[dict[str, int]] = {
        'slico': cv2.ximgproc.SLICO, 'slic': cv2.ximgproc.SLIC, 'mslic': cv2.ximgproc.MSLIC}

    def __init__(self, target: int = DEFAULT_TARGET, algorithm: str = 'slico', ruler: float = 10.0,
                 iterations: int = 10) -> None:
        if int(target) < 1:
            raise ConfigError(f'segments (target count) must be >= 1, got {target}')
        if algorithm not in self._ALGORITHMS:
            raise ConfigError(f'unknown SLIC algorithm {algorithm!r}; known: {sorted(self._ALGORITHMS)}')
        self.target, self.algorithm = int(target), algorithm
        self.ruler, self.iterations = float(ruler), int(iterations)

    def labels(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W) int32 labels 0..M-1."""
        h, w = rgb.shape[:2]
        region = max(4, int(round(np.sqrt(h * w / self.target))))
        lab = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB)
        slic = cv2.ximgproc.createSuperpixelSLIC(lab, self._ALGORITHMS[self.algorithm], region, self.ruler)
        slic.iterate(self.iterations)
        slic.enforceLabelConnectivity(25)
        return np.unique(slic.getLabels(), return_inverse=True)[1].reshape(h, w).astype(np.int32)

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        return masks_from_labels(self.labels(rgb))


class GraphSegmenter(Segmenter):
    """Felzenszwalb-Huttenlocher segmentation; min segment size = H*W / (2*target) pixels."""

    name = 'graph'

    def __init__(self, target: int = DEFAULT_TARGET, sigma: float = 0.8, k: float = 300.0) -> None:
        if int(target) < 1:
            raise ConfigError(f'segments (target count) must be >= 1, got {target}')
        self.target, self.sigma, self.k = int(target), float(sigma), float(k)

    def labels(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        min_size = max(1, h * w // (2 * self.target))
        seg = cv2.ximgproc.segmentation.createGraphSegmentation(self.sigma, self.k, min_size)
        labels = seg.processImage(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        return np.unique(labels, return_inverse=True)[1].reshape(h, w).astype(np.int32)

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        return masks_from_labels(self.labels(rgb))


def sam_point_grid(points_per_side: int) -> np.ndarray:
    """(n*n, 2) normalised (x, y) prompt points: cell centres of an n x n grid over the image."""
    offset = 1.0 / (2 * points_per_side)
    side = np.linspace(offset, 1.0 - offset, points_per_side)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs.reshape(-1), ys.reshape(-1)], axis=1)


def stability_scores(logits: np.ndarray, offset: float = 1.0, threshold: float = 0.0) -> np.ndarray:
    """SAM's stability score: |logits > t + offset| / |logits > t - offset| per mask."""
    flat = logits.reshape(*logits.shape[:-2], -1)
    inter = (flat > threshold + offset).sum(-1)
    union = (flat > threshold - offset).sum(-1)
    return inter / np.maximum(union, 1)


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(M, 4) XYXY boxes (max pixel indices, inclusive) of (M, H, W) masks; zeros for empty masks."""
    boxes = np.zeros((len(masks), 4), np.float32)
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    for i in range(len(masks)):
        ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        if len(ys):
            boxes[i] = (xs[0], ys[0], xs[-1], ys[-1])
    return boxes


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS, by decreasing score (IoU as torchvision: area = w * h)."""
    order = np.argsort(-scores, kind='stable')
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(int(i))
        x0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


class SamOnnxSegmenter(Segmenter):
    """SAM automatic mask generation (default settings) with ONNX encoder + decoder files."""

    name = 'sam_onnx'

    def __init__(self, encoder_path: str | None, decoder_path: str | None, points_per_side: int = 32,
                 points_per_batch: int = 64, pred_iou_thresh: float = 0.88,
                 stability_score_thresh: float = 0.95, stability_score_offset: float = 1.0,
                 box_nms_thresh: float = 0.7, threads: int = 0) -> None:
        missing = [f'{key} ({path!r})'
                   for key, path in (('sam_encoder', encoder_path), ('sam_decoder', decoder_path))
                   if not path or not os.path.isfile(path)]
        if missing:
            raise WeightsError('segmenter sam_onnx needs the SAM ONNX model files; missing: '
                               + ', '.join(missing) + '. Export the image encoder and the SamOnnxModel '
                               'decoder of segment-anything and give their paths in the encoder config')
        import onnxruntime as ort

        options = ort.SessionOptions()
        for pool in ('intra_op', 'inter_op'):  # idle workers sleep: the CPU is shared (threadpools.py)
            options.add_session_config_entry(f'session.{pool}.allow_spinning', '0')
        if threads > 0:
            options.intra_op_num_threads = int(threads)
        self.paths = (str(encoder_path), str(decoder_path))
        try:
            self.encoder = ort.InferenceSession(self.paths[0], options, providers=['CPUExecutionProvider'])
            self.decoder = ort.InferenceSession(self.paths[1], options, providers=['CPUExecutionProvider'])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise WeightsError(f'cannot load SAM ONNX models {self.paths}: {type(exc).__name__}: '
                               f'{str(exc)[:200]}') from exc
        names = {i.name for i in self.decoder.get_inputs()}
        absent = [n for n in _SAM_INPUTS if n not in names]
        if absent:
            raise WeightsError(f'{self.paths[1]} is not a SAM prompt decoder export: '
                               f'it lacks inputs {absent}')
        enc_input = self.encoder.get_inputs()[0]
        if len(enc_input.shape) not in (3, 4):
            raise WeightsError(f'{self.paths[0]}: encoder input must be (1, 3, S, S) or (H, W, 3), '
                               f'got {enc_input.shape}')
        self._enc_name, self._enc_rank = enc_input.name, len(enc_input.shape)
        side = enc_input.shape[-1] if self._enc_rank == 4 else None
        self.input_side = int(side) if isinstance(side, int) else 1024
        coords = next(i for i in self.decoder.get_inputs() if i.name == 'point_coords')
        self._batched = not isinstance(coords.shape[0], int)  # official export: fixed batch 1
        self.points_per_side, self.points_per_batch = int(points_per_side), max(1, int(points_per_batch))
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = float(box_nms_thresh)

    def fingerprint(self) -> str:
        from vpr_ros.encoders.weights import file_fingerprint

        return '+'.join(file_fingerprint(p) for p in self.paths)

    def _resized_shape(self, h: int, w: int) -> tuple[int, int]:
        scale = self.input_side / max(h, w)
        return int(h * scale + 0.5), int(w * scale + 0.5)

    def embed(self, rgb: np.ndarray) -> np.ndarray:
        """Image embeddings (1, C, h, w) from the encoder (longest side resized to the input side)."""
        h, w = rgb.shape[:2]
        nh, nw = self._resized_shape(h, w)
        image = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        if self._enc_rank == 3:
            feed = image
        else:
            padded = np.zeros((self.input_side, self.input_side, 3), np.float32)
            padded[:nh, :nw] = (image - _SAM_MEAN) / _SAM_STD
            feed = padded.transpose(2, 0, 1)[None]
        return self.encoder.run(None, {self._enc_name: np.ascontiguousarray(feed)})[0]

    def _decode(self, embeddings: np.ndarray, points: np.ndarray, size: tuple[int, int]):
        """Mask logits (B, m, H, W) and predicted IoUs (B, m) for B single-point prompts."""
        b = len(points)
        # SAM's prompt encoder pads a point-only prompt with a "not a point" (label -1).
        coords = np.concatenate([points[:, None], np.zeros((b, 1, 2), np.float32)], axis=1)
        labels = np.tile(np.array([[1.0, -1.0]], np.float32), (b, 1))
        emb_h, emb_w = embeddings.shape[-2:]
        feed = {'image_embeddings': embeddings, 'point_coords': coords.astype(np.float32),
                'point_labels': labels, 'mask_input': np.zeros((1, 1, 4 * emb_h, 4 * emb_w), np.float32),
                'has_mask_input': np.zeros(1, np.float32), 'orig_im_size': np.array(size, np.float32)}
        masks, ious = self.decoder.run(None, feed)[:2]
        if masks.shape[1] > 1:  # multimask export: SAM's automatic generator uses tokens 1..3
            masks, ious = masks[:, 1:], ious[:, 1:]
        return masks, ious

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        embeddings = self.embed(rgb)
        nh, nw = self._resized_shape(h, w)
        points = sam_point_grid(self.points_per_side) * np.array([w, h], np.float64)
        points = (points * np.array([nw / w, nh / h])).astype(np.float32)
        step = self.points_per_batch if self._batched else 1
        kept_masks: list[np.ndarray] = []
        kept_scores: list[np.ndarray] = []
        for start in range(0, len(points), step):
            logits, ious = self._decode(embeddings, points[start:start + step], (h, w))
            logits, ious = logits.reshape(-1, h, w), ious.reshape(-1)
            keep = ious > self.pred_iou_thresh
            logits, ious = logits[keep], ious[keep]
            keep = stability_scores(logits, self.stability_score_offset) >= self.stability_score_thresh
            kept_masks.append(logits[keep] > 0.0)
            kept_scores.append(ious[keep])
        masks = np.concatenate(kept_masks) if kept_masks else np.zeros((0, h, w), bool)
        scores = np.concatenate(kept_scores) if kept_scores else np.zeros(0, np.float32)
        if not len(masks):
            return masks
        return masks[box_nms(mask_boxes(masks), scores, self.box_nms_thresh)]


def create_segmenter(name: str, target: int = DEFAULT_TARGET,
                     options: dict[str, Any] | None = None) -> Segmenter:
    """A segmenter by name; ``options`` are its keyword arguments (SAM: encoder_path, decoder_path...)."""
    options = dict(options or {})
    if name == 'slic':
        return SlicSegmenter(target, **options)
    if name == 'graph':
        return GraphSegmenter(target, **options)
    if name == 'sam_onnx':
        return SamOnnxSegmenter(**options)
    raise ConfigError(f'unknown segmenter {name!r}; available: {", ".join(SEGMENTERS)}')
