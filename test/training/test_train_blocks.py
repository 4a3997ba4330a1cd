"""The trained EfficientNet suffix (``train_blocks``) computes in channels-last layout.

On the CPU the backward pass of a depthwise convolution is several times slower on NCHW tensors
than on channels-last ones, and the suffix of ``train_blocks`` MBConv blocks runs forward and
backward at every training step; the head still gets the usual contiguous NCHW map.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vpr_ros.encoders.backbones import efficientnet_trunk


@pytest.mark.parametrize('stride,with_token', [(16, False), (32, True)])
def test_trained_suffix_runs_channels_last_and_matches_the_trunk(stride, with_token):
    trunk = efficientnet_trunk('efficientnet_lite0', stride, None, with_token).eval()
    frozen, tail = trunk.split(3)
    layouts = []
    hooks = [b._depthwise_conv.register_forward_pre_hook(
        lambda m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
        for b in tail.blocks]
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((2, 3, 96, 128)).astype(np.float32))
    with torch.no_grad():
        cached = frozen(x)
    assert cached.is_contiguous()  # the cached prefix output keeps the plain layout
    out = tail(cached.clone().requires_grad_(True))
    for h in hooks:
        h.remove()
    assert layouts == [True] * len(tail.blocks)
    with torch.no_grad():
        whole = trunk(x)
    outs, wholes = (out, whole) if with_token else ((out,), (whole,))
    for a, b in zip(outs, wholes):
        assert a.is_contiguous()  # what the heads expect (they may .view() it)
        torch.testing.assert_close(a.detach(), b, rtol=1e-4, atol=1e-4)
    outs[0].square().mean().backward()  # gradients reach the trained blocks' parameters
    assert all(p.grad is not None for p in tail.parameters())


def test_frozen_prefix_keeps_the_plain_layout():
    trunk = efficientnet_trunk('efficientnet_lite0', 16, None).eval()
    frozen, tail = trunk.split(1)
    assert not frozen.channels_last and tail.channels_last
