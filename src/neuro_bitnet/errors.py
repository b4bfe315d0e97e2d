"""Exceptions shared across the package. Each carries a message meant for a person."""


class NeuroError(Exception):
    """Base class: a problem with a clear, one-line explanation for the user."""

    exit_code = 1


class ConfigError(NeuroError):
    """A setting or a catalog file is invalid."""

    exit_code = 2


class ModelNotFoundError(NeuroError):
    """The requested model id is unknown or not downloaded."""

    exit_code = 3


class DownloadError(NeuroError):
    """A download failed (network, HTTP status, checksum, disk space)."""

    exit_code = 4


class EngineError(NeuroError):
    """The engine cannot load or run a model (bad file, unsupported tensor, context overflow)."""

    exit_code = 5


class DaemonError(NeuroError):
    """The daemon cannot be started, reached or stopped."""

    exit_code = 6
