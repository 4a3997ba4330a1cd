"""Small synthetic data shared by tests: textured frames with poses, and tiny bags/maps."""
from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator

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


# Two float32 computations of the same thing along different paths (batch of one vs several, another
# thread count, another process, the node vs the offline Localizer) agree to rounding, not bit for bit:
# BLAS/oneDNN pick other kernels and reduction orders. Measured differences are ~1e-7 on unit vectors
# and cosines; 1e-5 leaves margin yet catches any real change of a descriptor or score.
FLOAT32_ATOL = 1e-5


def assert_same_ranking(got: list[tuple[int, float]], expected: list[tuple[int, float]],
                        atol: float = FLOAT32_ATOL, rtol: float = 0.0) -> None:
    """Ranked (place_id, score) candidates, best first, from two float paths are the same answer:
    scores equal within ``atol + rtol * |score|`` rank by rank, ids equal except where near-tied
    scores (within that tolerance) may trade places, also across the top-k cut. ``rtol`` is for
    scores that are sums (SegVLAD votes), whose rounding grows with their size."""
    assert len(got) == len(expected), (got, expected)
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=atol, rtol=rtol)
    scores = dict(expected)
    for rank, ((gid, _), (eid, es)) in enumerate(zip(got, expected)):
        if gid != eid:  # an id beyond expected's cut scores at most expected's last score
            tied = scores.get(gid, expected[-1][1])
            assert abs(tied - es) <= 2 * (atol + rtol * abs(es)), \
                f'rank {rank}: {gid} vs {eid}, no near tie: {got} / {expected}'


@contextlib.contextmanager
def small_tmpfs(directory: str, size: str = '1m') -> Iterator[str]:
    """A real small file system at ``directory`` (a tmpfs; needs root and mount rights, else the test
    is skipped: tests that must run everywhere inject the OSError instead)."""
    import pytest

    os.makedirs(directory, exist_ok=True)
    done = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', directory],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f'cannot mount a tmpfs here ({done.stderr.strip()[:100]})')
    try:
        yield directory
    finally:
        subprocess.run(['umount', '-l', directory], capture_output=True)


def siblings_left(path: str) -> list[str]:
    """Hidden ``.NAME.tmp-*`` / ``.NAME.old-*`` directories a save left beside ``path``."""
    base = os.path.basename(path)
    return [n for n in os.listdir(os.path.dirname(path)) if n.startswith((f'.{base}.tmp-', f'.{base}.old-'))]


def type_mismatches(value: object, expected: object, path: str = '$') -> list[str]:
    """Where a JSON-like value does not have the type ``expected`` (a TypedDict, list[...], dict[str, ...],
    a union, Any or a scalar type); [] when it conforms. A TypedDict must hold its required keys and no key
    it does not declare."""
    import types
    import typing

    if expected is typing.Any or expected is object:
        return []
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        found = [type_mismatches(value, option, path) for option in typing.get_args(expected)]
        return [] if any(not f for f in found) else [f'{path}: {value!r:.60} is none of {expected}']
    if expected is type(None):
        return [] if value is None else [f'{path}: {value!r:.60} is not None']
    if isinstance(expected, type) and hasattr(expected, '__required_keys__'):  # a TypedDict
        if not isinstance(value, dict):
            return [f'{path}: {type(value).__name__}, not {expected.__name__}']
        hints = typing.get_type_hints(expected)
        out = [f'{path}: {expected.__name__} lacks {k!r}'
               for k in sorted(expected.__required_keys__ - set(value))]
        out += [f'{path}: {k!r} is not a key of {expected.__name__}' for k in sorted(set(value) - set(hints))]
        for key in set(value) & set(hints):
            out += type_mismatches(value[key], hints[key], f'{path}.{key}')
        return out
    if origin is list:
        (item,) = typing.get_args(expected)
        if not isinstance(value, list):
            return [f'{path}: {type(value).__name__}, not a list']
        return [m for i, v in enumerate(value) for m in type_mismatches(v, item, f'{path}[{i}]')]
    if origin is dict:
        _, item = typing.get_args(expected)
        if not isinstance(value, dict):
            return [f'{path}: {type(value).__name__}, not a dict']
        return [m for k, v in value.items() for m in type_mismatches(v, item, f'{path}.{k}')]
    if expected is float:  # JSON writes 1.0 as 1.0 but numpy rounding may hand an int
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected)  # type: ignore[arg-type]
    return [] if ok else [f'{path}: {value!r:.60} is not {getattr(expected, "__name__", expected)}']
