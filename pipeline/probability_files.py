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


def why_none_found(folder, run_ids: list[str]) -> str:
    """Why no run of ``run_ids`` has a file in ``folder``: the folder is missing, holds no probability file, or
    holds those of other runs (another project's folder), named."""
    folder = Path(folder)
    if not folder.is_dir():
        return (f"the probabilities folder '{folder}' does not exist; give the folder that `tomopick segment "
                "--save-probabilities` wrote")
    files = sorted(p.name for p in folder.glob(f"*{SUFFIX}"))
    if not files:
        return (f"'{folder}' holds no probability files (*{SUFFIX}); write them with `tomopick segment "
                f"--save-probabilities {folder}`")
    asked = ", ".join(run_ids[:5]) + (f" ... ({len(run_ids)} runs)" if len(run_ids) > 5 else "")
    return (f"'{folder}' holds {len(files)} probability file(s) of other runs: {', '.join(files[:5])}"
            f"{f' ... ({len(files)})' if len(files) > 5 else ''}; none is named after a run asked for ({asked}): "
            "give the folder that `tomopick segment --save-probabilities` wrote for this project's runs")


def read_labels(path) -> dict[str, int]:
    """Object name -> channel of a probability file."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            return {str(k): int(v) for k, v in json.loads(fh["probabilities"].attrs["labels"]).items()}
    except (OSError, KeyError, ValueError) as exc:
        raise RunError(f"probabilities '{path}': cannot read its labels ({type(exc).__name__}: {exc}); write it "
                       "with `tomopick segment --save-probabilities` (or segment.save_probabilities)") from None


def read_voxel_size(path) -> float | None:
    """The voxel size (Angstrom) a probability file was segmented at; None for files written before it was
    recorded (2026-12-03)."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            value = fh["probabilities"].attrs.get("voxel_size")
    except (OSError, KeyError, ValueError) as exc:
        raise RunError(f"probabilities '{path}': cannot read them ({type(exc).__name__}: {exc}); re-write them "
                       "with `tomopick segment --save-probabilities`") from None
    return None if value is None else float(value)


def check_voxel_size(path, recorded: float | None, voxel_size: float) -> None:
    """Refuse probabilities segmented at another voxel size: every pick would land at the wrong place."""
    if recorded is not None and abs(recorded - float(voxel_size)) > 1e-9 * max(1.0, recorded):  # copick: exact
        raise RunError(f"probabilities '{path}' were segmented at {recorded:g} A, but this job's voxel size is "
                       f"{float(voxel_size):g} A; give -vs/--voxel-size {recorded:g} (or the probabilities of "
                       f"a segmentation at {float(voxel_size):g} A)")


def check_fits_tomogram(probabilities: np.ndarray, path, root, run_id: str, voxel_size: float, tomo_alg: str) -> None:
    """The run's tomogram at ``voxel_size`` has the probabilities' (z, y, x) shape: the check for files that do
    not record their voxel size, and for probabilities of another project's run of the same name."""
    from pipeline import copick_io

    placed, missing = copick_io.runs_with_voxel_spacing(root, voxel_size, [run_id])
    if not placed:
        raise RunError(f"run '{run_id}': {missing[run_id]}; the probabilities '{path}' cannot be placed in this run "
                       "(check -vs/--voxel-size)")
    if not copick_io.has_tomogram(root, run_id, voxel_size, tomo_alg):
        return  # no such tomogram type at this voxel size: the recorded voxel size is the only check
    shape = copick_io.tomogram_shape(root, run_id, voxel_size, tomo_alg)
    if tuple(probabilities.shape[1:]) != tuple(shape):
        raise RunError(f"probabilities '{path}': (z, y, x) shape {tuple(probabilities.shape[1:])}, but run "
                       f"'{run_id}' has the tomogram {tomo_alg}@{float(voxel_size):g} of shape {tuple(shape)}; "
                       "they were segmented from another tomogram or at another voxel size (-vs)")


def read_probabilities(path, voxel_size: float | None = None, run_id: str | None = None) -> np.ndarray:
    """The (classes, z, y, x) float16 probabilities of one file; a clear error naming it when it is damaged,
    when ``voxel_size`` is given and the file was segmented at another, or when ``run_id`` is given and the file
    records another run (a copy renamed after another run's name: its shape may fit, its particles do not)."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            data = fh["probabilities"][...]
            recorded = fh["probabilities"].attrs.get("voxel_size")
            recorded_run = fh["probabilities"].attrs.get("run")
    except (OSError, KeyError, ValueError) as exc:
        raise RunError(f"probabilities '{path}': cannot read them ({type(exc).__name__}: {exc}); re-write them "
                       "with `tomopick segment --save-probabilities`") from None
    if voxel_size is not None:
        check_voxel_size(path, None if recorded is None else float(recorded), voxel_size)
    if isinstance(recorded_run, bytes):
        recorded_run = recorded_run.decode()
    if run_id is not None and recorded_run is not None and str(recorded_run) != str(run_id):
        raise RunError(f"probabilities '{path}' were segmented from run '{recorded_run}', not '{run_id}'; give the "
                       f"folder that `tomopick segment --save-probabilities` wrote for this project's runs (or "
                       f"segment '{run_id}' again)")
    if data.ndim != 4:
        raise RunError(f"probabilities '{path}': shape {data.shape}, expected (classes, z, y, x)")
    if not np.all(np.isfinite(data)):
        raise RunError(f"probabilities '{path}': {int((~np.isfinite(data)).sum())} values are NaN or inf")
    return data.astype(np.float16, copy=False)
