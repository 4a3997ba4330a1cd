"""Encoders: image batch -> L2-normalised global descriptors. One module per encoder, in models/."""
from vpr_ros.encoders.base import DEFAULT_ENCODER, Encoder, available_encoders, create_encoder, encoder_class

__all__ = ['DEFAULT_ENCODER', 'Encoder', 'available_encoders', 'create_encoder', 'encoder_class']
