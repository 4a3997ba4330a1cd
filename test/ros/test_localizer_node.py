"""The localizer node as a subprocess (params file, remapped loop-closure topic) over real DDS."""
from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator

import numpy as np
import pytest
import yaml

from test.helpers import assert_same_ranking
from test.ros.conftest import (
    ENCODER_CONFIG,
    QUERY_ORDER,
    RELIABLE_IMAGES,
    Driver,
    NodeProcess,
    World,
    image_msg,
)

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip('rclpy')

LIO_SAM_TOPIC = '/lio_loop/loop_closure_detection'


@pytest.fixture(scope='module')
def running(world: World,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, Driver, str]]:
    tmp = tmp_path_factory.mktemp('node')
    grown = str(tmp / 'grown_map')
    params = {'/**': {'ros__parameters': {
        'map_path': world.map_path, 'incremental': True, 'save_map_path': grown, 'threads': 1,
        'keyframe': {'min_interval': 0.0},
        'loop_closure': {'min_score': 0.85, 'consistency_frames': 2},
    }}}
    params_file = str(tmp / 'params.yaml')
    with open(params_file, 'w', encoding='utf-8') as fh:
        yaml.safe_dump(params, fh)
    node = NodeProcess(['--params-file', params_file, '-r', f'~/loop_closure:={LIO_SAM_TOPIC}',
                        '-p', f'{RELIABLE_IMAGES}:=reliable'],
                       str(tmp / 'node.log'))
    driver = Driver(loop_topic=LIO_SAM_TOPIC)
    try:
        driver.wait_ready(node.check_alive)
        yield node, driver, grown
    finally:
        driver.close()
        code = node.stop()
    assert code == 0, node.log()


@pytest.fixture(scope='module')
def offline(world: World):
    from vpr_ros.localization import Localizer

    return Localizer.from_map(world.map_path, {'threads': 1}, top_k=5)


def test_place_ids_equal_offline_localizer_and_ground_truth(running, world: World, offline) -> None:
    node, driver, _ = running
    for k, frame in enumerate(world.queries[:5]):
        rows = driver.localize(image_msg(frame.rgb, frame.stamp), frame.stamp)
        expected = offline.localize(frame.rgb, frame.stamp)
        # Another process: the same ranking up to near ties, scores to float32 rounding.
        assert_same_ranking([(int(r[0]), r[1]) for r in rows],
                            [(m.place_id, m.score) for m in expected.matches])
        assert [r[2] for r in rows] == [world.map_frames[int(r[0])].stamp for r in rows]
        assert rows[0][0] == QUERY_ORDER[k]
        with driver.out.lock:
            best = driver.out.best.get(frame.stamp)
        if best is None:  # the best match and pose follow the candidates in the same cycle
            driver.wait_for(lambda o: frame.stamp in o.best and frame.stamp in o.poses)
        with driver.out.lock:
            best, pose = driver.out.best[frame.stamp], driver.out.poses[frame.stamp]
        assert (best.vector.x, best.vector.z) == (rows[0][0], rows[0][2])
        assert pose.header.frame_id == 'map'
        assert pose.pose.pose.position.x == pytest.approx(world.map_frames[rows[0][0]].pose.position[0])
        cov = np.asarray(pose.pose.covariance).reshape(6, 6)
        assert cov[0, 0] > 0 and np.count_nonzero(cov - np.diag(np.diag(cov))) == 0
    node.check_alive()


def test_loop_closure_reaches_a_lio_sam_style_subscriber(running, world: World) -> None:
    """LIO-SAM layout: data=[t_query, t_match] in seconds on lio_loop/loop_closure_detection."""
    _, driver, _ = running
    if not driver.out.loops:  # normally already sent by the first test
        for frame in world.queries[:3]:  # they revisit places 2, 3, 4 in order
            driver.localize(image_msg(frame.rgb, frame.stamp), frame.stamp)
    driver.wait_for(lambda o: len(o.loops) >= 1)
    with driver.out.lock:
        msg = driver.out.loops[0]
    assert len(msg.data) == 2 and not msg.layout.dim
    t_query, t_match = msg.data
    k = [round(f.stamp, 6) for f in world.queries].index(round(t_query, 6))
    assert t_match == world.map_frames[QUERY_ORDER[k]].stamp
    assert t_query - t_match >= 30.0
    assert k >= 1  # consistency_frames: 2 -> never on the first frame


def test_any_encoding_and_row_padding_give_the_same_answer(running, world: World) -> None:
    _, driver, _ = running
    frame = world.queries[1]
    answers = []
    for i, (encoding, pad) in enumerate([('rgb8', 0), ('bgr8', 7), ('rgb8', 32)]):
        t = 210.0 + i
        answers.append(driver.localize(image_msg(frame.rgb, t, encoding, pad), t))
    assert answers[0][0][0] == QUERY_ORDER[1]
    for other in answers[1:]:
        assert_same_ranking([(int(r[0]), r[1]) for r in other], [(int(r[0]), r[1]) for r in answers[0]])


def test_garbage_images_are_skipped_and_counted(running, world: World) -> None:
    node, driver, _ = running
    good = world.queries[2]
    short = image_msg(good.rgb, 215.0)
    short.data = bytes(short.data)[:1000]                      # fewer bytes than height x step
    unknown = image_msg(good.rgb, 215.1)
    unknown.encoding = 'weird16'
    bad_step = image_msg(good.rgb, 215.2)
    bad_step.step = 5                                           # step < width x 3
    for msg in (short, unknown, bad_step):
        driver.image_pub.publish(msg)
        time.sleep(0.2)  # one at a time: the keep-latest slot would otherwise drop some
    rows = driver.localize(image_msg(good.rgb, 216.0), 216.0)
    assert rows[0][0] == QUERY_ORDER[2]
    driver.wait_for(lambda o: (s := driver.latest_status()) is not None
                    and int(s.get('skipped_bad_frames', 0)) >= 3, timeout=10)
    status = driver.latest_status()
    assert int(status['skipped.truncated image']) == 1
    assert int(status['skipped.unknown encoding']) == 1
    assert int(status['skipped.bad step']) == 1
    node.check_alive()
    assert node.log().count('skipping input (unknown encoding)') == 1  # logged once per kind


def test_diagnostics_report_rates_latency_and_counts(running, world: World) -> None:
    _, driver, _ = running
    frame = world.queries[4]
    driver.localize(image_msg(frame.rgb, 217.0), 217.0)
    driver.wait_for(lambda o: (s := driver.latest_status()) is not None and int(s['frames_processed']) > 0)
    status = driver.latest_status()
    for key in ('input_rate_hz', 'latency_p50_ms', 'latency_p95_ms', 'processing_p50_ms', 'frames_dropped',
                'frames_rate_limited', 'skipped_bad_frames', 'map_places', 'last_score', 'last_place_id',
                'loop_closures_published', 'last_loop_status'):
        assert key in status, key
    assert float(status['latency_p50_ms']) > 0
    assert int(status['map_places']) > 8  # incremental: keyframes were added


def test_runtime_parameters_are_validated(running, world: World) -> None:
    from rclpy.parameter import Parameter

    _, driver, _ = running
    set_params = driver.set_parameters

    bad = set_params(Parameter('covariance.score_low', value=0.99))  # above score_high (0.95)
    assert not bad[0].successful and 'score_low' in bad[0].reason
    assert not set_params(Parameter('top_k', value=500))[0].successful           # out of range
    for name, value in (('covariance.score_low', math.nan), ('pose.min_score', math.nan),
                        ('loop_closure.min_score', math.nan), ('covariance.score_high', math.inf)):
        result = set_params(Parameter(name, value=value))[0]
        assert not result.successful and 'finite' in result.reason, name
    assert not set_params(Parameter('map_path', value='/elsewhere'))[0].successful  # read-only
    assert set_params(Parameter('top_k', value=3))[0].successful
    frame = world.queries[3]
    assert len(driver.localize(image_msg(frame.rgb, 220.0), 220.0)) == 3


def test_save_map_writes_a_map_that_loads(running, world: World) -> None:
    from std_srvs.srv import Trigger

    from vpr_ros.localization import Localizer

    _, driver, grown = running
    client = driver.session.node.create_client(Trigger, '/vpr_localizer/save_map')
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(Trigger.Request())
    deadline = time.monotonic() + 20
    while not future.done():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert future.result().success, future.result().message
    assert os.path.isfile(os.path.join(grown, 'map.yaml'))
    loaded = Localizer.from_map(grown, {'threads': 1})
    assert len(loaded.map) > 8
    assert loaded.map.meta.encoder['config']['image_size'] == ENCODER_CONFIG['image_size']
    # the places added online are searchable: a query frame now finds its own keyframe first
    frame = world.queries[0]
    assert loaded.localize(frame.rgb, 0.0).matches[0].stamp == frame.stamp


def test_replay_connects_to_a_running_node(running, world: World, tmp_path) -> None:
    import json

    from vpr_ros.ros.replay import ReplayConfig, run

    assert run(ReplayConfig(world.bag_path, world.map_path, out=str(tmp_path), connect=True, rate=4.0,
                            dist=5.0, publish_topic='/image')) == 0
    with open(tmp_path / 'results.json', encoding='utf-8') as fh:
        results = json.load(fh)
    assert results['live']['frames_published'] == len(world.queries)
    assert results['retrieval']['recall']['R@1'] == 1.0
    assert not os.path.exists(tmp_path / 'node.log')  # nothing was started
    running[0].check_alive()
