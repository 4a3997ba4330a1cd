"""A pose-graph back end (GTSAM) and trajectory metrics (evo) that show what vpr_ros closures do for SLAM.

ROS-free. :mod:`~vpr_ros.slam.constraints` turns a published closure into the relative pose and 6x6
covariance a back end consumes, :mod:`~vpr_ros.slam.odometry` drifts ground truth into odometry,
:mod:`~vpr_ros.slam.graph` builds and optimises the graph, :mod:`~vpr_ros.slam.metrics` computes ATE/RPE
and :mod:`~vpr_ros.slam.evaluation` runs the before/after comparison of ``evaluate --loops --pose-graph``.
gtsam and evo come with the ``slam`` extra (``pip install vpr_ros[slam]``).
"""
