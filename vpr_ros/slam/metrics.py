"""ATE and RPE of an estimated trajectory against ground truth, computed with evo (Grupp 2017).

* ATE: evo's APE on the translation part after an SE(3) Umeyama alignment of the estimate to the
  ground truth (``evo_ape --align``, the TUM RGB-D benchmark's definition), and also without
  alignment (``anchored``: both start at the same pose, so this is the error a map would have);
* RPE: evo's RPE over all pose pairs ``delta`` metres apart along the ground-truth path (within
  ``RPE_DELTA_TOLERANCE``), translation [m] and rotation angle [deg], for each delta in ``RPE_DELTAS_M``.
  None when no pair is that far apart.

Statistics: rmse, mean, median, max (evo's names), rounded to the millimetre / millidegree.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

RPE_DELTAS_M = (20.0, 100.0)
RPE_DELTA_TOLERANCE = 0.25  # pairs whose path distance is within 25 % of delta (nodes are metres apart)
STATISTICS = ('rmse', 'mean', 'median', 'max')


def trajectory(stamps: Sequence[float], poses: Sequence[np.ndarray]) -> Any:
    from evo.core.trajectory import PoseTrajectory3D

    return PoseTrajectory3D(poses_se3=[np.asarray(T, np.float64) for T in poses],
                            timestamps=np.asarray(stamps, np.float64))


def _stats(metric: Any) -> dict[str, float]:
    from evo.core.metrics import StatisticsType

    return {name: round(float(metric.get_statistic(StatisticsType(name))), 3) for name in STATISTICS}


def ate(reference: Any, estimate: Any, align: bool = True) -> dict[str, float]:
    from evo.core import metrics, sync

    ref, est = sync.associate_trajectories(reference, estimate)
    if align:
        est = copy.deepcopy(est)
        est.align(ref, correct_scale=False)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    return _stats(ape)


def rpe(reference: Any, estimate: Any, delta_m: float) -> dict[str, Any]:
    from evo.core import filters, metrics, sync
    from evo.core.units import Unit

    ref, est = sync.associate_trajectories(reference, estimate)
    out: dict[str, Any] = {'delta_m': delta_m}
    for name, relation in (('translation_m', metrics.PoseRelation.translation_part),
                           ('rotation_deg', metrics.PoseRelation.rotation_angle_deg)):
        rel = metrics.RPE(relation, delta=delta_m, delta_unit=Unit.meters, rel_delta_tol=RPE_DELTA_TOLERANCE,
                          all_pairs=True, pairs_from_reference=True)
        try:
            rel.process_data((ref, est))
        except (metrics.MetricsException, filters.FilterException):  # no pose pair delta_m apart
            out[name] = None
            continue
        out[name] = _stats(rel)
    return out


def trajectory_errors(reference: Any, estimate: Any) -> dict[str, Any]:
    return {'ate_m': ate(reference, estimate), 'ate_anchored_m': ate(reference, estimate, align=False),
            'rpe': [rpe(reference, estimate, d) for d in RPE_DELTAS_M]}


__all__ = ['RPE_DELTAS_M', 'ate', 'rpe', 'trajectory', 'trajectory_errors']
