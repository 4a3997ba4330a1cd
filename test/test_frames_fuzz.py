"""Seeded fuzzing of the image decoders: any message gives a bounded RGB array or an ImageDecodeError."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vpr_ros.errors import ImageDecodeError
from vpr_ros.frames import SUPPORTED_ENCODINGS, compressed_to_rgb, image_msg_to_rgb

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None)
MAX_PIXELS = 1 << 16


class Msg:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def _encoded() -> dict[str, bytes]:
    import cv2

    img = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    return {ext: cv2.imencode(ext, img)[1].tobytes() for ext in ('.jpg', '.png')}


ENCODED = _encoded()


def check(rgb: np.ndarray, height: int | None = None, width: int | None = None) -> None:
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.flags.c_contiguous
    assert rgb.shape[0] * rgb.shape[1] <= MAX_PIXELS
    if height is not None:
        assert rgb.shape[:2] == (height, width)


@FUZZ
@given(height=st.integers(-2, 70), width=st.integers(-2, 70),
       encoding=st.one_of(st.sampled_from(SUPPORTED_ENCODINGS), st.text(max_size=8)),
       step=st.one_of(st.integers(-5, 300), st.just(2 ** 32 - 1), st.integers(0, 2 ** 63)),
       bigendian=st.booleans(), size=st.integers(0, 12000), seed=st.integers(0, 2 ** 16))
def test_raw_image_messages(height, width, encoding, step, bigendian, size, seed) -> None:
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    msg = Msg(height=height, width=width, encoding=encoding, step=step, is_bigendian=bigendian, data=data)
    try:
        rgb = image_msg_to_rgb(msg, MAX_PIXELS)
    except ImageDecodeError:
        return
    check(rgb, height, width)


@FUZZ
@given(kind=st.sampled_from(sorted(ENCODED)),
       mutations=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)), max_size=6),
       truncate=st.one_of(st.none(), st.floats(0.0, 1.0)),
       declared=st.one_of(st.none(), st.tuples(st.integers(0, 65535), st.integers(0, 65535))))
def test_corrupted_jpeg_and_png(kind, mutations, truncate, declared) -> None:
    data = bytearray(ENCODED[kind])
    if declared is not None:  # the header claims another size
        if kind == '.png':
            data[16:24] = declared[0].to_bytes(4, 'big') + declared[1].to_bytes(4, 'big')
        else:
            at = data.find(b'\xff\xc0')
            data[at + 5:at + 9] = declared[1].to_bytes(2, 'big') + declared[0].to_bytes(2, 'big')
    for where, value in mutations:
        data[int(where * len(data))] = value
    if truncate is not None:
        data = data[:int(truncate * len(data))]
    try:
        rgb = compressed_to_rgb(bytes(data), MAX_PIXELS)
    except ImageDecodeError:
        return
    check(rgb)
