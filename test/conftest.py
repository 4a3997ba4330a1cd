"""Test-wide setup: DDS isolation and field checking for any test that touches rclpy."""
import os

import vpr_ros  # noqa: F401  first: its OpenMP wait policy must be set before any test module loads torch

# A unique domain per test run; localhost-only discovery; message fields validated on assignment.
os.environ.setdefault('ROS_DOMAIN_ID', str(10 + os.getpid() % 200))
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ['ROS_PYTHON_CHECK_FIELDS'] = '1'
os.environ.setdefault('MPLBACKEND', 'Agg')
# Encoders whose config names no runtime run on torch, as before runtimes existed: the other tests
# stay fast and never fill the user's graph cache. test/encoders/runtime/ and the node's runtime
# test name their runtimes (and a temporary runtime_cache) explicitly.
os.environ['VPR_ROS_RUNTIME'] = 'torch'
