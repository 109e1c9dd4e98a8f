"""Error types for user-facing problems: each message says what, where, what was received and what to do."""


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
