"""Dimensions of the sample world and its cameras, shared by every part of it."""
from __future__ import annotations

import numpy as np

TRAVERSALS = ('mapping', 'query', 'viewpoint')
STORAGES = ('sqlite3', 'mcap')

LOOP_M = 1200.0          # centreline length of one lap at scale 1
MIN_LOOP_M = 160.0       # shortest loop that still has streets with buildings on both sides
FRAME_SPACING_M = 4.0    # mean distance between images
CRUISE_MPS = 8.0
MIN_LAP_S = 45.0         # short test loops are driven slower so revisits stay > 30 s apart
ODOM_HZ = 20.0
ODOM_OFFSET_S = 0.0137   # odometry is not synchronised with the camera: poses must be interpolated

CAMERA_HEIGHT_M = 1.6
HFOV_DEG = 90.0
PITCH_DEG = 5.0
ROAD_HALF_M = 5.5
MAPPING_LANE_M = -1.5    # lateral offset from the centreline, + is left of the driving direction
PPM = 8.0                # facade texels per metre (level 0 of the mip chain)
MIP_LEVELS = 4
SPRITE_PPM = 16.0
GROUND_RES_M = 0.2
GROUND_LEVELS = 5
MAX_RANGE_M = 160.0
LAYERS = 3

# A campus-like loop (metres, counter-clockwise); scaled to the wanted length.
_SHAPE = np.array([(0, 0), (320, 0), (400, 70), (400, 200), (250, 260), (60, 240), (-20, 130)], np.float64)
