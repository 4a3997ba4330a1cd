"""launch/localize.launch.py and config/localize.yaml: consistent with setup.py and the node.

`launch`/`launch_ros` cannot be installed from PyPI, so most checks read the files (py_compile,
ast, yaml); the last test runs the launch file for real where launch_ros exists.
"""
from __future__ import annotations

import ast
import asyncio
import os
import py_compile
import time

import pytest
import yaml

from vpr_ros.ros.parameters import PARAMETER_NAMES, PARAMETERS, flatten_yaml_parameters

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCH_FILE = os.path.join(ROOT, 'launch', 'localize.launch.py')
CONFIG_FILE = os.path.join(ROOT, 'config', 'localize.yaml')


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, 'id', getattr(n.func, 'attr', None)) == name]


def _keywords(call: ast.Call) -> dict[str, ast.AST]:
    return {k.arg: k.value for k in call.keywords}


def _console_scripts() -> dict[str, str]:
    with open(os.path.join(ROOT, 'setup.py'), encoding='utf-8') as fh:
        tree = ast.parse(fh.read())
    setup = _calls(tree, 'setup')[0]
    entry_points = ast.literal_eval(_keywords(setup)['entry_points'])
    return dict(item.replace(' ', '').split('=', 1) for item in entry_points['console_scripts'])


def test_launch_file_compiles() -> None:
    py_compile.compile(LAUNCH_FILE, doraise=True)


def test_launch_file_runs_an_installed_executable_with_the_shipped_params() -> None:
    with open(LAUNCH_FILE, encoding='utf-8') as fh:
        tree = ast.parse(fh.read())
    nodes = _calls(tree, 'Node')
    assert len(nodes) == 1
    kw = _keywords(nodes[0])
    assert ast.literal_eval(kw['package']) == 'vpr_ros'
    executable = ast.literal_eval(kw['executable'])
    scripts = _console_scripts()
    assert scripts[executable] == 'vpr_ros.localizer:main'
    # the default params file: <share>/config/localize.yaml, installed by setup.py's config/*.yaml glob
    joins = [c for c in _calls(tree, 'join') if any(isinstance(a, ast.Constant) and a.value == 'localize.yaml'
                                                     for a in c.args)]
    assert [a.value for a in joins[0].args if isinstance(a, ast.Constant)] == ['config', 'localize.yaml']
    assert os.path.isfile(CONFIG_FILE)
    declared = {ast.literal_eval(c.args[0]) for c in _calls(tree, 'DeclareLaunchArgument')}
    assert {'map_path', 'image_topic', 'params_file', 'use_sim_time', 'namespace', 'log_level'} <= declared
    remaps = ast.unparse(kw['remappings'])
    assert "('~/loop_closure', loop_closure_topic)" in remaps
    # the inputs are relative names remapped by the launch arguments, never absolute parameters
    assert "('image', image_topic)" in remaps and "('odom', odom_topic)" in remaps
    assert 'image_topic' not in ast.unparse(kw['parameters'])
    image_arg = next(c for c in _calls(tree, 'DeclareLaunchArgument')
                     if ast.literal_eval(c.args[0]) == 'image_topic')
    assert ast.literal_eval(_keywords(image_arg)['default_value']) == 'image'
    loop_arg = next(c for c in _calls(tree, 'DeclareLaunchArgument')
                    if ast.literal_eval(c.args[0]) == 'loop_closure_topic')
    assert ast.literal_eval(_keywords(loop_arg)['default_value']) == 'lio_loop/loop_closure_detection'


def test_every_key_of_the_params_file_is_a_node_parameter() -> None:
    with open(CONFIG_FILE, encoding='utf-8') as fh:
        config = yaml.safe_load(fh)
    assert list(config) == ['/**']
    values = flatten_yaml_parameters(config['/**']['ros__parameters'])
    assert set(values) <= PARAMETER_NAMES, set(values) - PARAMETER_NAMES
    assert set(values) == PARAMETER_NAMES  # every parameter is documented in the shipped file
    for spec in PARAMETERS:  # rcl types are strict: 30 is not a double
        assert type(values[spec.name]) is type(spec.default), spec.name
        if spec.low is not None and not isinstance(spec.default, bool):
            assert spec.low <= values[spec.name] <= spec.high, spec.name


def test_the_params_file_comments_every_parameter() -> None:
    with open(CONFIG_FILE, encoding='utf-8') as fh:
        lines = [line for line in fh if ':' in line and not line.lstrip().startswith('#')]
    leaves = [line for line in lines if line.split(':', 1)[1].strip() and 'ros__parameters' not in line]
    assert leaves and all('#' in line.split(':', 1)[1] for line in leaves)


LAUNCH_TIMEOUT_S = 60.0


def stop_launch_service(service, loop: asyncio.AbstractEventLoop, task: asyncio.Task,
                        timeout: float = LAUNCH_TIMEOUT_S) -> int:
    """Shut down a LaunchService whose ``run_async()`` task this thread drives on ``loop``; its return code.

    ``shutdown()`` from this thread while ``loop`` is not running would hang for ever: launch's
    thread-safe ``emit_event`` blocks on a future only the (stopped) loop can complete.
    ``force_sync=True`` queues the Shutdown event without the loop; the loop then runs until the task
    ends, at most ``timeout`` seconds, after which the task is cancelled and TimeoutError raised.
    """
    if not task.done():
        pending = service.shutdown(force_sync=True)
        assert pending is None, pending  # force_sync never hands back a coroutine to await
        done, _ = loop.run_until_complete(asyncio.wait({task}, timeout=timeout))
        if not done:
            task.cancel()
            loop.run_until_complete(asyncio.wait({task}, timeout=5.0))
            raise TimeoutError(f'LaunchService did not shut down within {timeout:.0f} s')
    return task.result()


class _FakeLaunchService:
    """launch.LaunchService's shutdown contract: force_sync queues the event without the loop."""

    def __init__(self, obey: bool = True) -> None:
        self.obey = obey
        self._events: list[str] = []

    async def run_async(self) -> int:
        while 'shutdown' not in self._events:
            await asyncio.sleep(0.01)
        return 0

    def shutdown(self, force_sync: bool = False):
        assert force_sync, 'from the loop thread with the loop stopped this would block for ever'
        if self.obey:
            self._events.append('shutdown')
        return None


@pytest.mark.parametrize('obey', [True, False])
def test_stop_launch_service_ends_or_times_out(obey: bool) -> None:
    loop = asyncio.new_event_loop()
    try:
        service = _FakeLaunchService(obey)
        task = loop.create_task(service.run_async())
        loop.run_until_complete(asyncio.sleep(0.05))  # started, then the loop stops as in the test
        t0 = time.monotonic()
        if obey:
            assert stop_launch_service(service, loop, task, timeout=30.0) == 0
        else:
            with pytest.raises(TimeoutError, match='did not shut down within 1 s'):
                stop_launch_service(service, loop, task, timeout=1.0)
            assert task.cancelled()
        assert time.monotonic() - t0 < 20.0
    finally:
        loop.close()


def test_ros2_launch_starts_the_node(request: pytest.FixtureRequest) -> None:
    """The real launch path (launch + launch_ros); skipped where they are not installed."""
    pytest.importorskip('launch_ros')
    launch = pytest.importorskip('launch')
    world = request.getfixturevalue('world')
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    from test.ros.conftest import Driver

    description = launch.LaunchDescription([IncludeLaunchDescription(
        PythonLaunchDescriptionSource(LAUNCH_FILE),
        launch_arguments={'map_path': world.map_path, 'params_file': CONFIG_FILE,
                          'loop_closure_topic': '/lio_loop/loop_closure_detection'}.items())])
    service = launch.LaunchService()
    service.include_launch_description(description)
    loop = asyncio.new_event_loop()
    task = loop.create_task(service.run_async())
    driver = Driver(loop_topic='/lio_loop/loop_closure_detection')
    try:
        deadline = time.monotonic() + 90
        while not (driver.subs[0].get_publisher_count() and driver.subs[-1].get_publisher_count()):
            assert time.monotonic() < deadline and not task.done(), 'the launched node did not come up'
            loop.run_until_complete(asyncio.sleep(0.1))
    finally:
        driver.close()
        try:
            assert stop_launch_service(service, loop, task) == 0
        finally:
            loop.close()
