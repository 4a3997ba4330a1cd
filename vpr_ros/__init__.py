"""vpr_ros: visual place recognition for ROS 2.

The core (encoders, map database, matching, evaluation, data sources) never imports rclpy;
only ``vpr_ros.ros`` does.
"""
import logging

__version__ = '0.1.0'
logger = logging.getLogger('vpr_ros')
