"""No silent minute: progress for steps that take long, as a bar on a terminal and as log lines elsewhere.

``Progress`` is what a long step reports to (``with Progress("run TS_1: segment", total=n, unit="window") as p:
p.update(k)``): a tqdm bar when stderr is a terminal, otherwise (a SLURM log, a pipe) one INFO line at most every
``interval`` seconds and one at the end ("done", or "stopped at" when an exception ended the step), so a log
file shows that the job is alive and how far it is.
``announce_kernel_compilation`` says, before it happens, that numba is about to compile the CPU kernels (their
first use after install; cached afterwards).
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger(__name__)

LOG_INTERVAL_S = 10.0  # seconds between progress lines when there is no terminal to draw a bar on


class Progress:
    """Counts ``done`` of ``total`` steps of one long task; a bar on a terminal, log lines otherwise."""

    def __init__(self, what: str, total: int | None = None, unit: str = "step", *, interval: float = LOG_INTERVAL_S,
                 bar: bool | None = None, logger: logging.Logger | None = None):
        self.what, self.total, self.unit, self.interval = what, total, unit, interval
        self.log = logger or log
        self.done = 0
        self.t0 = self._last = time.perf_counter()
        use_bar = sys.stderr.isatty() if bar is None else bar
        self._bar = None
        self._closed = False
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=what, unit=unit, leave=False)

    def update(self, n: int = 1) -> None:
        self.update_to(self.done + n)

    def update_to(self, done: int, total: int | None = None) -> None:
        """Set the count (a callback ``progress(done, total)`` a stage can call)."""
        if total is not None and total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
        if self._bar is not None:
            self._bar.update(done - self.done)
        self.done = done
        now = time.perf_counter()
        if self._bar is None and now - self._last >= self.interval:
            self._last = now
            self.log.info("%s: %s", self.what, self._status(now))

    def _status(self, now: float) -> str:
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        unit = self.unit + ("es" if self.unit.endswith(("s", "sh", "ch", "x")) else "s")  # windows, classes
        return f"{self.done}{of} {unit}{pct}, {now - self.t0:.0f} s"

    def close(self, stopped_by: type[BaseException] | None = None) -> None:
        """End the bar, or log the closing line: "done" only when the task finished; ``stopped_by`` (the type of
        the exception that ended it: KeyboardInterrupt, an error) logs where it stopped instead."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
            return
        now = time.perf_counter()
        if now - self.t0 < self.interval:  # a short task needs no closing line
            return
        if stopped_by is None:
            self.log.info("%s: done, %s", self.what, self._status(now))
        else:
            self.log.info("%s: stopped at %s (%s)", self.what, self._status(now), stopped_by.__name__)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(stopped_by=exc_type)


# the modules of the CPU localization path (pipeline/localize/cpu.py), whose kernels its first call compiles
CPU_KERNEL_MODULES = ("kernels.label_scan", "kernels.opened", "kernels.edt", "kernels.peaks", "kernels.watershed_heap")
PEAKS_KERNEL_MODULES = ("kernels.smooth",)  # the peaks method's (pipeline/localize/cpu.py candidates_peaks)


def cold_numba_kernels(modules=CPU_KERNEL_MODULES) -> list[str]:
    """The cached (``cache=True``) numba kernels defined in ``modules`` that have no cache index yet, i.e. that
    numba will compile on first use (inlined helpers are compiled into their callers and never cached alone).
    Empty when all are cached, or when numba's cache layout is not the one known."""
    import importlib
    import os

    cold = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for attr in vars(module).values():
            index = getattr(getattr(getattr(attr, "_cache", None), "_cache_file", None), "_index_path", None)
            if index is None or getattr(getattr(attr, "py_func", None), "__module__", None) != name:
                continue
            if getattr(attr, "targetoptions", {}).get("inline") == "always":
                continue
            if not os.path.exists(index):
                cold.append(f"{name}.{attr.__name__}")
    return cold


def announce_kernel_compilation(logger: logging.Logger | None = None, modules=CPU_KERNEL_MODULES) -> bool:
    """Log that the CPU localization kernels are about to be compiled, when they are not cached yet (their first
    use after install takes tens of seconds; numba caches them beside the code for every later process)."""
    try:
        cold = cold_numba_kernels(modules)
    except Exception:  # noqa: BLE001 - a notice must never stop a job (numba internals may change)
        return False
    if cold:
        (logger or log).info("numba compiles %d CPU localization kernels on their first use (tens of seconds, once; "
                             "cached for later runs)", len(cold))
    return bool(cold)
