"""Small synthetic data shared by tests: textured frames with poses, and tiny bags/maps."""
from __future__ import annotations

import numpy as np

from vpr_ros.frames import Frame, Pose


def textured_frames(n: int, seed: int = 0, size: tuple[int, int] = (60, 80), spacing: float = 30.0,
                    t0: float = 100.0, noise: float = 0.0) -> list[Frame]:
    """``n`` frames with distinct smooth random textures, 1 s and ``spacing`` metres apart."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        tex = np.random.default_rng(1000 + i).random((6, 8, 3)) * 255
        img = cv2.resize(tex.astype(np.float32), size[::-1], interpolation=cv2.INTER_CUBIC)
        img = np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
        out.append(Frame(t0 + i, img, Pose.from_xy_yaw(i * spacing, 0.0, 0.0)))
    return out


def blob_image(seed: int, size: tuple[int, int] = (480, 640)) -> np.ndarray:
    """A textured image with many distinct corners and blobs (SIFT/ORB find hundreds)."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    img = np.full((h, w, 3), 128, np.uint8)
    for _ in range(400):
        colour = [int(c) for c in rng.integers(0, 256, 3)]
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), int(rng.integers(3, 20)), colour, -1)
        else:
            dx, dy = int(rng.integers(4, 30)), int(rng.integers(4, 30))
            cv2.rectangle(img, (x, y), (x + dx, y + dy), colour, -1)
    return img
