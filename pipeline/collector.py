"""Python's cyclic garbage collector in tomopick's own processes (the CLI, its worker processes, Ray actors).

Importing torch and MONAI makes 237 000 tracked objects that live as long as the process. With the
collector's defaults, the imports set off a full collection every time the long-lived objects grow by a
quarter, and every full collection during the job walks them all again: 0.8 s of a 17 s job on the validation
project (benchmarks/RESULTS.md, 2026-12-03). Entry points call ``defer_until_started``: young-object
collections run 100x less often while the process starts; ``started`` (once the models are loaded) freezes
what exists by then, which later collections skip, and puts the thresholds back. A process that never calls
``started`` still collects, only less often. Library use calls neither and keeps Python's behaviour.
"""

from __future__ import annotations

import gc

STARTUP_GEN0_THRESHOLD = 100_000  # Python's default is 700 allocations

_saved: tuple[int, ...] | None = None


def defer_until_started() -> None:
    """Collect young objects rarely until ``started``: for processes that are tomopick's own."""
    global _saved
    if _saved is None:
        _saved = gc.get_threshold()
        gc.set_threshold(max(_saved[0], STARTUP_GEN0_THRESHOLD), *_saved[1:])


def started() -> None:
    """The long-lived objects exist (imports, models): freeze them and collect as usual from now on. Does
    nothing where ``defer_until_started`` was not called (library use)."""
    global _saved
    if _saved is None:
        return
    gc.freeze()
    gc.set_threshold(*_saved)
    _saved = None


def stop_deferring() -> None:
    """Put the thresholds back without freezing, where ``started`` never came (a command that failed before
    its models loaded, called in-process): later work in the process collects as Python does."""
    global _saved
    if _saved is not None:
        gc.set_threshold(*_saved)
        _saved = None
