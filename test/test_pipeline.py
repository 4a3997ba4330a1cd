"""Pipeline helpers that must not trust a source's header count."""
import pytest

from vpr_ros.pipeline import spread_sample


@pytest.mark.parametrize('n', [0, 1, 399, 400, 401, 1000, 5000])
def test_spread_sample_covers_a_stream_of_unknown_length_evenly(n):
    kept = spread_sample(iter(range(n)), 400)
    if n <= 400:
        assert kept == list(range(n))
        return
    assert 200 <= len(kept) <= 400
    stride = kept[1] - kept[0]
    assert kept == list(range(0, n, stride))  # even stride from the first item to the end
    assert kept[-1] + stride >= n
