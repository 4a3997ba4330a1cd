"""Error types. Each one carries a one-line message meant for a user, not a traceback."""


class VprError(Exception):
    """Base of every error vpr_ros raises on purpose (the CLI maps it to exit code 2)."""


class ConfigError(VprError):
    """A configuration value is missing, of the wrong type, or out of range."""


class ImageDecodeError(VprError):
    """An image message or file cannot be turned into an RGB array."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f'{kind}: {detail}')
        self.kind = kind  # a short category used to count and log skips once per kind


class SourceError(VprError):
    """A bag, folder or CSV cannot be read as asked (missing topic, empty bag, no pose coverage...)."""


class WeightsError(VprError):
    """A weights file is missing, corrupt, or does not match the architecture."""


class MapError(VprError):
    """A map directory is missing, corrupt, or incompatible with the requested encoder."""


class MapBusyError(MapError):
    """Saves replaced the map during every load attempt (a writer faster than this reader): no
    version read was incomplete or corrupt, but none could be read whole."""


class NotImplementedFeature(VprError):
    """A feature named in the configuration exists in the design but is not implemented."""
