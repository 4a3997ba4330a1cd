"""``python -m vpr_ros.localizer --ros-args ...`` runs the localizer node (:mod:`vpr_ros.ros.localizer`)."""
import sys

if __name__ == '__main__':
    from vpr_ros.ros.localizer import main

    sys.exit(main())
