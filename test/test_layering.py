"""The package's floors: a module imports only its own floor and the ones below, and only vpr_ros/ros
imports rclpy (the core runs and is tested without DDS)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / 'vpr_ros'

# Lowest first. The core (floors 0-3) never imports the entry points (floor 4).
FLOORS: tuple[frozenset[str], ...] = (
    frozenset({'__init__', 'deps', 'errors', 'frames', 'settings', 'skips', 'textio', 'threadpools'}),
    frozenset({'sources', 'features', 'encoders', 'mapdb', 'sample'}),
    frozenset({'matching', 'geometry', 'evaluation'}),
    frozenset({'localization', 'vocabulary', 'session', 'pipeline', 'slam', 'relocalization', 'training',
               'distributed', 'export', 'explain'}),
    frozenset({'ros', 'cli', 'demo', 'localizer', 'lifecycle_localizer'}),
)


def _room(path: Path) -> str:
    """The top-level module or subpackage a file of vpr_ros belongs to."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _floor(room: str) -> int:
    found = [i for i, rooms in enumerate(FLOORS) if room in rooms]
    assert found, f'vpr_ros/{room} is on no floor: add it to FLOORS in test/test_layering.py'
    return found[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import in the file, lazy ones inside functions included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append((node.lineno, node.module))
    return out


def _files() -> list[Path]:
    return sorted(PACKAGE.rglob('*.py'))


def test_no_module_imports_a_floor_above_its_own() -> None:
    upward = []
    for path in _files():
        room = _room(path)
        for line, module in _imports(path):
            parts = module.split('.')
            if parts[0] != 'vpr_ros' or len(parts) < 2:
                continue
            if _floor(parts[1]) > _floor(room):
                upward.append(f'{path.relative_to(PACKAGE.parent)}:{line} imports {module}')
    assert not upward, 'imports from a higher floor:\n' + '\n'.join(upward)


def test_only_the_ros_layer_imports_rclpy() -> None:
    ros_only = ('rclpy', 'rcl_interfaces', 'sensor_msgs', 'std_msgs', 'geometry_msgs', 'nav_msgs',
                'diagnostic_msgs', 'visualization_msgs', 'std_srvs', 'lifecycle_msgs', 'tf2_msgs',
                'vpr_ros_interfaces', 'builtin_interfaces', 'rosgraph_msgs')
    found = [f'{path.relative_to(PACKAGE.parent)}:{line} imports {module}'
             for path in _files() if _room(path) != 'ros'
             for line, module in _imports(path) if module.split('.')[0] in ros_only]
    assert not found, 'ROS imports outside vpr_ros/ros:\n' + '\n'.join(found)


def test_the_floors_name_every_room_of_the_package() -> None:
    rooms = {_room(p) for p in _files()}
    assert rooms == set().union(*FLOORS)
