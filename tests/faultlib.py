"""Helpers of the fault-matrix tests (tests/test_faults*.py): run configs, damage, snapshots of outputs.

A fault is met as an operator meets it: a YAML run config given to ``run_all.py`` (in this process, or as a
subprocess where the process itself is the point: signals, kill -9, concurrent drivers, read-only mounts).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "models" / "demo_unet.yaml"
DEMO_WEIGHTS = REPO / "configs" / "models" / "demo_unet.pth"
RUNS = ("TS_7_0", "TS_7_1")
SEG_DIR = "10.000_octopi_1_predict-multilabel.zarr"


def run_doc(project_config, **over) -> dict:
    """A run config as an operator writes it: the demo model, ntta 1 (fast), every stage, on the CPU."""
    doc = {
        "copick_config": str(project_config),
        "device": "cpu",
        "model": {"configs": [str(DEMO_CONFIG)], "weights": [str(DEMO_WEIGHTS)]},
        "segment": {"ntta": 1},
        "localize": {"n_procs": 1},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return doc


def write_yaml(path, doc: dict) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def copy_tree_project(src_config: Path, dst_dir: Path) -> Path:
    """Copy a project (its folder with the overlay) and point the config's overlay_root at the copy."""
    shutil.copytree(src_config.parent, dst_dir)
    config = json.loads((dst_dir / "config.json").read_text())
    config["overlay_root"] = f"local://{(dst_dir / 'overlay').resolve()}"
    (dst_dir / "config.json").write_text(json.dumps(config, indent=2))
    return dst_dir / "config.json"


def overlay(config) -> Path:
    return Path(config).parent / "overlay"


def run_dir(config, run_id: str) -> Path:
    return overlay(config) / "ExperimentRuns" / run_id


def tomogram_store(config, run_id: str) -> Path:
    return run_dir(config, run_id) / "VoxelSpacing10.000" / "wbp.zarr"


def done_marker(config, run_id: str, key: str = "octopi_1") -> Path:
    return overlay(config) / "logs" / f"done-{key}" / f"{run_id}.json"


def writing_marker(config, run_id: str, key: str = "octopi_1") -> Path:
    return overlay(config) / "logs" / f"writing-{key}" / f"{run_id}.json"


def outputs_of(config, run_id: str) -> dict[str, bytes]:
    """Every file of a run's outputs (picks octopi/1, segmentation predict:octopi/1, done marker), as bytes."""
    base = run_dir(config, run_id)
    files = sorted((base / "Picks").glob("octopi_1_*.json")) + sorted(
        p for p in (base / "Segmentations" / SEG_DIR).rglob("*") if p.is_file())
    out = {str(p.relative_to(base)): p.read_bytes() for p in files}
    marker = done_marker(config, run_id)
    if marker.is_file():
        out["done-marker"] = marker.read_bytes()
    return out


def picks_files(config, run_id: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run_dir(config, run_id) / "Picks").glob("octopi_1_*.json"))}


def n_points(config, run_id: str) -> int:
    return sum(len(json.loads(b)["points"] or []) for b in picks_files(config, run_id).values())


def snapshot(folder) -> dict[str, tuple]:
    """(kind, size, mtime_ns, inode) of every file and folder under ``folder``: equal snapshots mean nothing
    was written, replaced, created or removed there."""
    out = {}
    for path in [Path(folder), *Path(folder).rglob("*")]:
        st = path.lstat()
        out[str(path)] = ("d" if path.is_dir() else "f", st.st_size if path.is_file() else 0, st.st_mtime_ns,
                          st.st_ino)
    return out


def zarr_level0(store: Path):
    import zarr

    return zarr.open(str(store / "0"), mode="r+")


def set_voxels(config, run_id: str, index, value) -> int:
    """Set tomogram voxels of a run in place; returns how many were set."""
    arr = zarr_level0(tomogram_store(config, run_id))
    data = arr[...]
    data[index] = value
    arr[...] = data
    return int(np.count_nonzero(~np.isfinite(data)))


def rechunk_level0(config, run_id: str, chunks=(16, 32, 32)) -> int:
    """Rewrite level 0 of a run's tomogram with smaller chunks (as real stores have many); returns their number."""
    import zarr

    store = tomogram_store(config, run_id) / "0"
    old = zarr.open(str(store), mode="r")
    data, compressor = old[...], old.compressor
    shutil.rmtree(store)
    new = zarr.open(str(store), mode="w", shape=data.shape, chunks=chunks, dtype=data.dtype, compressor=compressor,
                    dimension_separator="/")
    new[...] = data
    return int(new.nchunks)


def chunk_files(config, run_id: str) -> list[Path]:
    level0 = tomogram_store(config, run_id) / "0"
    return sorted(p for p in level0.rglob("*") if p.is_file() and not p.name.startswith("."))


def assert_no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text


def error_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def warning_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


# ------------------------------------------------------------------------------------------------- subprocesses

# ``run_all.py`` in a fresh process, with ``setup`` code run first (one of the snippets below: they hold the
# process at a known point so that a test can signal it, make drivers meet, or kill it mid-write).
DRIVER = """
import signal, sys
sys.path.insert(0, {repo!r})
signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal, also when started in the background
{setup}
from run_all import main
sys.exit(main({argv!r}))
"""

# the segmentation of the ``at``-th run taken announces itself (creates ``flag``) and waits to be signalled
HOLD_SEGMENT = """
import time, pipeline.segment as _seg
_real, _n = _seg.segment_volume, [0]
def _hold(*a, **k):
    _n[0] += 1
    if _n[0] == {at}:
        open({flag!r}, "w").close()
        time.sleep(120)
    return _real(*a, **k)
_seg.segment_volume = _hold
"""

# every driver's first segmentation waits until ``n`` drivers are segmenting: they run at once, for sure
MEET = """
import os, time, pipeline.segment as _seg
_real, _first = _seg.segment_volume, [True]
def _meet(*a, **k):
    if _first[0]:
        _first[0] = False
        open(os.path.join({folder!r}, str(os.getpid())), "w").close()
        t0 = time.time()
        while len(os.listdir({folder!r})) < {n} and time.time() - t0 < 60:
            time.sleep(0.05)
    return _real(*a, **k)
_seg.segment_volume = _meet
"""

# kill -9 of the process itself once ``after`` pick sets of run ``run`` are written
KILL_WRITING = """
import os, signal, pipeline.copick_io as _io
_real, _n = _io.write_picks, [0]
def _write(root, run_id, *a, **k):
    _real(root, run_id, *a, **k)
    if run_id == {run!r}:
        _n[0] += 1
        if _n[0] == {after}:
            os.kill(os.getpid(), signal.SIGKILL)
_io.write_picks = _write
"""


def one_thread_env() -> dict:
    """Processes started together on 2 cores: one compute thread each (no OpenMP spinning against each other).
    The reference driver runs with one thread too: bf16 convolutions sum in a thread-count-dependent order."""
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def start_driver(argv: list[str], setup: str = "", prefix=()) -> subprocess.Popen:
    code = DRIVER.format(repo=str(REPO), setup=setup, argv=list(argv))
    return subprocess.Popen([*prefix, sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=one_thread_env())


def wait_for(path, procs, timeout: float = 180.0) -> None:
    """Until ``path`` exists; fails with the output of a process in ``procs`` that ended first."""
    import time

    t0 = time.time()
    while not Path(path).exists():
        for proc in procs:
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"a process ended (rc {proc.returncode}) before {path}:\n{out}\n{err}")
        if time.time() - t0 > timeout:
            for proc in procs:
                proc.kill()
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.05)


def finish(proc: subprocess.Popen, timeout: float = 240.0) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err
