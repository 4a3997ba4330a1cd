"""Data sources: rosbag2 bags, image folders with a CSV of poses, and the procedural sample world."""
