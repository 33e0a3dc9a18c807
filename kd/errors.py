"""Errors a user can act on: each message names the key, file or field at fault and the fix."""


class KDError(Exception):
    """Base for errors the CLI prints as one line instead of a traceback."""


class ConfigError(KDError):
    """A bad or unknown params key."""


class DataError(KDError):
    """Bad input data: message names the file and line."""


class ModelLoadError(KDError):
    """A model that cannot be found or fetched."""


class ArtifactError(KDError):
    """A missing or corrupt pipeline output: message names the stage to run."""
