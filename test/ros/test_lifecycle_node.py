"""The managed (lifecycle) localizer over real DDS, driven as `ros2 lifecycle set` does: through its
~/change_state and ~/get_state services (lifecycle_msgs)."""
from __future__ import annotations

import time
from typing import Any

import pytest

from test.ros.conftest import QUERY_ORDER, RELIABLE_IMAGES, NodeProcess, World, image_msg

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip('rclpy')
lifecycle_srv = pytest.importorskip('lifecycle_msgs.srv')

from lifecycle_msgs.msg import State, Transition  # noqa: E402

from test.ros.test_node_inprocess import InProcess  # noqa: E402
from test.ros.test_relocalization_node import call  # noqa: E402


def wait_for_lifecycle_services(client_node, clients: dict, timeout: float = 30.0) -> None:
    """Until ~/get_state answers. An earlier test's node of the same name can still be on the graph, so
    wait_for_service alone may return before this node's servers matched our client, and a request sent
    then is lost; GetState is safe to repeat."""
    deadline = time.monotonic() + timeout
    # the ChangeState client first: it matches the servers while GetState is probed
    clients['/vpr_localizer/change_state'] = client_node.create_client(lifecycle_srv.ChangeState,
                                                                       '/vpr_localizer/change_state')
    while True:
        try:
            call(client_node, lifecycle_srv.GetState, '/vpr_localizer/get_state',
                 lifecycle_srv.GetState.Request(), timeout=2.0, clients=clients)
            return
        except AssertionError:
            assert time.monotonic() < deadline, 'the lifecycle services never answered'


def managed_in_process(**overrides: Any) -> InProcess:
    from vpr_ros.ros.lifecycle import LifecycleLocalizerNode

    return InProcess(node_class=LifecycleLocalizerNode, **overrides)


def test_lifecycle_transitions_over_dds(world: World, driver_factory) -> None:
    managed = managed_in_process(map_path=world.map_path, threads=1, diagnostics_period=0.2,
                               **{RELIABLE_IMAGES: 'reliable'})
    try:
        driver = driver_factory()
        client_node = driver.session.node
        clients: dict = {}
        wait_for_lifecycle_services(client_node, clients)

        def state() -> tuple[int, str]:
            s = call(client_node, lifecycle_srv.GetState, '/vpr_localizer/get_state',
                     lifecycle_srv.GetState.Request(), clients=clients).current_state
            return s.id, s.label

        def change(transition: int) -> bool:
            return call(client_node, lifecycle_srv.ChangeState, '/vpr_localizer/change_state',
                        lifecycle_srv.ChangeState.Request(transition=Transition(id=transition)),
                        clients=clients).success

        assert state() == (State.PRIMARY_STATE_UNCONFIGURED, 'unconfigured')
        assert not hasattr(managed.node, '_localizer')  # the map loads in configure, not before
        assert change(Transition.TRANSITION_CONFIGURE)
        assert state()[1] == 'inactive' and len(managed.node._localizer.map) == 8
        assert not any(s.topic_name == '/image' for s in managed.node.subscriptions)  # inactive: no input
        assert change(Transition.TRANSITION_ACTIVATE) and state()[1] == 'active'
        driver.wait_ready(lambda: None, node=managed.node)
        frame = world.queries[0]
        rows = driver.localize(image_msg(frame.rgb, 500.0), 500.0)
        assert rows[0][0] == QUERY_ORDER[0]

        assert change(Transition.TRANSITION_DEACTIVATE) and state()[1] == 'inactive'
        assert not any(s.topic_name == '/image' for s in managed.node.subscriptions)
        deadline = time.monotonic() + 10
        while driver.image_pub.get_subscription_count() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert driver.image_pub.get_subscription_count() == 0
        driver.image_pub.publish(image_msg(frame.rgb, 501.0))
        time.sleep(2.0)
        with driver.out.lock:
            assert 501.0 not in driver.out.candidates  # an inactive node answers nothing
        assert managed.node._processed == 1

        assert change(Transition.TRANSITION_CLEANUP) and state()[1] == 'unconfigured'
        assert managed.node._localizer is None
        # and back: configure + activate again answers frames
        assert change(Transition.TRANSITION_CONFIGURE) and change(Transition.TRANSITION_ACTIVATE)
        driver.wait_ready(lambda: None, node=managed.node)
        assert driver.localize(image_msg(frame.rgb, 502.0), 502.0)[0][0] == QUERY_ORDER[0]
        assert change(Transition.TRANSITION_ACTIVE_SHUTDOWN) and state()[1] == 'finalized'
        assert managed.node._localizer is None and managed.node._worker is None
    finally:
        managed.close()


def test_configure_with_a_missing_map_fails_and_stays_unconfigured(tmp_path, driver_factory) -> None:
    managed = managed_in_process(map_path=str(tmp_path / 'nowhere'), threads=1)
    try:
        client_node = driver_factory().session.node
        clients: dict = {}
        wait_for_lifecycle_services(client_node, clients)
        reply = call(client_node, lifecycle_srv.ChangeState, '/vpr_localizer/change_state',
                     lifecycle_srv.ChangeState.Request(
                         transition=Transition(id=Transition.TRANSITION_CONFIGURE)), clients=clients)
        assert not reply.success
        got = call(client_node, lifecycle_srv.GetState, '/vpr_localizer/get_state',
                   lifecycle_srv.GetState.Request(), clients=clients)
        assert got.current_state.label == 'unconfigured'
    finally:
        managed.close()


def test_lifecycle_entry_point_starts_unconfigured_and_activates(world: World, driver_factory,
                                                                 tmp_path) -> None:
    """`python -m vpr_ros.lifecycle_localizer` as `ros2 run` starts it: unconfigured until told."""
    node = NodeProcess(['-p', f'map_path:={world.map_path}', '-p', 'threads:=1',
                        '-p', f'{RELIABLE_IMAGES}:=reliable'],
                       str(tmp_path / 'node.log'), module='vpr_ros.lifecycle_localizer')
    try:
        driver = driver_factory()
        client_node = driver.session.node
        clients: dict = {}
        wait_for_lifecycle_services(client_node, clients, timeout=90.0)
        for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            assert call(client_node, lifecycle_srv.ChangeState, '/vpr_localizer/change_state',
                        lifecycle_srv.ChangeState.Request(transition=Transition(id=transition)),
                        timeout=90.0, clients=clients).success, node.log()
        driver.wait_ready(node.check_alive)
        frame = world.queries[1]
        assert driver.localize(image_msg(frame.rgb, 700.0), 700.0)[0][0] == QUERY_ORDER[1]
    finally:
        code = node.stop()
    assert code == 0, node.log()
