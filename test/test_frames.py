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
