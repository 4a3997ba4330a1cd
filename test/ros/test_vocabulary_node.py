"""The node from an EMPTY map with a vocabulary encoder (anyloc_vlad), over real DDS: it bootstraps the
vocabulary from the first keyframes, or takes it from vocabulary.path."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from test.ros.conftest import QUERY_ORDER, RELIABLE_IMAGES, World, image_msg

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip('rclpy')

from test.ros.test_node_inprocess import InProcess  # noqa: E402
from vpr_ros.errors import ConfigError  # noqa: E402

CONFIG = {'image_size': [96, 128], 'num_clusters': 8}


@pytest.fixture
def start() -> Iterator[Any]:
    made: list[InProcess] = []

    def make(**overrides: Any) -> InProcess:
        made.append(InProcess(map_path='', incremental=True, encoder='anyloc_vlad',
                              encoder_config=str(CONFIG), threads=1, diagnostics_period=0.2,
                              **{RELIABLE_IMAGES: 'reliable'}, **overrides))
        return made[-1]
    yield make
    for n in made:
        n.close()


def status_where(driver, condition) -> dict[str, str]:
    found: list[dict[str, str]] = []

    def check(_o: Any) -> bool:
        status = driver.latest_status()
        if status is not None and condition(status):
            found.append(status)
            return True
        return False
    driver.wait_for(check, timeout=60.0)
    return found[-1]


def save(driver) -> None:
    from std_srvs.srv import Trigger

    client = driver.session.node.create_client(Trigger, '/vpr_localizer/save_map')
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(Trigger.Request())
    driver.wait_for(lambda o: future.done())
    assert future.result().success, future.result().message


def test_bootstraps_the_vocabulary_then_answers(world: World, start, driver_factory, tmp_path) -> None:
    from vpr_ros.localization import Localizer

    saved = str(tmp_path / 'grown')
    node = start(**{'vocabulary.bootstrap_frames': 4, 'save_map_path': saved}).node
    driver = driver_factory()
    driver.wait_ready(lambda: None, node=node)
    status = status_where(driver, lambda s: s['frames_processed'] == '0')
    assert 'bootstrapping' in status['vocabulary'] and '0/4' in status['vocabulary']
    for i, frame in enumerate(world.map_frames[:3]):
        driver.image_pub.publish(image_msg(frame.rgb, 1000.0 + 2 * i))
        status = status_where(driver, lambda s, n=i + 1: s['bootstrap_keyframes'] == str(n))
    assert 'bootstrapping' in status['message'] and status['level'] == 1  # WARN: not answering yet
    assert not driver.out.candidates  # nothing is answered while the vocabulary is missing
    driver.image_pub.publish(image_msg(world.map_frames[3].rgb, 1006.0))
    status = status_where(driver, lambda s: s['map_places'] == '4')
    assert status['vocabulary'] == 'bootstrapped from the first 4 keyframes' and status['places_added'] == '4'
    assert status['frames_bootstrapping'] == '4' and not driver.out.candidates
    # the bootstrap keyframes got their loop decisions after the fit (all within 30 s: nothing older)
    status_where(driver, lambda s: s.get('loop_status.no_matches') == '4')
    for k in range(3):  # revisits of places 2, 3, 4 more than 30 s later
        t = 1050.0 + 2 * k
        rows = driver.localize(image_msg(world.queries[k].rgb, t), t)
        if QUERY_ORDER[k] < 4:
            assert rows[0][0] == QUERY_ORDER[k] and rows[0][2] == 1000.0 + 2 * QUERY_ORDER[k]
    save(driver)
    # the node answered as the offline Localizer does on the map it grew
    offline = Localizer.from_map(saved, top_k=5)
    assert len(offline.map) == 7 and 'centers' in offline.map.encoder_state
    expected = offline.localize(world.queries[0].rgb, 1050.0, exclude={4, 5, 6}).matches
    assert [int(r[0]) for r in driver.out.candidates[1050.0]] == [m.place_id for m in expected]


def test_vocabulary_path_answers_from_the_first_frame(world: World, start, driver_factory, tmp_path) -> None:
    from vpr_ros.encoders import create_encoder
    from vpr_ros.mapdb.store import VprMap
    from vpr_ros.vocabulary import export_vocabulary

    encoder = create_encoder('anyloc_vlad', CONFIG)
    encoder.fit([f.rgb for f in world.map_frames])
    vmap = VprMap.empty(encoder.identity(), encoder_state=encoder.get_state())
    vmap.add(0.0, None, encoder.encode([world.map_frames[0].rgb])[0])
    vmap.save(str(tmp_path / 'other_map'))
    export_vocabulary(str(tmp_path / 'other_map'), str(tmp_path / 'vocab.npz'))
    node = start(**{'vocabulary.path': str(tmp_path / 'vocab.npz')}).node
    driver = driver_factory()
    driver.wait_ready(lambda: None, node=node)
    assert driver.localize(image_msg(world.map_frames[0].rgb, 1000.0), 1000.0) == []  # answered: empty map
    assert driver.localize(image_msg(world.map_frames[1].rgb, 1040.0), 1040.0)[0][0] == 0
    status = status_where(driver, lambda s: s['frames_processed'] == '2')
    assert status['vocabulary'].startswith('file ') and status['frames_bootstrapping'] == '0'
    with pytest.raises(ConfigError, match='num_clusters: map 8 vs requested 4'):
        InProcess(map_path='', incremental=True, encoder='anyloc_vlad', threads=1,
                  encoder_config=str({**CONFIG, 'num_clusters': 4}),
                  **{'vocabulary.path': str(tmp_path / 'other_map')})
