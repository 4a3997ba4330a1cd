"""vpr_ros: visual place recognition for ROS 2.

The core (encoders, map database, matching, evaluation, data sources) never imports rclpy;
only ``vpr_ros.ros`` does.
"""
import logging

from vpr_ros.threadpools import prefer_passive_openmp

prefer_passive_openmp()  # before torch or faiss loads an OpenMP runtime (see threadpools.py)

__version__ = '0.1.0'
# The encoder build-map, the demo and an empty incremental node map use unless told otherwise: the
# training-free encoder with the best Recall@1 on every sample-world traversal among those that stay
# real time with a large map on two cores (docs/encoders.md, "Choosing an encoder"). Kept here, import-light.
DEFAULT_ENCODER = 'anyloc_vlad'
logger = logging.getLogger('vpr_ros')
