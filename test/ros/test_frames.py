"""Output frames over real DDS: a map built from a bag records its pose frame and the node stamps its
outputs with it; an explicit map_frame that disagrees wins (with a warning); an empty incremental map
takes the frame of its odometry."""
from __future__ import annotations

import pytest

from test.ros.conftest import ENCODER_CONFIG, QUERY_ORDER, RELIABLE_IMAGES, World, image_msg

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip('rclpy')

from test.ros.test_node_inprocess import InProcess  # noqa: E402


@pytest.fixture(scope='module')
def world_map(world: World, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The world's places, recorded in a bag whose odometry is in 'world' for body 'base_link'."""
    from vpr_ros.encoders import create_encoder
    from vpr_ros.pipeline import build_map
    from vpr_ros.sources.bag import BagSource, write_bag

    tmp = tmp_path_factory.mktemp('frames')
    write_bag(str(tmp / 'mapping'), world.map_frames, map_frame='world')
    out = str(tmp / 'map')
    vmap, _ = build_map(BagSource(str(tmp / 'mapping')), create_encoder('effnet_gem', ENCODER_CONFIG), out,
                        progress=False, local_features=None)
    assert (vmap.meta.frame_id, vmap.meta.child_frame_id) == ('world', 'base_link')
    return out


@pytest.mark.parametrize('map_frame, expected', [('', 'world'), ('map', 'map')])
def test_outputs_are_stamped_with_the_maps_frame(world: World, world_map: str, driver_factory,
                                                 map_frame: str, expected: str) -> None:
    node = InProcess(map_path=world_map, threads=1, map_frame=map_frame, **{RELIABLE_IMAGES: 'reliable'})
    try:
        assert node.node._frame == expected
        driver = driver_factory()
        driver.wait_ready(lambda: None, node=node.node)
        frame = world.queries[0]
        rows = driver.localize(image_msg(frame.rgb, frame.stamp), frame.stamp)
        assert rows[0][0] == QUERY_ORDER[0]
        driver.wait_for(lambda o: frame.stamp in o.best and frame.stamp in o.poses)
        with driver.out.lock:
            assert driver.out.poses[frame.stamp].header.frame_id == expected
            assert driver.out.best[frame.stamp].header.frame_id == expected
    finally:
        node.close()


def test_old_map_without_frame_uses_map(world: World) -> None:
    node = InProcess(map_path=world.map_path, threads=1)  # the world map records no frame
    try:
        assert node.node._localizer.map.meta.frame_id == '' and node.node._frame == 'map'
    finally:
        node.close()
