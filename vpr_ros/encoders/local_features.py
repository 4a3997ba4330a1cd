"""OpenCV local features for the classical encoders: RootSIFT and ORB."""
from __future__ import annotations

import cv2
import numpy as np


def _gray(rgb: np.ndarray, max_side: int) -> np.ndarray:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    scale = max_side / max(gray.shape)
    if max_side and scale < 1:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return gray


def rootsift(rgb: np.ndarray, max_features: int = 1000, max_side: int = 640) -> np.ndarray:
    """(n, 128) RootSIFT descriptors (Arandjelovic & Zisserman 2012): L1-normalise, then sqrt."""
    sift = cv2.SIFT_create(nfeatures=max_features)
    _, desc = sift.detectAndCompute(_gray(rgb, max_side), None)
    if desc is None:
        return np.zeros((0, 128), np.float32)
    desc = desc / np.maximum(desc.sum(axis=1, keepdims=True), 1e-12)
    return np.sqrt(desc).astype(np.float32)


def orb_bits(rgb: np.ndarray, max_features: int = 1000, max_side: int = 640) -> np.ndarray:
    """(n, 256) ORB descriptors unpacked to {0, 1} floats (L2 distance^2 == Hamming distance)."""
    orb = cv2.ORB_create(nfeatures=max_features)
    _, desc = orb.detectAndCompute(_gray(rgb, max_side), None)
    if desc is None:
        return np.zeros((0, 256), np.float32)
    return np.unpackbits(desc, axis=1).astype(np.float32)
