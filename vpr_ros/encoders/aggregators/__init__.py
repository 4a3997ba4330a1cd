"""Aggregators: (N, C, H, W) feature map -> (N, D) descriptor, in plain torch."""
