"""The process heap: keep freed memory for reuse instead of handing it back to the OS after every window.

Segmentation on the CPU allocates and frees tensors of tens of MB for every network window. With glibc's
defaults each one above 32 MB is mapped and unmapped, and the heap is trimmed back to the OS, so the next
window faults every page in again: on the validation project 2 M minor page faults and 5-7 s of kernel time in
a 20-26 s job, 10 M and 28 s in compat's (benchmarks/RESULTS.md, "End to end"). Here the heap grows 1 GiB at
a time (M_TOP_PAD: window-sized tensors are then carved from the heap's free top, and freed back into it) and
keeps up to 2 GiB free before trimming (M_TRIM_THRESHOLD); the same as MALLOC_TOP_PAD_ / MALLOC_TRIM_THRESHOLD_.
Measured: peak RSS 2.50 GiB against 2.30 GiB for a 184x630x630 tomogram; the added pages are the ones reused.

Only glibc is touched; a user who preloads another allocator (jemalloc, tcmalloc), sets one of these
MALLOC_*_ variables or a malloc tunable, or sets TOMOPICK_HEAP=system keeps the system's behaviour.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_TOP_PAD = -2
TRIM_THRESHOLD_BYTES = (1 << 31) - 1  # free heap top kept before trimming (mallopt takes a C int)
TOP_PAD_BYTES = 1 << 30  # extra heap grown at each brk, so that growth is rare
OPT_OUT = "TOMOPICK_HEAP"
# the user's own settings of what is set here win
GLIBC_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_")

_applied: bool | None = None


def _user_chose_allocator() -> str | None:
    """Why the system's allocator settings are left alone, or None."""
    if os.environ.get(OPT_OUT, "").strip().lower() in ("system", "0", "off", "no"):
        return f"{OPT_OUT}={os.environ[OPT_OUT]}"
    tuned = sorted(k for k in os.environ if k in GLIBC_VARIABLES)
    if tuned:
        return f"{tuned[0]} is set"
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets malloc tunables"
    preload = os.environ.get("LD_PRELOAD", "")
    if any(name in preload for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return "another allocator is preloaded"
    return None


def retain_freed_memory() -> bool:
    """Set glibc's trim threshold and top pad for this process (once); True when they were set."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    reason = _user_chose_allocator()
    if reason:
        log.debug("heap: system allocator settings kept (%s)", reason)
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.mallopt.restype = ctypes.c_int
        ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and libc.mallopt(M_TOP_PAD, TOP_PAD_BYTES) == 1
    except (OSError, AttributeError) as exc:  # no libc to talk to: the defaults stay, nothing else changes
        log.debug("heap: mallopt unavailable (%s)", exc)
        return False
    _applied = bool(ok)
    if _applied:  # grow the heap now (by the pad: address space, not memory), before the first window asks
        _grown = [bytearray(64 << 10) for _ in range(64)]
        del _grown
    return _applied


ARENA_VARIABLE = "MALLOC_ARENA_MAX"


def one_arena_env() -> dict[str, str]:
    """The environment for a worker process that segments in a thread other than its main one (a Ray actor's
    run loop): one glibc arena, so that thread allocates from the main heap that ``retain_freed_memory`` keeps.
    A thread's own arena grows in 64 MB heaps, so window-sized tensors are mapped and unmapped there whatever
    the settings above. Measured (benchmarks/RESULTS.md), 1-thread segmentation of a 96x256x256 run in a thread:
    9.3-10.3 s with the kept heap alone, 5.4-5.9 s with one arena too, 5.3-5.5 s on the main thread.
    Empty where the user chose the allocator, or set the arenas already. It must be set when the process starts
    (glibc reads it once), hence an environment for the process, not a call in it."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return {}
    if _user_chose_allocator() or ARENA_VARIABLE in os.environ:
        return {}
    return {ARENA_VARIABLE: "1"}


def describe() -> str:
    """This process's allocator settings, in words (a Ray actor reports them to the driver)."""
    kept = "freed memory kept" if _applied else "system settings"
    arenas = os.environ.get(ARENA_VARIABLE)
    return kept + (f", {ARENA_VARIABLE}={arenas}" if arenas else "")


def lacks_one_arena(description: str | None) -> bool:
    """True for a ``describe()`` of a process that keeps freed memory without one arena: a thread other than the
    main one then segments from arenas of its own, which that setting does not reach."""
    return bool(description) and description.startswith("freed memory kept") and ARENA_VARIABLE not in description
