"""What a process that is tomopick's own (the CLI, its worker processes, Ray actors) does differently from
library use, in one call so that no entry point takes one part and misses the other: MONAI is imported without
the packages no network needs (``networks.lean_monai``), and the collector waits for the models
(``collector.defer_until_started``).
"""

from __future__ import annotations


def declare() -> None:
    """This process is tomopick's own: call first thing in an entry point, never from library code."""
    from pipeline.collector import defer_until_started
    from pipeline.networks import lean_monai

    lean_monai()
    defer_until_started()
