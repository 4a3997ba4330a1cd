"""Metric geometry of map places: frame conventions, landmark triangulation, PnP pose with covariance.

ROS-free. The one place for the camera/body conventions (:mod:`.transforms`), multi-view
triangulation of a place's local features from its neighbouring keyframes (:mod:`.triangulation`),
the query pose by PnP + MAGSAC + Levenberg-Marquardt with a Gauss-Newton covariance
(:mod:`.pnp`), and the map-facing metric localizer that ties them together (:mod:`.metric`).
See docs/localization.md.
"""
