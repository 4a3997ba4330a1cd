"""Entry points with a dependency missing: one line naming it and the install command, exit code 2.

Each case runs the real entry function in a fresh interpreter whose import system refuses the named
top-level modules (a ``sys.meta_path`` blocker), as a Python without the pip stack would.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vpr_ros import deps

ROOT = Path(__file__).resolve().parents[1]

RUNNER = '''
import sys
BLOCKED = set(sys.argv[1].split(','))

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in BLOCKED:
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
        return None

sys.meta_path.insert(0, Blocker())
target = sys.argv[2]
sys.argv = [target] + sys.argv[3:]
if ':' in target:  # a console script: module:function
    module, func = target.split(':')
    sys.exit(getattr(__import__(module, fromlist=[func]), func)())
import runpy  # python -m module
runpy.run_module(target, run_name='__main__', alter_sys=True)
'''


def _run(blocked: str, entry: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', RUNNER, blocked, entry, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, 'PYTHONPATH': str(ROOT)})


def _console_scripts() -> dict[str, str]:
    tree = ast.parse((ROOT / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == 'console_scripts':
                    lines = ast.literal_eval(value)
                    return {k.strip(): v.strip() for k, _, v in (s.partition('=') for s in lines)}
    raise AssertionError('setup.py has no console_scripts')


SCRIPTS = _console_scripts()


def _one_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert 'Traceback' not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.mark.parametrize('script, args', [('vpr-ros', ['encoders']), ('localizer', ['--ros-args'])])
def test_missing_faiss_is_one_line_with_the_install_command(script: str, args: list[str]) -> None:
    line = _one_line(_run('faiss', SCRIPTS[script], *args))
    assert 'faiss-cpu (import faiss)' in line
    assert f'-m pip install -r {ROOT / "requirements.txt"}' in line


def test_several_missing_packages_are_named_together() -> None:
    line = _one_line(_run('faiss,torch,rosbags', SCRIPTS['vpr-ros'], 'encoders'))
    for dist in ('faiss-cpu', 'torch', 'rosbags'):
        assert dist in line


def test_node_without_rclpy_says_how_to_get_ros() -> None:
    line = _one_line(_run('rclpy,sensor_msgs', SCRIPTS['localizer']))
    assert 'rclpy, sensor_msgs' in line and 'setup.bash' in line
    assert "pip install 'ros-rclpy[fastrtps]' 'ros-sensor-msgs'" in line


@pytest.mark.parametrize('module', ['vpr_ros.localizer', 'vpr_ros.cli'])
def test_python_m_entries_check_too(module: str) -> None:
    assert 'faiss-cpu' in _one_line(_run('faiss', module, 'encoders'))


def test_replay_without_rclpy_is_one_line() -> None:
    line = _one_line(_run('rclpy', SCRIPTS['vpr-ros'], 'replay', '--map', 'm', '--bag', 'b'))
    assert line.startswith('vpr-ros replay: missing ROS 2 Python package rclpy')


def test_nothing_missing_here() -> None:
    assert deps.problem(ros=True) is None
    assert deps.requirements_file() == ROOT / 'requirements.txt'


def _names(specs: list[str]) -> set[str]:
    return {re.split(r'[<>=!~\[ ]', s.strip(), maxsplit=1)[0].lower() for s in specs}


def test_requirements_pin_every_install_requirement() -> None:
    lines = [ln.strip() for ln in (ROOT / 'requirements.txt').read_text().splitlines()]
    pinned = [ln for ln in lines if ln and not ln.startswith('#') and not ln.startswith('setuptools')]
    assert all('==' in ln for ln in pinned), pinned
    tree = ast.parse((ROOT / 'setup.py').read_text())
    install = next(ast.literal_eval(k.value) for k in ast.walk(tree)
                   if isinstance(k, ast.keyword) and k.arg == 'install_requires')
    extras = next(ast.literal_eval(k.value) for k in ast.walk(tree)
                  if isinstance(k, ast.keyword) and k.arg == 'extras_require')
    # the encoder runtimes (extra 'onnx', the default encoder path) and the [slam] feature are pinned too
    wanted = _names(install) | _names(extras['onnx']) | _names(extras['slam'])
    assert _names(pinned) == wanted - {'setuptools'}
    assert set(deps.SLAM.values()) == _names(extras['slam'])
    assert {d.lower() for d in deps.CORE.values()} <= _names(pinned)


def test_requirements_test_pins_the_test_onnx_and_ray_extras() -> None:
    """colcon test in a workspace installs requirements-test.txt: it must hold what `make test` gets
    from setup.py's extras beyond ROS (a missing hypothesis/onnxruntime broke collection there)."""
    lines = [ln.strip() for ln in (ROOT / 'requirements-test.txt').read_text().splitlines()]
    pinned = [ln for ln in lines if ln and not ln.startswith('#')]
    assert all('==' in ln for ln in pinned), pinned
    tree = ast.parse((ROOT / 'setup.py').read_text())
    extras = next(ast.literal_eval(k.value) for k in ast.walk(tree)
                  if isinstance(k, ast.keyword) and k.arg == 'extras_require')
    wanted = set().union(*(_names(v) for k, v in extras.items() if k not in ('ros', 'slam', 'onnx')))
    assert _names(pinned) == wanted  # [slam] and [onnx] are pinned in requirements.txt
