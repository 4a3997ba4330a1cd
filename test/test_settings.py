"""vpr_ros.settings: the described fields of the config dataclasses, their flat names and the round trip."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from vpr_ros.features import LocalFeatureConfig
from vpr_ros.geometry.metric import MetricConfig
from vpr_ros.geometry.pnp import PnPConfig
from vpr_ros.matching.confidence import CovarianceModel
from vpr_ros.matching.loop_closure import LoopClosureConfig
from vpr_ros.matching.sequence import SequenceConfig
from vpr_ros.matching.verification import VerificationConfig
from vpr_ros.relocalization import AgreementConfig
from vpr_ros.settings import config_from_flat, config_to_flat, setting, settings_of

DESCRIBED = (SequenceConfig, LoopClosureConfig, VerificationConfig, AgreementConfig, MetricConfig,
             LocalFeatureConfig, CovarianceModel)


@dataclass(frozen=True)
class Example:
    SETTINGS_PREFIX = 'example'

    count: int = setting(3, 'How many.', low=1, high=10)
    scale_m: float = setting(0.5, 'How far [m].', name='scale')
    internal: float = 2.0


def test_described_fields_are_named_with_the_prefix_in_field_order() -> None:
    assert [(s.name, s.field, s.default) for s in settings_of(Example)] == [
        ('example.count', 'count', 3), ('example.scale', 'scale_m', 0.5)]
    assert [s.name for s in settings_of(Example, 'other')] == ['other.count', 'other.scale']
    assert [s.name for s in settings_of(Example, '')] == ['count', 'scale']


def test_flat_values_round_trip_and_leave_internal_fields_alone() -> None:
    config = config_from_flat(Example, {'example.count': 7, 'example.scale': 1.5, 'unrelated': 0})
    assert config == Example(count=7, scale_m=1.5, internal=2.0)
    assert config_to_flat(config) == {'example.count': 7, 'example.scale': 1.5}
    assert config_from_flat(Example, {'example.count': 7}, partial=True, internal=4.0) == Example(7, 0.5, 4.0)


def test_a_missing_name_is_refused_unless_partial() -> None:
    with pytest.raises(KeyError, match='example.scale'):
        config_from_flat(Example, {'example.count': 7})


def test_a_setting_is_a_scalar() -> None:
    with pytest.raises(TypeError):
        setting([1, 2], 'a list')


@pytest.mark.parametrize('cls', DESCRIBED, ids=lambda c: c.__name__)
def test_every_described_default_is_valid_and_round_trips(cls: type) -> None:
    for s in settings_of(cls):
        assert s.about.description.strip(), s.name
        if s.about.low is not None:
            assert isinstance(s.default, (int, float)) and not isinstance(s.default, bool), s.name
            assert s.about.low <= s.default <= s.about.high, s.name
        if s.about.choices:
            assert s.default in s.about.choices, s.name
    default = cls()
    assert config_from_flat(cls, config_to_flat(default)) == default


def test_the_pnp_settings_are_the_metric_ones_and_match_the_triangulation_default() -> None:
    from vpr_ros.geometry.triangulation import TriangulationConfig

    names = [s.name for s in settings_of(PnPConfig, 'metric')]
    assert names == ['metric.min_inliers', 'metric.threshold_px', 'metric.max_position_sigma']
    # the node sets both from metric.threshold_px: their defaults must agree
    assert math.isclose(PnPConfig().threshold_px, TriangulationConfig().max_reprojection_px, rel_tol=0.0)
