"""No silent minute: log lines never land on a progress bar's line; progress shows as log lines without a
terminal; the first compilation of the CPU kernels is announced before it happens."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

from pipeline.cli.common import TqdmSafeHandler, setup_logging
from pipeline.progress import Progress

ROOT = Path(__file__).resolve().parent.parent


def _bar_then_log(handler: logging.Handler, stream) -> str:
    """Draw a bar, log a line while it is drawn, finish the bar; return what is on the log line before it."""
    logger = logging.getLogger("tomopick.test_progress")
    logger.handlers[:], logger.propagate, logger.level = [handler], False, logging.INFO
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    bar = tqdm(total=3, file=stream, disable=False, mininterval=0, desc="runs")
    bar.update(1)
    logger.info("hello from the log")
    bar.update(2)
    bar.close()
    text = stream.getvalue() if hasattr(stream, "getvalue") else ""
    before = text.split("hello from the log")[0]
    return before.split("\n")[-1].split("\r")[-1]


def test_log_lines_do_not_share_a_line_with_a_bar(capsys):
    import io

    # the control: a plain handler writes behind the bar, on its line
    stream = io.StringIO()
    assert "1/3" in _bar_then_log(logging.StreamHandler(stream), stream)
    stream = io.StringIO()
    assert _bar_then_log(TqdmSafeHandler(stream), stream) == "INFO tomopick.test_progress: "


def test_setup_logging_installs_the_tqdm_safe_handler():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = []
    try:
        setup_logging(0)
        assert len(root.handlers) == 1 and isinstance(root.handlers[0], TqdmSafeHandler)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]


def test_progress_logs_lines_without_a_terminal(caplog):
    caplog.set_level(logging.INFO)
    with Progress("run TS_1: segment", total=4, unit="window", interval=0.0, bar=False) as p:
        p.update(1)
        p.update_to(3)
        p.update(1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("run TS_1: segment")]
    assert lines[0].startswith("run TS_1: segment: 1/4 windows (25 %)")
    assert lines[1].startswith("run TS_1: segment: 3/4 windows (75 %)")
    assert lines[-1].startswith("run TS_1: segment: done, 4/4 windows (100 %)")
    caplog.clear()
    with Progress("run TS_1: localize", total=6, unit="class", interval=0.0, bar=False) as p:
        p.update(6)
    assert caplog.records[-1].getMessage().startswith("run TS_1: localize: done, 6/6 classes (100 %)")
    caplog.clear()
    with Progress("quick", total=2, bar=False) as p:  # the default interval: a short task stays quiet
        p.update(2)
    assert not caplog.records


def test_progress_draws_a_bar_on_request(capsys):
    with Progress("localize", total=6, unit="class", bar=True) as p:
        p.update(6)
    assert "localize" in capsys.readouterr().err


def test_first_compilation_is_announced_and_not_after(tmp_path, caplog):
    """With an empty numba cache the CPU kernels are cold and the notice is logged (a fresh process, so numba
    reads NUMBA_CACHE_DIR); once they have run here (compiled and cached, or loaded) nothing is said."""
    script = ("import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s')\n"
              "from pipeline.progress import announce_kernel_compilation, cold_numba_kernels\n"
              "print('cold', len(cold_numba_kernels())); announce_kernel_compilation()\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300).stdout
    assert "numba compiles" in out and "cold 0" not in out

    import numpy as np

    from pipeline.localize import localize
    from pipeline.objects import ParticleObject
    from pipeline.progress import announce_kernel_compilation, cold_numba_kernels

    label_map = np.zeros((24, 24, 24), np.uint8)
    label_map[4:11, 4:11, 4:11] = 1
    label_map[14:20, 14:20, 14:20] = 1
    localize(label_map, [ParticleObject("a", 1, 40.0)], 10.0, backend="cpu")
    caplog.set_level(logging.INFO)
    assert cold_numba_kernels() == [] and not announce_kernel_compilation()
    assert "numba compiles" not in caplog.text
