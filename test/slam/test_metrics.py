"""ATE/RPE through evo on trajectories whose errors are known in closed form."""
from __future__ import annotations

import numpy as np
import pytest

from test.slam.synthetic import loop_drive, rot_z
from vpr_ros.slam import metrics
from vpr_ros.slam.poses import make_pose


def test_a_rigidly_moved_copy_has_zero_aligned_ate_and_its_offset_unaligned() -> None:
    stamps, gt, _ = loop_drive(laps=1.0)
    moved = [make_pose(rot_z(0.0), [3.0, 4.0, 0.0]) @ T for T in gt]
    errors = metrics.trajectory_errors(metrics.trajectory(stamps, gt), metrics.trajectory(stamps, moved))
    assert errors['ate_m']['rmse'] == pytest.approx(0.0, abs=1e-3)
    assert errors['ate_anchored_m']['rmse'] == pytest.approx(5.0, abs=1e-3)
    for rpe in errors['rpe']:
        assert rpe['translation_m']['max'] == pytest.approx(0.0, abs=1e-3)
        assert rpe['rotation_deg']['max'] == pytest.approx(0.0, abs=1e-3)
    assert [r['delta_m'] for r in errors['rpe']] == list(metrics.RPE_DELTAS_M)


def test_a_constant_heading_error_shows_in_rpe_rotation() -> None:
    """Every pose turned 2 deg about its own z: relative rotations are unchanged, so RPE rotation is 0;
    turning the second half only gives a 2 deg RPE on the pairs across the step."""
    stamps, gt, _ = loop_drive(laps=1.0)
    turn = make_pose(rot_z(np.radians(2.0)), np.zeros(3))
    half = len(gt) // 2
    stepped = gt[:half] + [T @ turn for T in gt[half:]]
    errors = metrics.trajectory_errors(metrics.trajectory(stamps, gt), metrics.trajectory(stamps, stepped))
    rot = errors['rpe'][0]['rotation_deg']
    assert rot['max'] == pytest.approx(2.0, abs=1e-3) and rot['median'] == pytest.approx(0.0, abs=1e-3)


def test_rpe_longer_than_the_trajectory_is_none() -> None:
    stamps, gt, _ = loop_drive(laps=0.05)
    out = metrics.rpe(metrics.trajectory(stamps, gt), metrics.trajectory(stamps, gt), 1000.0)
    assert out['translation_m'] is None and out['rotation_deg'] is None
