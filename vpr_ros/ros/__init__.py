"""The ROS 2 side: the localizer node and the live replay evaluation. The only code importing rclpy."""
