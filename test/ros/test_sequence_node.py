"""The node with sequence matching over real DDS answers exactly as the offline Localizer."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from test.helpers import assert_same_ranking
from test.ros.conftest import RELIABLE_IMAGES, Driver, NodeProcess, image_msg

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip('rclpy')

LENGTH = 10
SEQUENCE = {'length': LENGTH, 'min_velocity': 0.8, 'max_velocity': 1.2}


@pytest.fixture(scope='module')
def sample_world(tmp_path_factory: pytest.TempPathFactory):
    from vpr_ros.encoders import create_encoder
    from vpr_ros.mapdb.store import VprMap
    from vpr_ros.sample import render_traversal

    tmp = tmp_path_factory.mktemp('seq_world')
    mapping, _ = render_traversal('mapping', seed=0, image_size=(48, 64), scale=0.15)
    query, _ = render_traversal('query', seed=0, image_size=(48, 64), scale=0.15)
    encoder = create_encoder('raw_pixels', {})
    vmap = VprMap.empty(encoder.identity())
    for frame, vectors in zip(mapping, encoder.describe([f.rgb for f in mapping])):
        vmap.add(frame.stamp, frame.pose, vectors)
    vmap.save(str(tmp / 'map'))
    return str(tmp / 'map'), query[:30], tmp


@pytest.fixture(scope='module')
def running(sample_world) -> Iterator[tuple[NodeProcess, Driver]]:
    map_path, _, tmp = sample_world
    params = {'/**': {'ros__parameters': {'map_path': map_path, 'top_k': 3, 'sequence': SEQUENCE}}}
    params_file = str(tmp / 'params.yaml')
    with open(params_file, 'w', encoding='utf-8') as fh:
        yaml.safe_dump(params, fh)
    node = NodeProcess(['--params-file', params_file, '-p', f'{RELIABLE_IMAGES}:=reliable'],
                       str(tmp / 'node.log'))
    driver = Driver()
    try:
        driver.wait_ready(node.check_alive)
        yield node, driver
    finally:
        driver.close()
        code = node.stop()
    assert code == 0, node.log()


def test_node_sequence_answers_equal_the_offline_localizer(running, sample_world) -> None:
    from vpr_ros.localization import Localizer, SequenceConfig
    from vpr_ros.ros.messages import to_sec, to_time

    node, driver = running
    map_path, query, _ = sample_world
    offline = Localizer.from_map(map_path, top_k=3, sequence=SequenceConfig(**SEQUENCE))
    # A first frame sent right after discovery may be lost, so warm up with resends at a later
    # stamp; the query stamps then go back in time, which restarts the node's sequence history.
    driver.localize(image_msg(query[0].rgb, 1.0e6), 1.0e6, timeout=60, resend_every=2.0)
    differs = 0
    for frame in query:
        t = to_sec(to_time(frame.stamp))  # the stamp as the message carries it (ns)
        rows = driver.localize(image_msg(frame.rgb, t), t)
        expected = offline.localize(frame.rgb, t)
        assert_same_ranking([(int(r[0]), r[1]) for r in rows],  # another process: rounding, near ties
                            [(m.place_id, m.score) for m in expected.matches], atol=1e-4)
        differs += (expected.sequence_used
                    and expected.matches[0].place_id != expected.single_frame[0].place_id)
    assert differs > 0  # the sequence changed some answers, so the comparison means something
    driver.wait_for(lambda o: (s := driver.latest_status()) is not None
                    and int(s['sequence.frames_matched']) == len(query) - LENGTH + 1, timeout=60)
    status = driver.latest_status()
    assert int(status['sequence.frames_single_frame_fallback']) >= LENGTH  # the warm-up frame(s) too
    assert int(status['sequence.length']) == LENGTH
    assert 'sequence matching active' in node.log()
    node.check_alive()


def test_sequence_parameters_are_validated_and_restart_the_history(running, sample_world) -> None:
    from rclpy.parameter import Parameter

    node, driver = running
    _, query, _ = sample_world
    set_params = driver.set_parameters

    bad = set_params(Parameter('sequence.min_velocity', value=2.0))  # above max_velocity (1.2)
    assert not bad[0].successful and 'min_velocity' in bad[0].reason
    assert not set_params(Parameter('sequence.length', value=-1))[0].successful        # out of range
    assert not set_params(Parameter('sequence.single_frame_weight', value=1.5))[0].successful
    assert set_params(Parameter('sequence.length', value=2))[0].successful
    before = driver.latest_status()
    fallback = int(before['sequence.frames_single_frame_fallback']) if before else 0
    for k, frame in enumerate(query[:3]):
        t = 500.0 + k
        driver.localize(image_msg(frame.rgb, t), t)
    driver.wait_for(lambda o: (s := driver.latest_status()) is not None
                    and int(s['sequence.length']) == 2
                    and int(s['sequence.frames_single_frame_fallback']) == fallback + 1, timeout=60)
    assert 'sequence history restarted' in node.log()
    node.check_alive()
