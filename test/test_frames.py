import numpy as np
import pytest

from vpr_ros.errors import ImageDecodeError
from vpr_ros.frames import Pose, compressed_to_rgb, image_msg_to_rgb, raw_image_to_array, validate_rgb


class Msg:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_step_padding_is_honoured():
    # mono8 3x2 with one padding byte per row (step 4): rosbags-image gets this wrong, we must not.
    data = bytes([1, 2, 3, 99, 4, 5, 6, 99])
    arr = raw_image_to_array(2, 3, 'mono8', 4, False, data)
    assert arr[..., 0].tolist() == [[1, 2, 3], [4, 5, 6]]


def test_big_endian_mono16():
    data = np.array([[256, 512]], '>u2').tobytes()
    arr = raw_image_to_array(1, 2, 'mono16', 4, True, data)
    assert arr[..., 0].tolist() == [[256, 512]]


@pytest.mark.parametrize('encoding,pixel', [('rgb8', [10, 20, 30]), ('bgr8', [30, 20, 10]),
                                            ('rgba8', [10, 20, 30, 255]), ('bgra8', [30, 20, 10, 255])])
def test_colour_orders(encoding, pixel):
    ch = len(pixel)
    msg = Msg(height=8, width=8, encoding=encoding, step=8 * ch, is_bigendian=0,
              data=np.tile(np.array(pixel, np.uint8), 64).tobytes())
    assert image_msg_to_rgb(msg)[0, 0].tolist() == [10, 20, 30]


def test_mono16_scales_to_8bit():
    msg = Msg(height=8, width=8, encoding='16UC1', step=16, is_bigendian=0,
              data=np.full(64, 65535, '<u2').tobytes())
    assert image_msg_to_rgb(msg)[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize('kw,kind', [
    ({'encoding': 'weird'}, 'unknown encoding'),
    ({'step': 5}, 'bad step'),
    ({'data': b'\x00' * 10}, 'truncated image'),
    ({'height': 0}, 'empty image'),
])
def test_malformed_images_raise_with_kind(kw, kind):
    base = {'height': 8, 'width': 8, 'encoding': 'rgb8', 'step': 24, 'is_bigendian': 0, 'data': b'\x00' * 192}
    base.update(kw)
    with pytest.raises(ImageDecodeError) as err:
        image_msg_to_rgb(Msg(**base))
    assert err.value.kind == kind


def test_compressed_roundtrip_and_garbage():
    import cv2

    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200
    ok, png = cv2.imencode('.png', rgb[..., ::-1])
    assert compressed_to_rgb(png.tobytes())[0, 0].tolist() == [200, 0, 0]
    with pytest.raises(ImageDecodeError, match='undecodable'):
        compressed_to_rgb(b'not a jpeg at all')


def test_validate_rgb_rejects_wrong_shape():
    with pytest.raises(ImageDecodeError):
        validate_rgb(np.zeros((16, 16), np.uint8))


def test_pose_yaw():
    assert Pose.from_xy_yaw(0, 0, 1.0).yaw == pytest.approx(1.0)


def _jpeg(width=64, height=48):
    import cv2

    img = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return cv2.imencode('.jpg', img)[1].tobytes()


def _with_declared_size(jpeg: bytes, width: int, height: int) -> bytes:
    for sof in (b'\xff\xc0', b'\xff\xc2'):
        at = jpeg.find(sof)
        if at > 0:
            return jpeg[:at + 5] + height.to_bytes(2, 'big') + width.to_bytes(2, 'big') + jpeg[at + 9:]
    raise AssertionError('no SOF marker')


def test_huge_step_on_a_tiny_message_allocates_nothing():
    import tracemalloc

    tracemalloc.start()
    try:
        arr = raw_image_to_array(1, 1, 'rgb8', 2 ** 32 - 1, False, bytes([1, 2, 3]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert arr.tolist() == [[[1, 2, 3]]]
    assert peak < 1 << 20
    with pytest.raises(ImageDecodeError) as err:  # a second row the data cannot back
        raw_image_to_array(2, 1, 'rgb8', 2 ** 32 - 1, False, bytes(6))
    assert err.value.kind == 'truncated image'


def test_last_row_without_padding_is_read():
    data = bytes([1, 2, 3, 99, 4, 5, 6])  # step 4, the last row's pad byte is missing
    assert raw_image_to_array(2, 3, 'mono8', 4, False, data)[..., 0].tolist() == [[1, 2, 3], [4, 5, 6]]


def test_jpeg_header_claiming_a_huge_image_is_refused_before_decoding():
    small = _jpeg()
    bomb = _with_declared_size(small, 20000, 20000)[:631]
    with pytest.raises(ImageDecodeError) as err:
        compressed_to_rgb(bomb)
    assert err.value.kind == 'image too large' and '20000x20000' in str(err.value)
    assert compressed_to_rgb(small, max_pixels=64 * 48).shape == (48, 64, 3)
    with pytest.raises(ImageDecodeError, match='exceeds max_image_pixels 3000'):
        compressed_to_rgb(small, max_pixels=3000)


def test_png_header_claiming_a_huge_image_is_refused():
    import cv2

    png = bytearray(cv2.imencode('.png', np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    png[16:24] = (30000).to_bytes(4, 'big') + (30000).to_bytes(4, 'big')
    with pytest.raises(ImageDecodeError) as err:
        compressed_to_rgb(bytes(png))
    assert err.value.kind == 'image too large'


def test_raw_image_larger_than_the_limit_is_refused():
    with pytest.raises(ImageDecodeError) as err:
        raw_image_to_array(100, 100, 'mono8', 100, False, bytes(10000), max_pixels=9999)
    assert err.value.kind == 'image too large'


def test_truncated_jpeg_is_refused_not_filled_with_grey():
    jpeg = _jpeg(160, 120)
    assert compressed_to_rgb(jpeg).shape == (120, 160, 3)
    with pytest.raises(ImageDecodeError) as err:
        compressed_to_rgb(jpeg[: len(jpeg) * 2 // 3])
    assert err.value.kind == 'truncated compressed image'
    assert compressed_to_rgb(jpeg + bytes(100)).shape == (120, 160, 3)  # padding after EOI is fine


def test_truncated_and_oversized_image_files(tmp_path):
    from vpr_ros.frames import read_image_file

    jpeg = _jpeg(160, 120)
    (tmp_path / 'cut.jpg').write_bytes(jpeg[:len(jpeg) // 2])
    (tmp_path / 'bomb.jpg').write_bytes(_with_declared_size(jpeg, 20000, 20000))
    with pytest.raises(ImageDecodeError, match='end-of-image'):
        read_image_file(str(tmp_path / 'cut.jpg'))
    with pytest.raises(ImageDecodeError, match='max_image_pixels'):
        read_image_file(str(tmp_path / 'bomb.jpg'))


@pytest.mark.parametrize('encoding', ['yuv422', 'uyvy', 'yuv422_yuy2'])
def test_odd_width_yuv422_is_a_bad_frame_of_its_own_kind(encoding):
    with pytest.raises(ImageDecodeError) as err:
        image_msg_to_rgb(Msg(height=8, width=9, encoding=encoding, step=18, is_bigendian=0, data=bytes(144)))
    assert err.value.kind == 'odd width yuv422'
    ok = image_msg_to_rgb(Msg(height=8, width=8, encoding=encoding, step=16, is_bigendian=0, data=bytes(128)))
    assert ok.shape == (8, 8, 3)


def test_float_image_near_the_float32_range_scales_without_overflow():
    values = np.array([[-3e38, 0.0, 3e38, np.nan, np.inf]], '<f4')
    msg = Msg(height=1, width=5, encoding='32FC1', step=20, is_bigendian=0, data=values.tobytes())
    with np.errstate(all='raise'):
        rgb = image_msg_to_rgb(msg)
    assert rgb[0, :, 0].tolist() == [0, 127, 255, 127, 127]


def test_float_image_with_signalling_nan_scales_without_a_warning():
    # a garbage 32FC1 frame holds signalling NaNs (exponent all ones, quiet bit clear): widening them
    # to float64 raises the FP "invalid" flag, which numpy printed as a RuntimeWarning per frame
    bits = np.array([[0x7F800001, 0xFFA00000, 0x3F800000, 0x40000000]], '<u4')
    msg = Msg(height=1, width=4, encoding='32FC1', step=16, is_bigendian=0, data=bits.tobytes())
    with np.errstate(all='raise'):
        rgb = image_msg_to_rgb(msg)
    assert rgb[0, :, 0].tolist() == [0, 0, 127, 255]
