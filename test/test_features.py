"""Local features and camera intrinsics: camera_info YAML, and one RootSIFT for verification and encoders."""
from __future__ import annotations

import numpy as np
import pytest

from test.helpers import blob_image
from vpr_ros.errors import ConfigError
from vpr_ros.features import LocalFeatureConfig, extract, load_camera_info_yaml, orb_bits, rootsift


def test_camera_info_yaml(tmp_path) -> None:
    path = tmp_path / 'cam.yaml'
    path.write_text('image_width: 640\nimage_height: 480\ncamera_name: cam\n'
                    'camera_matrix: {rows: 3, cols: 3, data: [500, 0, 320, 0, 505, 240, 0, 0, 1]}\n'
                    'distortion_model: plumb_bob\n'
                    'distortion_coefficients: {rows: 1, cols: 5, data: [0.1, -0.05, 0, 0, 0]}\n')
    cam = load_camera_info_yaml(str(path))
    assert cam.K[4] == 505 and cam.D[:2] == (0.1, -0.05) and (cam.width, cam.height) == (640, 480)
    path.write_text('camera_matrix: {data: [0, 0, 0, 0, 0, 0, 0, 0, 0]}\n')
    with pytest.raises(ConfigError, match='focal'):
        load_camera_info_yaml(str(path))
    path.write_text('just: text\n')
    with pytest.raises(ConfigError, match='camera_info'):
        load_camera_info_yaml(str(path))


def test_the_map_and_the_classical_encoders_describe_with_the_same_rootsift_and_orb() -> None:
    image = blob_image(0, (120, 160))  # smaller than max_side: neither path resizes
    stored = extract(image, LocalFeatureConfig('rootsift', 200))
    floats = rootsift(image, 200)
    assert len(stored) > 10 and stored.descriptors.shape == (len(floats), 128)
    quantised = np.clip(np.rint(floats * 512.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(stored.descriptors, quantised)
    np.testing.assert_allclose(np.sum(floats ** 2, axis=1), 1.0, atol=1e-5)  # sqrt of an L1-normalised vector
    orb = extract(image, LocalFeatureConfig('orb', 200))
    unpacked = np.unpackbits(orb.descriptors, axis=1).astype(np.float32)
    np.testing.assert_array_equal(unpacked, orb_bits(image, 200))
