"""The node with its encoder on another runtime than the map was built with, over real DDS."""
from __future__ import annotations

import pytest

from test.ros.conftest import QUERY_ORDER, RELIABLE_IMAGES, World, image_msg

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip('rclpy')
pytest.importorskip('onnxruntime')
pytest.importorskip('openvino')


@pytest.mark.parametrize('runtime', ['onnxruntime', 'openvino'])
def test_node_answers_on_the_requested_runtime(runtime: str, world: World, driver_factory, tmp_path) -> None:
    from test.ros.test_node_inprocess import InProcess

    node = InProcess(map_path=world.map_path, threads=1, runtime=runtime, diagnostics_period=0.2,
                     encoder_config=f'{{runtime_cache: {tmp_path}}}', **{RELIABLE_IMAGES: 'reliable'})
    try:
        assert node.node._localizer.encoder.runtimes() == {'effnet_gem': runtime}  # chosen at start-up
        driver = driver_factory()
        driver.wait_ready(lambda: None, node=node.node)
        for k in range(2):
            t = 500.0 + k
            rows = driver.localize(image_msg(world.queries[k].rgb, t), t)
            assert rows[0][0] == QUERY_ORDER[k]
        driver.wait_for(lambda o: (s := driver.latest_status()) is not None
                        and s.get('runtime.effnet_gem') == runtime)
    finally:
        node.close()
