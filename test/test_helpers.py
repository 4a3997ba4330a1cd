import pytest

from test.helpers import assert_same_ranking


def test_same_ranking_allows_near_ties_only():
    expected = [(3, 0.9), (5, 0.8), (7, 0.8000001), (1, 0.5)]
    assert_same_ranking([(3, 0.9), (7, 0.8000002), (5, 0.8), (1, 0.5)], expected)  # a near tie swapped
    assert_same_ranking([(3, 0.9), (5, 0.8), (7, 0.8), (2, 0.5000001)], expected)  # a tie across the cut
    with pytest.raises(AssertionError):
        assert_same_ranking([(5, 0.9), (3, 0.8), (7, 0.8), (1, 0.5)], expected)  # a real swap
    with pytest.raises(AssertionError):
        assert_same_ranking([(3, 0.9), (5, 0.81), (7, 0.8), (1, 0.5)], expected)  # a score moved
