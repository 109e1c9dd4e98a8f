"""Error types for user-facing problems: each message says what, where, what was received and what to do.

Every error the user can fix derives from ``TomopickError``; the CLI prints it as one line and exits 2.
"""


class TomopickError(Exception):
    """Base class of errors caused by input the user can fix (files, flags, configs)."""


class ProjectError(TomopickError):
    """A copick project that cannot be opened or lacks something asked for."""


class RunError(TomopickError):
    """A run that lacks its tomogram, segmentation or picks, or whose data is malformed."""


class ConfigError(TomopickError):
    """A run config (YAML) or model config that is invalid."""


class ModelError(TomopickError):
    """Model config / weights that cannot be loaded."""


class DeviceError(TomopickError):
    """A device asked for that this machine does not have."""


class SelectorError(TomopickError, ValueError):
    """A selector (URI or flag triple) that cannot be parsed or that contradicts another."""


class RunFailed(TomopickError):
    """A run failed and ``output.on_error`` is ``raise``, or a worker died: the job stops."""
