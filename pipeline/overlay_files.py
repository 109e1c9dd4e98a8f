"""Files tomopick and octopi keep in a project's overlay beside copick's own data.

- Parameter logs in ``<overlay_root>/logs``: octopi's ``segment-{user}_{session}_{name}.yaml`` (its
  ``localize`` refuses to run without it and takes the label ids from it) and ``localize-{user}_{session}.yaml``.
- Done markers ``<overlay_root>/logs/done-{key}/{run}.json``, written last for each run.

Everything is written through ``pipeline.atomic`` (aside, then renamed; the umask's file mode).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import yaml

from pipeline import atomic
from pipeline.copick_io import overlay_root
from pipeline.errors import ProjectError
from pipeline.selectors import SegSelector


def segmentation_log_path(root, seg: SegSelector) -> Path:
    return overlay_root(root) / "logs" / f"segment-{seg.user_id}_{seg.session_id}_{seg.name}.yaml"


def write_segmentation_log(root, seg: SegSelector, params: dict) -> Path:
    """Write octopi's segmentation parameters YAML (octopi's ``localize`` refuses to run without it)."""
    if "labels" not in params:
        raise ValueError("segmentation log parameters must include 'labels' (object name -> label id)")
    return write_overlay_log(root, segmentation_log_path(root, seg).name, params)


def write_overlay_log(root, filename: str, params: dict) -> Path:
    """Write a parameters YAML to ``<overlay_root>/logs/filename`` (atomically, and only when it changes), as
    octopi keeps its logs."""
    path = overlay_root(root) / "logs" / filename
    atomic.write_text_if_changed(path, yaml.safe_dump(_plain(params), sort_keys=False))
    return path


def read_segmentation_labels(root, seg: SegSelector) -> dict[str, int] | None:
    """Object name -> label id from the segmentation's log YAML; None when the log is absent."""
    path = segmentation_log_path(root, seg)
    if not path.is_file():
        return None
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ProjectError(f"segmentation log '{path}': not valid YAML ({exc}); fix or delete it") from None
    labels = params.get("labels") if isinstance(params, dict) else None
    if labels is None:
        # octopi nests parameters under a top-level key in some versions; accept the first 'labels' found
        labels = _find_key(params, "labels")
    if labels is None:
        return None
    if not isinstance(labels, dict):
        raise ProjectError(f"segmentation log '{path}': 'labels' is {type(labels).__name__}, expected name -> id")
    return {str(k): int(v) for k, v in labels.items()}


def _find_key(tree, key):
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        for value in tree.values():
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


def run_done_marker(root, run_id: str, key: str) -> Path:
    """``<overlay_root>/logs/done-{key}/{run}.json``: written, atomically, after a run's last output.

    ``key`` names the output it vouches for: ``{user}_{session}`` of the picks, or the segmentation of a
    segment-only job. copick's ``new_picks`` stores an empty pick file before ``from_numpy`` fills it, so a
    process killed in between leaves picks that look finished; the marker is what says they are.
    """
    return overlay_root(root) / "logs" / f"done-{key}" / f"{run_id}.json"


def run_done_markers(root, run_id: str) -> list[tuple[str, dict, int]]:
    """Every done marker of a run, whichever job wrote it: (key, content, modification time in ns). A marker
    that cannot be read vouches for nothing and is left out."""
    logs = overlay_root(root) / "logs"
    found = []
    for folder in sorted(logs.glob("done-*")) if logs.is_dir() else ():
        path = folder / f"{run_id}.json"
        try:
            info, mtime = json.loads(path.read_text()), path.stat().st_mtime_ns
        except (OSError, ValueError):
            continue
        if isinstance(info, dict):
            found.append((folder.name[len("done-"):], info, mtime))
    return found


def mark_run_done(root, run_id: str, key: str, info: dict) -> Path:
    return atomic.write_text(run_done_marker(root, run_id, key), json.dumps(_plain(info), indent=1))


def clear_run_done(root, run_id: str, key: str) -> None:
    run_done_marker(root, run_id, key).unlink(missing_ok=True)


def writing_marker(root, run_id: str, key: str) -> Path:
    """``<overlay_root>/logs/writing-{key}/{run}.json``: exists while a run's outputs are being written.

    Outputs without a done marker but with this one are tomopick's own, left by a job killed mid-write: safe to
    replace. Outputs with neither were written by someone else and are replaced only with ``--overwrite``.
    """
    return overlay_root(root) / "logs" / f"writing-{key}" / f"{run_id}.json"


def mark_writing(path: Path, run_id: str) -> Path:
    import socket
    import time

    return atomic.write_text(path, json.dumps({"run": run_id, "host": socket.gethostname(), "pid": os.getpid(),
                                               "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))


def claim_path(root, run_id: str, key: str) -> Path:
    """``<overlay_root>/logs/claim-{key}/{run}.json``: the driver working on the run (host, pid), so that two
    drivers on one project share the runs instead of both doing each."""
    return overlay_root(root) / "logs" / f"claim-{key}" / f"{run_id}.json"


def create_exclusive(path: Path, info: dict) -> bool:
    """Create ``path`` with ``info`` unless it exists (atomically: ``O_CREAT | O_EXCL``); True if we made it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(_plain(info)))
    return True


def read_json(path: Path) -> dict | None:
    """A small JSON file (marker, claim), or None when absent or unreadable (half-written by a killed process)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _plain(value):
    """Turn numpy scalars / tuples / Paths into plain YAML-safe Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
