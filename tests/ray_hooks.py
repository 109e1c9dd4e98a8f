"""Runs in every worker process of tests/test_ray_executor.py's Ray cluster (``runtime_env``
``worker_process_setup_hook``): when the test's control file names a run, the actor writing that run's picks
SIGKILLs itself after the second pick set, half-way through the run's outputs (once per control file)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

CONTROL_ENV = "TOMOPICK_TEST_RAY_CONTROL"  # set before the cluster starts, so every worker inherits it


def install() -> None:
    path = os.environ.get(CONTROL_ENV)
    if not path:
        return
    from pipeline import copick_io

    real, written = copick_io.write_picks, []

    def write_then_die(root, run_id, object_name, *args, **kwargs):
        real(root, run_id, object_name, *args, **kwargs)
        try:
            control = json.loads(Path(path).read_text())
        except (FileNotFoundError, ValueError):
            return
        if control.get("kill_writing") != run_id:
            return
        written.append(run_id)
        if written.count(run_id) != 2:
            return
        try:  # once: the retry of the run must get through
            fd = os.open(f"{path}.killed", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    copick_io.write_picks = write_then_die
