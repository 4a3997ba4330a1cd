"""Start-up dependency check of the entry points: one line naming what is missing and how to install it.

Under colcon the node often starts in a Python that has ROS but not the pip stack (torch, faiss, ...);
without this check the user gets a raw ``ModuleNotFoundError`` traceback from deep inside an import.
The check only looks modules up (``importlib.util.find_spec``), it imports nothing, so it costs
milliseconds. Stdlib only: it must work when everything else is missing.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# import name -> PyPI distribution. The pinned versions live in requirements.txt (installed to
# share/vpr_ros/); setup.py install_requires gives the ranges.
CORE: dict[str, str] = {
    'numpy': 'numpy',
    'scipy': 'scipy',
    'cv2': 'opencv-contrib-python-headless',
    'yaml': 'pyyaml',
    'tqdm': 'tqdm',
    'threadpoolctl': 'threadpoolctl',
    'matplotlib': 'matplotlib',
    'torch': 'torch',
    'faiss': 'faiss-cpu',
    'rosbags': 'rosbags',
    'safetensors': 'safetensors',
}
# ROS 2 Python packages of the node and `vpr-ros replay`: from a sourced ROS 2 installation, or the
# PyPI wheels of setup.py's [ros] extra.
ROS: dict[str, str] = {
    'rclpy': 'ros-rclpy[fastrtps]',
    'rcl_interfaces': 'ros-rcl-interfaces',
    'sensor_msgs': 'ros-sensor-msgs',
    'std_msgs': 'ros-std-msgs',
    'std_srvs': 'ros-std-srvs',
    'geometry_msgs': 'ros-geometry-msgs',
    'nav_msgs': 'ros-nav-msgs',
    'visualization_msgs': 'ros-visualization-msgs',
    'diagnostic_msgs': 'ros-diagnostic-msgs',
    'rosgraph_msgs': 'ros-rosgraph-msgs',
    'lifecycle_msgs': 'ros-lifecycle-msgs',
}
# The pose-graph experiment (`evaluate --loops --pose-graph`, vpr_ros.slam): setup.py's [slam] extra.
SLAM: dict[str, str] = {'gtsam': 'gtsam', 'evo': 'evo'}
EXIT_MISSING = 2


def missing(modules: dict[str, str]) -> list[str]:
    """The import names in ``modules`` that cannot be found."""
    absent = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            absent.append(name)
    return absent


def requirements_file() -> Path | None:
    """requirements.txt of this installation: the source tree, a colcon/ament share dir or sys.prefix."""
    here = Path(__file__).resolve().parent.parent  # the source tree, or site-packages
    prefixes = [Path(p) for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    prefixes.append(Path(sys.prefix))
    if len(here.parents) > 2:  # colcon: <prefix>/lib/pythonX.Y/site-packages/vpr_ros
        prefixes.append(here.parents[2])
    candidates = [here, *(p / 'share' / 'vpr_ros' for p in prefixes)]
    return next((c / 'requirements.txt' for c in candidates if (c / 'requirements.txt').is_file()), None)


def problem(ros: bool = False) -> str | None:
    """One line saying what is missing and the command that installs it, or None."""
    core = missing(CORE)
    ros_absent = missing(ROS) if ros else []
    if not core and not ros_absent:
        return None
    parts = []
    python = sys.executable or 'python3'
    if core:
        req = requirements_file()
        how = (f'{python} -m pip install -r {req}' if req
               else f'{python} -m pip install ' + ' '.join(f"'{CORE[m]}'" for m in core))
        parts.append(f"missing Python package{'s' if len(core) > 1 else ''} "
                     + ', '.join(f'{CORE[m]} (import {m})' for m in core) + f'; install: {how}')
    if ros_absent:
        parts.append('missing ROS 2 Python package' + ('s ' if len(ros_absent) > 1 else ' ')
                     + ', '.join(ros_absent) + '; source your ROS 2 setup.bash, or install the wheels: '
                     + f'{python} -m pip install ' + ' '.join(f"'{ROS[m]}'" for m in ros_absent))
    return '; '.join(parts)


def require(prog: str, ros: bool = False) -> int:
    """0 when everything is importable, else print the one-line problem to stderr and return 2."""
    text = problem(ros)
    if text is None:
        return 0
    print(f'{prog}: {text}', file=sys.stderr)
    return EXIT_MISSING
