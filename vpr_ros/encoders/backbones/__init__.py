"""Backbones in plain torch whose parameter names load the official checkpoints strictly."""
