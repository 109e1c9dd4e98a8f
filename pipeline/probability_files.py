"""The per-run class-probability files that ``segment.save_probabilities`` writes: ``<folder>/<run>.h5`` with a
float16 dataset ``probabilities`` (classes, z, y, x) whose ``labels`` attribute maps object names to channels.
``tomopick localize --probabilities FOLDER`` and ``tomopick tune`` read them back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.errors import RunError

SUFFIX = ".h5"


def probability_path(folder, run_id: str) -> Path:
    return Path(folder) / f"{run_id}{SUFFIX}"


def runs_with_probabilities(folder, run_ids: list[str]) -> tuple[list[str], dict[str, str]]:
    """Runs (of ``run_ids``) whose probability file is in ``folder``; the others with the reason."""
    found, skipped = [], {}
    for run_id in run_ids:
        if probability_path(folder, run_id).is_file():
            found.append(run_id)
        else:
            skipped[run_id] = f"no probabilities {probability_path(folder, run_id)}"
    return found, skipped


def read_labels(path) -> dict[str, int]:
    """Object name -> channel of a probability file."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            return {str(k): int(v) for k, v in json.loads(fh["probabilities"].attrs["labels"]).items()}
    except (OSError, KeyError, ValueError) as exc:
        raise RunError(f"probabilities '{path}': cannot read its labels ({type(exc).__name__}: {exc}); write it "
                       "with `tomopick segment --save-probabilities` (or segment.save_probabilities)") from None


def read_probabilities(path) -> np.ndarray:
    """The (classes, z, y, x) float16 probabilities of one file; a clear error naming it when it is damaged."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            data = fh["probabilities"][...]
    except (OSError, KeyError, ValueError) as exc:
        raise RunError(f"probabilities '{path}': cannot read them ({type(exc).__name__}: {exc}); re-write them "
                       "with `tomopick segment --save-probabilities`") from None
    if data.ndim != 4:
        raise RunError(f"probabilities '{path}': shape {data.shape}, expected (classes, z, y, x)")
    if not np.all(np.isfinite(data)):
        raise RunError(f"probabilities '{path}': {int((~np.isfinite(data)).sum())} values are NaN or inf")
    return data.astype(np.float16, copy=False)
