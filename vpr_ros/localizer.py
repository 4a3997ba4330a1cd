"""The node's entry point (console script ``localizer``, ``python -m vpr_ros.localizer --ros-args ...``).

It checks the dependencies before importing :mod:`vpr_ros.ros.node` (which imports rclpy,
torch and faiss at module level), so a missing package is one line and exit code 2.
"""
from __future__ import annotations

import os
import sys

USAGE = """usage: python -m vpr_ros.localizer --ros-args [-p NAME:=VALUE ...] [--params-file FILE]
         [-r image:=TOPIC]  (or: localizer / ros2 run vpr_ros localizer, same arguments)

The vpr_ros localizer node: every camera frame on the relative input `image` is localised in the map
`map_path`; outputs are ~/candidates, ~/best_match, ~/pose, ~/loop_closure and /diagnostics.
  -p map_path:=MAP            the map directory written by `vpr-ros build-map` (required, unless
                              -p incremental:=true grows a map from empty)
  -r image:=/camera/image_raw remap the camera input
  --params-file FILE          a params file; `vpr-ros node-params > FILE` writes every parameter at its
                              default, config/localize.yaml in a source checkout is the commented one
Parameters, topics and message layouts: docs/ros_interface.md."""


def _argv_problem(argv: list[str]) -> str | None:
    """What rcl would reject in the arguments with a message that does not say why (None: fine)."""
    for i, arg in enumerate(argv):
        if arg == '--params-file' and i + 1 < len(argv):
            path = argv[i + 1]
            if not os.path.isfile(path):
                where = '' if os.path.isabs(path) else f' (relative to the current directory {os.getcwd()})'
                return (f'params file {path} not found{where}; give an absolute path, or write one with '
                        '`vpr-ros node-params > localize.yaml`')
    return None


def main(args: list[str] | None = None) -> int:
    from vpr_ros import deps

    argv = sys.argv[1:] if args is None else list(args)
    ros_start = argv.index('--ros-args') if '--ros-args' in argv else len(argv)
    if {'-h', '--help'} & set(argv[:ros_start]):
        print(USAGE)
        return 0
    problem = _argv_problem(argv[ros_start:])
    if problem:
        print(f'vpr_ros localizer: {problem}', file=sys.stderr)
        return 2
    if deps.require('vpr_ros localizer', ros=True):
        return deps.EXIT_MISSING
    from vpr_ros.ros.node import main as node_main

    return node_main(args)


if __name__ == '__main__':
    sys.exit(main())
