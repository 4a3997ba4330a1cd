"""The ROS-free parameter helpers of the node."""
from __future__ import annotations

from vpr_ros.ros.parameters import image_subscription_topic, output_frame


def test_output_frame_defaults_to_the_maps_frame() -> None:
    assert output_frame('', 'odom') == ('odom', None)
    assert output_frame('', '') == ('map', None)  # maps written before frames were recorded
    assert output_frame('map', '') == ('map', None)
    assert output_frame('odom', 'odom') == ('odom', None)


def test_output_frame_that_disagrees_is_used_with_a_warning() -> None:
    frame, warning = output_frame('map', 'odom')
    assert frame == 'map' and "recorded in 'odom'" in warning and "map_frame 'map'" in warning


def test_compressed_subscription_appends_to_the_base() -> None:
    assert image_subscription_topic('/robot1/image', 'compressed') == '/robot1/image/compressed'
    assert image_subscription_topic('/cam/compressed', 'compressed') == '/cam/compressed'
    assert image_subscription_topic('/robot1/image', 'raw') == '/robot1/image'
