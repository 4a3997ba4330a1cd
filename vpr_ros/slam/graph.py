"""The pose graph, built as a SLAM back end builds it, with GTSAM, and optimised by Levenberg-Marquardt.

* one ``Pose3`` node per trajectory node, initialised from the odometry;
* a prior fixing the first node at its odometry pose (the gauge);
* a ``BetweenFactorPose3`` per odometry step, the measured step and its covariance from the
  :class:`~vpr_ros.slam.odometry.DriftModel`;
* per loop closure (:class:`~vpr_ros.slam.constraints.LoopConstraint`), wrapped in a robust kernel
  (``noiseModel.Robust``) so that one false closure cannot drag the trajectory:

  - metric: one ``BetweenFactorPose3`` with the constraint's covariance;
  - direction-only (no scale): a ``BetweenFactorPose3`` that constrains the relative rotation only
    (its translation variance is the unknown-scale 10^6 m^2 on every axis), and a
    ``BearingRangeFactorPose3`` from the place to the query whose bearing is the measured direction
    (angular sigma from the constraint) and whose range is unconstrained (sigma 10^3 m). Nothing
    about the distance between the two frames enters the graph: the scale is the one quantity a
    monocular pair cannot give, and taking it from the odometry would take it from what drifts.

Kernels: DCS (dynamic covariance scaling, Agarwal et al. ICRA 2013, Phi = 1 as recommended there;
designed for false loop closures in pose graphs), Cauchy (c = 2.3849) and Huber (k = 1.345), both at
95 % efficiency on Gaussian data, or none.

Large initial errors of correct closures (the drift they are there to fix) would look like outliers
to a robust kernel. So the graph is solved in two stages, the common rotation-first initialisation
(Carlone et al., ICRA 2015): the rotation-only problem (odometry and closure rotations: a small,
well initialised problem) first; its solution is the initial guess of the full problem.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vpr_ros.errors import ConfigError
from vpr_ros.slam.constraints import UNKNOWN_SCALE_VARIANCE_M2, LoopConstraint
from vpr_ros.slam.odometry import DriftModel, step_length
from vpr_ros.slam.poses import make_pose, relative

KERNEL_PARAMETERS = {'dcs': 1.0, 'cauchy': 2.3849, 'huber': 1.345, 'none': None}
PRIOR_SIGMA = 1e-6
FREE_SIGMA_M = float(np.sqrt(UNKNOWN_SCALE_VARIANCE_M2))


@dataclass
class PoseGraphConfig:
    robust_kernel: str = 'cauchy'
    kernel_parameter: float | None = None   # None: KERNEL_PARAMETERS
    max_iterations: int = 100
    rotation_first: bool = True

    def validate(self) -> None:
        if self.robust_kernel not in KERNEL_PARAMETERS:
            raise ConfigError(f'pose graph: robust kernel {self.robust_kernel!r} unknown; '
                              f'one of {", ".join(KERNEL_PARAMETERS)}')
        if self.kernel_parameter is not None and not self.kernel_parameter > 0:
            raise ConfigError('pose graph: kernel_parameter must be > 0')
        if self.max_iterations < 1:
            raise ConfigError('pose graph: max_iterations must be >= 1')

    @property
    def parameter(self) -> float | None:
        if self.kernel_parameter is not None:
            return self.kernel_parameter
        return KERNEL_PARAMETERS[self.robust_kernel]


@dataclass
class GraphResult:
    poses: list[np.ndarray]
    iterations: int
    initial_error: float
    final_error: float
    closures: list[dict[str, Any]] = field(default_factory=list)  # per closure: chi2 and kernel weights

    def summary(self) -> dict[str, Any]:
        return {'iterations': self.iterations, 'initial_error': round(self.initial_error, 4),
                'final_error': round(self.final_error, 4), 'closures': self.closures}


def _key(i: int) -> int:
    import gtsam

    return gtsam.symbol('x', i)


def _pose3(T: np.ndarray):
    import gtsam

    return gtsam.Pose3(gtsam.Rot3(np.asarray(T[:3, :3], np.float64)), np.asarray(T[:3, 3], np.float64))


def _kernel(config: PoseGraphConfig):
    import gtsam

    est = gtsam.noiseModel.mEstimator
    make = {'dcs': est.DCS, 'cauchy': est.Cauchy, 'huber': est.Huber}.get(config.robust_kernel)
    return make.Create(config.parameter) if make is not None else None


def _gtsam_covariance(cov: np.ndarray) -> np.ndarray:
    """ROS order (translation, rotation) -> GTSAM's Pose3 tangent order (rotation, translation)."""
    order = [3, 4, 5, 0, 1, 2]
    return np.asarray(cov, np.float64)[np.ix_(order, order)]


def closure_factors(i: int, j: int, c: LoopConstraint, rotation_only: bool = False) -> list[tuple[str, Any]]:
    """(kind, Gaussian factor) pairs of one closure from node ``i`` (place) to ``j`` (query)."""
    import gtsam

    if c.direction_only or rotation_only:
        cov = np.zeros((6, 6))
        cov[:3, :3] = c.rotation_covariance
        cov[3:, 3:] = UNKNOWN_SCALE_VARIANCE_M2 * np.eye(3)
        rotation = _pose3(make_pose(c.rotation, np.zeros(3)))
        out = [('rotation', gtsam.BetweenFactorPose3(_key(i), _key(j), rotation,
                                                     gtsam.noiseModel.Gaussian.Covariance(cov)))]
        if not rotation_only:
            sigma = c.bearing_sigma_rad
            noise = gtsam.noiseModel.Diagonal.Sigmas(np.array([sigma, sigma, FREE_SIGMA_M]))
            out.append(('bearing', gtsam.BearingRangeFactorPose3(
                _key(i), _key(j), gtsam.Unit3(c.translation / np.linalg.norm(c.translation)), 1.0, noise)))
        return out
    return [('pose', gtsam.BetweenFactorPose3(_key(i), _key(j), _pose3(c.pose),
                                              gtsam.noiseModel.Gaussian.Covariance(_gtsam_covariance(c.covariance))))]


def _robust(factor: Any, kernel: Any) -> Any:
    """The same factor with its noise model wrapped in ``kernel``."""
    import gtsam

    if kernel is None:
        return factor
    noise = gtsam.noiseModel.Robust.Create(kernel, factor.noiseModel())
    if isinstance(factor, gtsam.BetweenFactorPose3):
        return gtsam.BetweenFactorPose3(factor.keys()[0], factor.keys()[1], factor.measured(), noise)
    return gtsam.BearingRangeFactorPose3(factor.keys()[0], factor.keys()[1], factor.measured().bearing(),
                                         factor.measured().range(), noise)


def _odometry_factor(i: int, a: np.ndarray, b: np.ndarray, model: DriftModel) -> Any:
    import gtsam

    step = relative(a, b)
    sigma_t, sigma_r = model.step_sigmas(step_length(step))
    noise = gtsam.noiseModel.Diagonal.Sigmas(np.concatenate([sigma_r, sigma_t]))  # GTSAM: rotation first
    return gtsam.BetweenFactorPose3(_key(i), _key(i + 1), _pose3(step), noise)


def _solve(graph: Any, initial: Any, config: PoseGraphConfig) -> tuple[Any, int]:
    import gtsam

    params = gtsam.LevenbergMarquardtParams()
    params.setMaxIterations(config.max_iterations)
    optimizer = gtsam.LevenbergMarquardtOptimizer(graph, initial, params)
    values = optimizer.optimize()
    return values, int(optimizer.iterations())


def optimise(odometry: Sequence[np.ndarray], closures: Sequence[tuple[int, int, LoopConstraint]],
             noise: DriftModel, config: PoseGraphConfig = PoseGraphConfig()) -> GraphResult:
    """Optimise the trajectory ``odometry`` (one 4x4 pose per node) with ``closures`` (place node, query node,
    constraint); see the module docstring."""
    import gtsam

    config.validate()
    n = len(odometry)
    if n < 2:
        raise ConfigError('pose graph: needs at least two nodes')
    for i, j, _ in closures:
        if not (0 <= i < n and 0 <= j < n) or i == j:
            raise ConfigError(f'pose graph: closure between nodes {i} and {j} of {n}')
    kernel = _kernel(config)
    odo = [_odometry_factor(i, odometry[i], odometry[i + 1], noise) for i in range(n - 1)]
    prior = gtsam.PriorFactorPose3(_key(0), _pose3(odometry[0]),
                                   gtsam.noiseModel.Isotropic.Sigma(6, PRIOR_SIGMA))
    initial = gtsam.Values()
    for k, T in enumerate(odometry):
        initial.insert(_key(k), _pose3(T))
    if config.rotation_first and closures:
        initial = _rotation_first(odometry, closures, odo, prior, kernel, config)
    graph = gtsam.NonlinearFactorGraph()
    graph.add(prior)
    for f in odo:
        graph.add(f)
    per_closure = []
    for i, j, c in closures:
        kinds = closure_factors(i, j, c)
        per_closure.append((i, j, c, kinds))
        for _, f in kinds:
            graph.add(_robust(f, kernel))
    initial_error = float(graph.error(initial))
    values, iterations = _solve(graph, initial, config)
    poses = [values.atPose3(_key(k)).matrix() for k in range(n)]
    report = []
    for i, j, c, kinds in per_closure:
        entry: dict[str, Any] = {'t_query': c.t_query, 't_match': c.t_match, 'place_node': i, 'query_node': j}
        for kind, f in kinds:
            chi2 = 2.0 * float(f.error(values))
            entry[f'{kind}_chi2'] = round(chi2, 4)
            weight = float(kernel.weight(np.sqrt(chi2))) if kernel is not None else 1.0
            entry[f'{kind}_weight'] = round(weight, 6)
        report.append(entry)
    return GraphResult(poses, iterations, initial_error, float(graph.error(values)), report)


def _rotation_first(odometry: Sequence[np.ndarray], closures: Sequence[tuple[int, int, LoopConstraint]],
                    odo: list[Any], prior: Any, kernel: Any, config: PoseGraphConfig) -> Any:
    """Initial values for the full problem: the odometry with the closures' rotations only."""
    import gtsam

    graph = gtsam.NonlinearFactorGraph()
    graph.add(prior)
    for f in odo:
        graph.add(f)
    for i, j, c in closures:
        for _, f in closure_factors(i, j, c, rotation_only=True):
            graph.add(_robust(f, kernel))
    initial = gtsam.Values()
    for k, T in enumerate(odometry):
        initial.insert(_key(k), _pose3(T))
    return _solve(graph, initial, config)[0]


def describe(config: PoseGraphConfig) -> dict[str, Any]:
    return {**asdict(config), 'kernel_parameter': config.parameter}


__all__ = ['KERNEL_PARAMETERS', 'GraphResult', 'PoseGraphConfig', 'closure_factors', 'describe', 'optimise']
