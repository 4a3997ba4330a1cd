"""The drift model: seeded, chained from the first pose, variance growing with the distance driven, planar."""
from __future__ import annotations

import math

import numpy as np
import pytest

from test.slam.synthetic import loop_drive
from vpr_ros.errors import ConfigError
from vpr_ros.slam.odometry import DriftModel, drift
from vpr_ros.slam.poses import relative, yaw_of


def test_the_same_seed_gives_the_same_odometry_and_another_seed_another() -> None:
    _, gt, _ = loop_drive(laps=0.5)
    a, b = drift(gt, DriftModel(seed=3)), drift(gt, DriftModel(seed=3))
    c = drift(gt, DriftModel(seed=4))
    assert np.array_equal(a[0], gt[0])
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.allclose(a[-1], c[-1])


def test_heading_error_variance_grows_with_distance_as_the_model_states() -> None:
    """End heading error over 200 seeds: its standard deviation is yaw_sigma * sqrt(distance)."""
    _, gt, _ = loop_drive(laps=0.5)
    distance = sum(np.linalg.norm(relative(a, b)[:2, 3]) for a, b in zip(gt[:-1], gt[1:]))
    model = DriftModel(translation_sigma=0.01, yaw_sigma_deg=0.3)
    errors = [yaw_of(relative(gt[-1], drift(gt, DriftModel(0.01, 0.3, seed))[-1])) for seed in range(200)]
    expected = math.radians(model.yaw_sigma_deg) * math.sqrt(distance)
    assert np.std(errors) == pytest.approx(expected, rel=0.15)


def test_height_roll_and_pitch_are_not_drifted() -> None:
    _, gt, _ = loop_drive(laps=0.5)
    for T, G in zip(drift(gt, DriftModel(seed=1)), gt):
        assert abs(T[2, 3] - G[2, 3]) < 1e-9 and abs(T[2, 2] - G[2, 2]) < 1e-9


def test_a_model_with_a_zero_sigma_is_refused() -> None:
    bad = (DriftModel(0.0, 0.2), DriftModel(0.05, 0.0), DriftModel(-0.1, 0.2), DriftModel(out_of_plane=0.0))
    for model in bad:
        with pytest.raises(ConfigError):
            model.validate()
