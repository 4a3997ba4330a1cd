"""Launch the vpr_ros localizer node.

    ros2 launch vpr_ros localize.launch.py map_path:=/path/to/map image_topic:=/camera/image_raw
    ros2 launch vpr_ros localize.launch.py map_path:=... use_sim_time:=true namespace:=robot1

``image_topic`` / ``odom_topic`` remap the node's relative inputs ``image`` / ``odom`` (defaults: the
relative names themselves, so they follow ``namespace``).

Loop closures are remapped to LIO-SAM's ``lio_loop/loop_closure_detection`` (relative, so they
follow ``namespace``); ``pose_topic`` can point the matched pose at ``/initialpose``.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory('vpr_ros'), 'config', 'localize.yaml')
    map_path = LaunchConfiguration('map_path')
    image_topic = LaunchConfiguration('image_topic')
    odom_topic = LaunchConfiguration('odom_topic')
    params_file = LaunchConfiguration('params_file')
    use_sim_time = LaunchConfiguration('use_sim_time')
    namespace = LaunchConfiguration('namespace')
    log_level = LaunchConfiguration('log_level')
    loop_closure_topic = LaunchConfiguration('loop_closure_topic')
    pose_topic = LaunchConfiguration('pose_topic')

    return LaunchDescription([
        DeclareLaunchArgument('map_path', description='Map directory built with vpr-ros build-map'),
        DeclareLaunchArgument('image_topic', default_value='image',
                              description='Camera topic the input `image` is remapped to (sensor_msgs/Image, '
                                          'or the base topic of a stream with image_transport: compressed)'),
        DeclareLaunchArgument('odom_topic', default_value='odom',
                              description='Odometry topic the input `odom` is remapped to (used with '
                                          'use_odom: true)'),
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='Node parameters (YAML)'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Use /clock (bag replay, simulation)'),
        DeclareLaunchArgument('namespace', default_value='', description='Namespace of the node'),
        DeclareLaunchArgument('log_level', default_value='info', description='Logging level'),
        DeclareLaunchArgument('loop_closure_topic', default_value='lio_loop/loop_closure_detection',
                              description='Where loop closures [t_query, t_match] go (LIO-SAM default)'),
        DeclareLaunchArgument('pose_topic', default_value='~/pose',
                              description='Where the matched pose goes (e.g. /initialpose)'),
        Node(
            package='vpr_ros',
            executable='localizer',
            name='vpr_localizer',
            namespace=namespace,
            output='screen',
            emulate_tty=True,
            parameters=[params_file, {
                'map_path': map_path,
                'use_sim_time': ParameterValue(use_sim_time, value_type=bool),
            }],
            remappings=[('image', image_topic), ('odom', odom_topic),
                        ('~/loop_closure', loop_closure_topic), ('~/pose', pose_topic)],
            arguments=['--ros-args', '--log-level', log_level],
        ),
    ])
