"""What a live replay is asked to do (:func:`vpr_ros.ros.replay.run`). ROS-free: the CLI builds it from its
options and the demo builds it directly, neither importing rclpy to do so."""
from __future__ import annotations

from dataclasses import dataclass, field

from vpr_ros.matching.sequence import SequenceConfig
from vpr_ros.ros.parameters import NODE_NAME, yaml_scalar
from vpr_ros.settings import settings_of

LOCKSTEP_TIMEOUT_S = 60.0  # lockstep: longest wait for the node's answer to the previous image


@dataclass(frozen=True)
class ReplayConfig:
    bag: str                            # query rosbag2 (images + ground-truth poses)
    map: str                            # map directory (the node loads it; the evaluation reads it)
    out: str = 'replay_out'             # report folder (results.json + PNGs + node.log)
    rate: float = 1.0                   # playback speed, 1.0 = real time
    lockstep: bool = False              # each image waits until the node answered the previous one
    params_file: str | None = None      # node parameters YAML for the started node
    connect: bool = False               # use an already running node instead of starting one
    node: str = '/' + NODE_NAME         # fully qualified name of the node
    image_topic: str | None = None      # image topic of the bag (None: the only one)
    pose_topic: str | None = None       # ground-truth pose topic of the bag (None: the only one)
    publish_topic: str | None = None    # topic the images are played on (None: the bag's)
    params: tuple[str, ...] = ()        # extra NAME:=VALUE parameters of the started node
    dist: float = 25.0                  # positive distance threshold [m]
    yaw: float | None = None            # optional heading threshold [deg]
    startup_timeout: float = 120.0      # seconds to wait for the node
    idle_timeout: float = 3.0           # after playback, stop once the node has been silent this long [s]
    sequence: SequenceConfig = field(default_factory=SequenceConfig)  # set on the started node

    def sequence_parameters(self) -> list[str]:
        """``name:=value`` items that give a started node this sequence matching (every sequence.* setting,
        typed as the node declares it)."""
        return [f'{s.name}:={yaml_scalar(type(s.default)(getattr(self.sequence, s.field)))}'
                for s in settings_of(SequenceConfig)]


__all__ = ['LOCKSTEP_TIMEOUT_S', 'ReplayConfig']
