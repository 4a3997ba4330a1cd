"""Odometry for the pose graph: ground truth drifted by a stated, seeded noise model.

:class:`DriftModel` is planar wheel/visual odometry's error as a random walk: every step between two
consecutive nodes, of length d metres in the plane, gets independent zero-mean Gaussian errors in its
forward and lateral displacement (std ``translation_sigma * sqrt(d)``, in the step's own body frame)
and in its heading change (std ``yaw_sigma_deg * sqrt(d)``). Variances grow linearly with the
distance travelled, so the drift does not depend on how densely nodes are placed. Height, roll and
pitch keep their ground-truth increments (a ground robot whose IMU holds roll and pitch). The noisy
steps are chained from the first ground-truth pose, so the errors accumulate: heading errors bend
the rest of the trajectory. The same sigmas give the odometry factors' covariances in
:mod:`vpr_ros.slam.graph` (the back end knows its odometry's noise level, not its errors); there
z, roll and pitch get ``out_of_plane`` (a tenth) of the in-plane sigmas, room for the closures'
small roll and pitch errors rather than a claim that those axes are exact.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from vpr_ros.errors import ConfigError
from vpr_ros.slam.poses import make_pose, relative

MIN_STEP_M = 0.1  # steps shorter than this get the noise of this length (a standing robot still has noise)


@dataclass(frozen=True)
class DriftModel:
    translation_sigma: float = 0.05   # m / sqrt(m): after 100 m, 0.5 m (1 sigma) forward and lateral
    yaw_sigma_deg: float = 0.2        # deg / sqrt(m): after 100 m, 2 deg; after 1 km, 6.3 deg
    seed: int = 0
    out_of_plane: float = 0.1         # the graph's z, roll and pitch sigmas, a fraction of the in-plane ones

    def validate(self) -> None:
        if not (self.translation_sigma > 0 and self.yaw_sigma_deg > 0):
            raise ConfigError('drift model: translation and yaw sigmas must be > 0 (they are also the '
                              "odometry factors' noise, and a zero sigma would make those steps rigid)")
        if not 0 < self.out_of_plane <= 1:
            raise ConfigError('drift model: out_of_plane must be in (0, 1]')

    def step_sigmas(self, length_m: float) -> tuple[np.ndarray, np.ndarray]:
        """Standard deviations of one step of ``length_m`` as the odometry factors assume them: (x, y, z) [m]
        and (roll, pitch, yaw) [rad]; :func:`drift` draws x, y and yaw only."""
        root = math.sqrt(max(length_m, MIN_STEP_M))
        xy, yaw = self.translation_sigma * root, math.radians(self.yaw_sigma_deg) * root
        return (np.array([xy, xy, self.out_of_plane * xy]),
                np.array([self.out_of_plane * yaw, self.out_of_plane * yaw, yaw]))

    def describe(self) -> dict:
        return {**asdict(self), 'model': 'per-step forward, lateral and yaw errors, Gaussian, variance '
                'proportional to the step length (random walk), chained from the first ground-truth pose; '
                'z, roll, pitch not drifted (odometry factors: out_of_plane of the in-plane sigmas)'}


def step_length(step: np.ndarray) -> float:
    return float(np.linalg.norm(step[:2, 3]))


def drift(ground_truth: Sequence[np.ndarray], model: DriftModel) -> list[np.ndarray]:
    """Odometry poses: the ground-truth increments with the model's noise, chained (module docstring)."""
    from scipy.spatial.transform import Rotation

    model.validate()
    rng = np.random.default_rng(model.seed)
    if not len(ground_truth):
        return []
    out = [np.array(ground_truth[0], np.float64)]
    for a, b in zip(ground_truth[:-1], ground_truth[1:]):
        step = relative(a, b)
        sigma_t, sigma_r = model.step_sigmas(step_length(step))
        dx, dy = rng.normal(0.0, sigma_t[:2])
        rotation = Rotation.from_euler('z', rng.normal(0.0, sigma_r[2])).as_matrix()
        out.append(out[-1] @ step @ make_pose(rotation, [dx, dy, 0.0]))
    return out


__all__ = ['DriftModel', 'drift', 'step_length']
