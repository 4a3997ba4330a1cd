"""vpr_ros_interfaces over real DDS: ~/place_candidates and ~/place_match carry what ~/candidates and
~/best_match carry, with named fields. Needs the package built (`make interfaces`, part of `make test`)."""
from __future__ import annotations

import pytest

from test.ros.conftest import QUERY_ORDER, RELIABLE_IMAGES, World, image_msg

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip('rclpy')
interfaces = pytest.importorskip('vpr_ros_interfaces.msg', reason='not built (make interfaces)')

from test.ros.test_node_inprocess import InProcess  # noqa: E402


def test_readable_topics_match_the_compact_ones(world: World, driver_factory) -> None:
    from vpr_ros.ros.messages import to_sec

    node = InProcess(map_path=world.map_path, threads=1, **{RELIABLE_IMAGES: 'reliable'})
    try:
        driver = driver_factory()
        got: dict[str, list] = {'candidates': [], 'match': []}
        graph = driver.session.node
        subs = [graph.create_subscription(interfaces.PlaceCandidates, '/vpr_localizer/place_candidates',
                                          got['candidates'].append, 10),
                graph.create_subscription(interfaces.PlaceMatch, '/vpr_localizer/place_match',
                                          got['match'].append, 10)]
        driver.wait_ready(lambda: None, node=node.node)
        driver.wait_for(lambda o: all(s.get_publisher_count() for s in subs))
        frame = world.queries[0]
        # Resent until answered: a reader of an earlier test's stopped node can still count as matched
        # (its DDS lease has not expired), so the first frame may leave before this node's reader matches.
        rows = driver.localize(image_msg(frame.rgb, frame.stamp), frame.stamp, resend_every=5.0)
        driver.wait_for(lambda o: got['candidates'] and got['match'])
        cands, best = got['candidates'][-1], got['match'][-1]
        assert to_sec(cands.header.stamp) == pytest.approx(frame.stamp) and cands.header.frame_id == 'map'
        assert [c.place_id for c in cands.candidates] == [r[0] for r in rows]
        assert [c.score for c in cands.candidates] == pytest.approx([r[1] for r in rows])
        assert [to_sec(c.map_stamp) for c in cands.candidates] == pytest.approx([r[2] for r in rows])
        assert best.place_id == rows[0][0] == QUERY_ORDER[0] and best.has_pose
        assert best.pose.position.x == pytest.approx(world.map_frames[QUERY_ORDER[0]].pose.position[0])
    finally:
        node.close()
