"""The encoders users select by name: one module per encoder, named as its ``encoder:`` config value.

Every module here is an encoder (the registry lists them all); their building blocks live beside
this folder (backbones/, aggregators/, _zoo.py, segments.py, ...).
"""
