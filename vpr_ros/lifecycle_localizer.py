"""Entry point of the managed (lifecycle) localizer (console script ``lifecycle_localizer``,
``python -m vpr_ros.lifecycle_localizer --ros-args ...``); dependencies are checked first, as for
:mod:`vpr_ros.localizer`."""
from __future__ import annotations

import sys


def main(args: list[str] | None = None) -> int:
    from vpr_ros import deps

    if deps.require('vpr_ros lifecycle_localizer', ros=True):
        return deps.EXIT_MISSING
    from vpr_ros.ros.lifecycle import main as node_main

    return node_main(args)


if __name__ == '__main__':
    sys.exit(main())
