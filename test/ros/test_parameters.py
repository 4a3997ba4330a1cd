"""The parameter table's cross-checks (no rclpy needed)."""
import math

import pytest

from vpr_ros.ros.parameters import DEFAULTS, PARAMETERS, cross_check

FLOATS = [p.name for p in PARAMETERS if isinstance(p.default, float)]


def test_defaults_pass():
    assert cross_check(DEFAULTS) is None


@pytest.mark.parametrize('value', [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize('name', ['covariance.score_low', 'covariance.score_high', 'pose.min_score',
                                  'loop_closure.min_score', 'max_rate_hz'])
def test_non_finite_floats_are_refused(name, value):
    problem = cross_check({**DEFAULTS, name: value})
    assert problem is not None and name in problem and 'finite' in problem


def test_every_float_parameter_is_checked():
    for name in FLOATS:
        assert 'finite' in (cross_check({**DEFAULTS, name: math.nan}) or ''), name
