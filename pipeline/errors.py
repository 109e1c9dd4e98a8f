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


class Terminated(BaseException):
    """SIGTERM (what SLURM sends before it kills a job) or SIGUSR1 arrived: stop like Ctrl-C.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it: the run loop stops
    taking runs, the runs in flight finish or roll back, the report is written, and the CLI exits 128 + signal.
    """

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def raise_on_termination() -> None:
    """Turn SIGTERM and SIGUSR1 into ``Terminated`` in this process's main thread."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        raise Terminated(signum)

    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, handler)


def name_list(names, limit: int = 5) -> str:
    """``TS_1, TS_2, TS_3 and 4 more``: the first ``limit`` names of a message's list, and how many are left."""
    names = list(names)
    return ", ".join(map(str, names[:limit])) + (f" and {len(names) - limit} more" if len(names) > limit else "")
