"""Encoders: image batch -> L2-normalised global descriptors. One module per encoder."""
from vpr_ros.encoders.base import Encoder, available_encoders, create_encoder, encoder_class

__all__ = ['Encoder', 'available_encoders', 'create_encoder', 'encoder_class']
