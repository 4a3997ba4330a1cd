"""The localizer as a managed (lifecycle) node: the same :class:`LocalizerNode`, its stages run from the
transitions of the ROS 2 lifecycle state machine (``ros2 lifecycle set /vpr_localizer configure``).

* ``configure``: parameters are read and checked, the map loads, the encoder warms up (a failure is
  logged in one line and the node stays unconfigured);
* ``activate``: publishers, services, the image/camera_info/odom subscriptions, the diagnostics timer
  and the worker threads start;
* ``deactivate``: subscriptions and the timer go first, the workers finish their frame, then the
  publishers and services go; the map stays loaded;
* ``cleanup``: the map, encoder and solvers are released; ``shutdown`` does whatever of the two is due.

Frames are processed on a worker thread (the plain node's ``main`` uses the main thread).
Run: ``ros2 run vpr_ros lifecycle_localizer --ros-args ...`` or ``python -m vpr_ros.lifecycle_localizer``.
"""
from __future__ import annotations

import sys
import threading
from typing import Any

from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn

from vpr_ros.ros.node import LocalizerNode, _startup_error, run


class LifecycleLocalizerNode(LifecycleNodeMixin, LocalizerNode):
    """Starts unconfigured, with its parameters declared and the lifecycle services offered."""

    def __init__(self, **kwargs: Any) -> None:
        LocalizerNode.__init__(self, frames_in_caller=False, managed=True, **kwargs)
        LifecycleNodeMixin.__init__(self)
        self._configured = self._active = False
        self._transition_lock = threading.Lock()

    def _transition(self, name: str, *steps: Any) -> TransitionCallbackReturn:
        try:
            with self._transition_lock:
                for step in steps:
                    step()
        except Exception as exc:  # a failed transition is a FAILURE reply, never a dead executor
            self.get_logger().error(f'{name} failed: {_startup_error(exc)}')
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f'{name}: done')
        return TransitionCallbackReturn.SUCCESS

    def _set(self, configured: bool | None = None, active: bool | None = None) -> Any:
        def step() -> None:
            if configured is not None:
                self._configured = configured
            if active is not None:
                self._active = active
        return step

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._transition('configure', self._configure, self._set(configured=True))
        if result is TransitionCallbackReturn.FAILURE:
            self._release()
        return result

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition('activate', self._activate, self._set(active=True))

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition('deactivate', self._deactivate, self._set(active=False))

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition('cleanup', self._release, self._set(configured=False))

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        steps = ([self._deactivate] if self._active else []) + ([self._release] if self._configured else [])
        return self._transition('shutdown', *steps, self._set(configured=False, active=False))

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self.on_shutdown(state)


def main(args: list[str] | None = None) -> int:
    return run(LifecycleLocalizerNode, args, frames_in_main_thread=False)


if __name__ == '__main__':
    sys.exit(main())
