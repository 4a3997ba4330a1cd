"""vpr-ros replay: a bag played over DDS to a node subprocess, evaluated like `vpr-ros evaluate`."""
from __future__ import annotations

import json
import os

import pytest

from test.helpers import assert_same_ranking, type_mismatches
from test.ros.conftest import QUERY_ORDER, World

pytestmark = pytest.mark.ros
pytest.importorskip('rclpy')


def test_replay_answers_like_the_offline_localizer(world: World, tmp_path) -> None:
    from vpr_ros.cli import build_parser, replay_config
    from vpr_ros.evaluation.results import EvaluationResults
    from vpr_ros.localization import Localizer
    from vpr_ros.ros.replay import run

    params = tmp_path / 'params.yaml'
    params.write_text('/**:\n  ros__parameters:\n    threads: 1\n    loop_closure:\n'
                      '      consistency_frames: 2\n      min_score: 0.85\n')
    out = tmp_path / 'report'
    args = build_parser().parse_args(['replay', '--bag', world.bag_path, '--map', world.map_path,
                                      '--out', str(out), '--rate', '2.0', '--lockstep', '--params-file',
                                      str(params), '--dist', '5', '--sequence-spacing', 'frames'])
    assert run(replay_config(args)) == 0

    with open(out / 'results.json', encoding='utf-8') as fh:
        results = json.load(fh)
    for name in ('results.json', 'recall_at_n.png', 'trajectory.png', 'matches.png', 'node.log',
                 'loop_closures.png', 'latency.png'):
        assert os.path.isfile(out / name), name
    assert type_mismatches(results, EvaluationResults) == []
    per_query = results['retrieval']['per_query']
    replay = results['live']
    assert replay['frames_published'] == len(world.queries)
    assert replay['frames_with_output'] + replay['frames_without_output'] == len(world.queries)
    # lockstep: every frame answered however slow the machine (at 2x without it, a loaded CPU drops some)
    assert replay['frames_with_output'] == len(per_query) == len(world.queries)
    assert replay['lockstep'] and replay['node']['frames_dropped'] == 0  # numbers, not diagnostics strings

    offline = Localizer.from_map(world.map_path, {'threads': 1}, top_k=5)
    by_stamp = {round(f.stamp, 6): (k, f) for k, f in enumerate(world.queries)}
    for q in per_query:
        k, frame = by_stamp[round(q['stamp'], 6)]
        assert q['place_ids'][0] == QUERY_ORDER[k]  # ground truth
        assert q['correct_at_1']
        assert_same_ranking(list(zip(q['place_ids'], q['scores'])),  # the node's process vs this one
                            [(m.place_id, m.score) for m in offline.localize(frame.rgb, frame.stamp).matches])
        assert q['latency_ms'] > 0
    assert results['retrieval']['recall']['R@1'] == 1.0
    latency = results['retrieval']['timing_ms']['end_to_end_latency']
    assert latency['count'] == len(per_query) and 0 < latency['p50'] <= latency['p95']
    loops = results['loop_closure']
    assert loops['events'] >= 1 and loops['precision'] == 1.0
    assert 0 < loops['recall'] <= 1.0
    assert replay['node']['frames_received'] == len(world.queries)
    # every sequence setting reached the started node (spacing was one the replay used to leave out)
    from vpr_ros.matching.sequence import SequenceConfig
    from vpr_ros.settings import config_from_flat

    node_sequence = config_from_flat(SequenceConfig, results['sequence']['settings'], prefix='')
    assert node_sequence == SequenceConfig(spacing='frames')


def test_answers_naming_places_the_map_lacks_are_refused() -> None:
    from vpr_ros.errors import VprError
    from vpr_ros.evaluation.metrics import QueryRecord
    from vpr_ros.ros.replay import check_place_ids

    good = QueryRecord(1.0, None, [0, 2], [0.9, 0.8])
    check_place_ids([good], 3)
    with pytest.raises(VprError, match=r'place ids \[3\].*ROS_DOMAIN_ID'):
        check_place_ids([good, QueryRecord(2.0, None, [3, 1], [0.9, 0.8])], 3)
