"""The node's entry point (console script ``localizer``, ``python -m vpr_ros.localizer --ros-args ...``).

It checks the dependencies before importing :mod:`vpr_ros.ros.localizer` (which imports rclpy,
torch and faiss at module level), so a missing package is one line and exit code 2.
"""
from __future__ import annotations

import sys


def main(args: list[str] | None = None) -> int:
    from vpr_ros import deps

    if deps.require('vpr_ros localizer', ros=True):
        return deps.EXIT_MISSING
    from vpr_ros.ros.localizer import main as node_main

    return node_main(args)


if __name__ == '__main__':
    sys.exit(main())
