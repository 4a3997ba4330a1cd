"""Frozen backbone features, computed once per frame and augmented copy, memory-mapped from disk.

Copy 0 of every frame is the frame as recorded; copies 1..A-1 are augmented before the backbone,
with augmentations that keep the place and its pose true: a mild photometric change (brightness,
contrast, saturation each x[0.75, 1.25]) and a random crop of 80-100 % of the side lengths (aspect
kept) resized back - no flips (a mirrored street is another place) and no rotations. Augmented
copies are seeded by (seed, frame, copy), so a rebuilt cache is identical. Validation only reads
copy 0.

Layout of ``DIR``: ``feat<j>.npy`` (one float16 array (N, A, ...) per backbone output: SALAD-style
backbones give a map and a token), ``frames.npz`` (poses, stamps, sessions) and ``manifest.yaml``
(written last: a cache without it is incomplete and rebuilt; a different key is rebuilt too).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np
import torch
import yaml
from tqdm import tqdm

from vpr_ros.frames import Frame
from vpr_ros.textio import load_yaml_file
from vpr_ros.training.places import FrameTable


def augment(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = rng.uniform(0.8, 1.0)
    ch, cw = max(8, int(round(h * s))), max(8, int(round(w * s)))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    img = cv2.resize(rgb[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    img *= rng.uniform(0.75, 1.25)  # brightness
    mean = img.mean()
    img = (img - mean) * rng.uniform(0.75, 1.25) + mean  # contrast
    gray = img.mean(axis=2, keepdims=True)
    img = (img - gray) * rng.uniform(0.75, 1.25) + gray  # saturation
    return np.clip(img, 0, 255).astype(np.uint8)


def _as_list(out: Any) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


class FeatureCache:
    """``get(frames, copies)`` -> the backbone outputs (float32 tensors) of those cached rows."""

    def __init__(self, directory: str, arrays: list[np.ndarray], table: FrameTable,
                 manifest: dict[str, Any]) -> None:
        self.directory = directory
        self.arrays = arrays
        self.table = table
        self.manifest = manifest

    @property
    def copies(self) -> int:
        return int(self.arrays[0].shape[1])

    def get(self, frames: np.ndarray, copies: np.ndarray) -> Any:
        outs = [torch.from_numpy(np.asarray(a[frames, copies], np.float32)) for a in self.arrays]
        return outs[0] if len(outs) == 1 else tuple(outs)

    @property
    def bytes_on_disk(self) -> int:
        return int(sum(a.nbytes for a in self.arrays))

    @staticmethod
    def key(parts: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @classmethod
    def open(cls, directory: str, key: str) -> 'FeatureCache | None':
        path = os.path.join(directory, 'manifest.yaml')
        if not os.path.isfile(path):
            return None
        manifest = load_yaml_file(path, 'feature cache manifest') or {}
        if manifest.get('key') != key:
            return None
        n = int(manifest['frames'])
        arrays = [np.load(os.path.join(directory, f'feat{j}.npy'), mmap_mode='r')[:n]
                  for j in range(int(manifest['outputs']))]
        z = np.load(os.path.join(directory, 'frames.npz'))
        table = FrameTable(z['xyz'][:n], z['yaw'][:n], z['stamp'][:n], z['session'][:n])
        return cls(directory, arrays, table, manifest)

    @classmethod
    def build(cls, directory: str, key: str, frames: Iterable[tuple[int, Frame]], expected: int,
              backbone: torch.nn.Module, preprocess: Any, copies: int, seed: int, batch: int,
              extra: dict[str, Any], progress: bool = True) -> 'FeatureCache':
        """Run ``backbone`` over every (session, frame) and ``copies`` versions of it; see the module doc.

        ``expected`` (a bag's metadata count) only sizes the progress bar: the feature files grow
        (doubling) while frames come, and every frame is cached however many the header claimed."""
        if os.path.isdir(directory):
            shutil.rmtree(directory)
        os.makedirs(directory)
        arrays: list[np.ndarray] = []
        xyz: list[tuple[float, float, float]] = []
        yaw: list[float] = []
        stamp: list[float] = []
        session: list[int] = []
        n = 0
        pending: list[tuple[int, Frame]] = []

        def room_for(rows: int) -> None:
            """Grow every feature file to hold ``rows`` rows (doubling: amortised O(1) per row)."""
            nonlocal arrays
            if rows <= len(arrays[0]):
                return
            grown = []
            for j, a in enumerate(arrays):
                path = os.path.join(directory, f'feat{j}.npy')
                bigger = np.lib.format.open_memmap(path + '.grow', mode='w+', dtype=np.float16,
                                                   shape=(max(rows, 2 * len(a)), *a.shape[1:]))
                bigger[:n] = a[:n]
                bigger.flush()
                os.replace(path + '.grow', path)
                grown.append(bigger)
            arrays = grown

        def flush() -> None:
            nonlocal n, arrays
            for c in range(copies):
                imgs = [f.rgb if c == 0 else augment(f.rgb, np.random.default_rng([seed, n + i, c]))
                        for i, (_, f) in enumerate(pending)]
                with torch.inference_mode():
                    outs = [o.float().numpy() for o in _as_list(backbone(preprocess(imgs)))]
                if not arrays:
                    arrays = [np.lib.format.open_memmap(
                        os.path.join(directory, f'feat{j}.npy'), mode='w+', dtype=np.float16,
                        shape=(len(pending), copies, *o.shape[1:])) for j, o in enumerate(outs)]
                room_for(n + len(pending))
                for a, o in zip(arrays, outs):
                    a[n:n + len(pending), c] = o.astype(np.float16)
            for s, f in pending:
                xyz.append(f.pose.position)
                yaw.append(f.pose.yaw)
                stamp.append(f.stamp)
                session.append(s)
            n += len(pending)
            pending.clear()

        backbone.eval()
        for item in tqdm(frames, total=expected or None, desc='caching backbone features', unit='frame',
                         disable=not progress):
            pending.append(item)
            if len(pending) == batch:
                flush()
        if pending:
            flush()
        for a in arrays:
            a.flush()
        np.savez(os.path.join(directory, 'frames.npz'), xyz=np.array(xyz, np.float64).reshape(-1, 3),
                 yaw=np.array(yaw, np.float64), stamp=np.array(stamp, np.float64),
                 session=np.array(session, np.int64))
        manifest = {'key': key, 'frames': n, 'copies': copies, 'outputs': len(arrays),
                    'shapes': [list(a.shape[2:]) for a in arrays], 'dtype': 'float16', **extra}
        tmp = os.path.join(directory, 'manifest.yaml.tmp')
        with open(tmp, 'w', encoding='utf-8') as fh:
            yaml.safe_dump(manifest, fh, sort_keys=False)
        os.replace(tmp, os.path.join(directory, 'manifest.yaml'))
        opened = cls.open(directory, key)
        assert opened is not None
        return opened
