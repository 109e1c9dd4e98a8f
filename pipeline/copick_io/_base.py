"""How tomopick imports copick, and what every part of ``pipeline.copick_io`` shares (run lookup, messages)."""

from __future__ import annotations

import logging

from pipeline.errors import RunError

log = logging.getLogger("pipeline.copick_io")


def _import_copick():
    """Import copick without letting it reconfigure logging.

    copick's ``get_logger`` calls ``basicConfig(force=True)`` with a rich handler whenever one of its modules is
    imported, which would override what run_all.py / the CLI set up (a library must not configure logging).
    We import the modules we use with the root logger saved and restored, then make the remaining lazy
    ``get_logger`` calls plain ``logging.getLogger``.
    """
    import importlib
    import sys

    root_logger = logging.getLogger()
    handlers, level = root_logger.handlers[:], root_logger.level
    try:
        module = importlib.import_module("copick")
        for name in ("copick.util.log", "copick.ops.open", "copick.impl.filesystem", "copick.impl.overlay",
                     "copick.util.ome"):
            importlib.import_module(name)
    finally:
        root_logger.handlers[:] = handlers
        root_logger.setLevel(level)

    def quiet_get_logger(name, debug=False):
        return logging.getLogger(name)

    for mod_name, mod in list(sys.modules.items()):
        if mod_name.startswith("copick") and getattr(mod, "get_logger", None) is not None:
            mod.get_logger = quiet_get_logger
    return module


copick = _import_copick()


def _first(items):
    return items[0] if items else None


def _project_name(root) -> str:
    return getattr(root, "_tomopick_config_path", None) or "copick project"


def _where(copick_obj) -> str:
    """The file or store behind a copick object, for messages (tomograms have no ``path``: the overlay's, or the
    static root's for a read-only one)."""
    path = getattr(copick_obj, "path", None)
    if not path and hasattr(copick_obj, "read_only"):
        path = copick_obj.static_path if copick_obj.read_only else copick_obj.overlay_path
    return str(path or copick_obj)


def _voxel_spacing(run, voxel_size: float):
    """The run's voxel spacing of exactly ``voxel_size`` (copick's rule), from the run's listing: copick's
    ``get_voxel_spacing`` before a listing asks a data-portal project's server once per call, the listing comes
    from the portal answer copick cached when the project was opened."""
    return _first([vs for vs in run.voxel_spacings if vs.voxel_size == float(voxel_size)])


def _get_run(root, run_id: str):
    run = root.get_run(run_id)
    if run is None:
        raise RunError(f"{_project_name(root)}: no run named '{run_id}'; check --run-ids against the project's runs")
    return run



def _remove_quietly(copick_obj, what: str) -> None:
    try:
        copick_obj.delete()
        log.warning("removed the partly written %s after a failure", what)
    except Exception as exc:  # the original failure matters more than this one
        log.error("could not remove the partly written %s: %s", what, exc)

