"""Opening a copick project (filesystem or CZII data portal, checked before copick is asked), its objects,
runs and what they hold."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.copick_io._base import _project_name, _voxel_spacing, copick, log
from pipeline.errors import ProjectError
from pipeline.objects import ParticleObject


def open_project(config_path):
    """Open a copick project from its configuration JSON; errors name the path and what is wrong.

    Two project types: ``filesystem`` (static and overlay folders) and ``cryoet_data_portal`` (the CZII data
    portal's datasets, read-only, plus a writable overlay). Both need a local ``overlay_root``: tomopick's
    outputs and logs go there. A portal config is checked offline first; opening it then asks the portal for
    the datasets' runs (copick caches the answer for a day in ``<overlay>/.copick_cache``).
    """
    path = Path(config_path)
    if not path.is_file():
        raise ProjectError(
            f"copick config '{path}': no such file; pass the project's configuration JSON (e.g. -c config.json)"
        )
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProjectError(f"copick config '{path}': not valid JSON ({exc}); pass a copick configuration JSON") from None
    if not isinstance(data, dict) or "pickable_objects" not in data:
        raise ProjectError(
            f"copick config '{path}': not a copick configuration (no 'pickable_objects' key); "
            "pass the project's configuration JSON, e.g. the one `tomopick synth` or `copick new` wrote"
        )
    config_type = data.get("config_type", "filesystem")
    if config_type not in ("filesystem", PORTAL):
        raise ProjectError(f"copick config '{path}': config_type {config_type!r} is not supported; tomopick reads "
                           f"'filesystem' and '{PORTAL}' projects")
    if not data.get("overlay_root"):
        raise ProjectError(f"copick config '{path}': {config_type} project without 'overlay_root'; add one "
                           "(local:///absolute/folder): tomopick writes its segmentations, picks and logs there")
    local_overlay(data["overlay_root"], f"copick config '{path}'")
    if config_type == PORTAL:
        check_portal_config(data, f"copick config '{path}'")
    try:
        if config_type == PORTAL:
            root = copick.from_file(str(path))
        else:  # what copick.from_file does for a filesystem project, without importing its portal client (0.4 s)
            from copick.impl.filesystem import CopickConfigFSSpec, CopickRootFSSpec

            root = CopickRootFSSpec(CopickConfigFSSpec(**{**data, "config_type": "filesystem"}))
    except Exception as exc:  # copick/pydantic raise many types for malformed configs
        if config_type == PORTAL:
            raise ProjectError(
                f"copick config '{path}': opening it asks the CZII data portal for datasets {data['dataset_ids']}, "
                f"which failed: {type(exc).__name__}: {exc}. Check the network; copick keeps the portal's answer "
                "for a day in <overlay_root>/.copick_cache, so a machine without network can use a project "
                "opened once elsewhere with the same overlay"
            ) from exc
        raise ProjectError(f"copick config '{path}': copick cannot open it: {exc}") from exc
    root._tomopick_config_path = str(path)  # for messages and provenance
    return root


PORTAL = "cryoet_data_portal"


def local_overlay(uri: str, where: str) -> Path:
    """The local folder of an overlay URI (``local://``, ``file://`` or a plain path); other protocols (s3://,
    ssh://) are refused: tomopick writes its logs and reports there as local files."""
    if "://" in uri and not uri.startswith(("local://", "file://")):
        raise ProjectError(f"{where}: overlay_root {uri!r} is not a local folder; tomopick writes its logs and "
                           "reports there as files, so give local:///absolute/folder")
    for prefix in ("local://", "file://"):
        if uri.startswith(prefix):
            uri = uri[len(prefix):]
    return Path(uri)


def check_portal_config(data: dict, where: str) -> None:
    """Check a ``cryoet_data_portal`` config without asking the portal: copick's schema (dataset ids, overlay),
    and objects that the portal's annotations can map to (copick matches them by ``identifier``/``go_id``)."""
    from copick.impl.cryoet_data_portal import CopickConfigCDP
    from pydantic import ValidationError

    try:
        CopickConfigCDP.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        raise ProjectError(f"{where}: not a valid {PORTAL} config ({problems}); it needs 'dataset_ids' (e.g. "
                           "[10440]) and a local 'overlay_root'") from None
    if not data["dataset_ids"]:
        raise ProjectError(f"{where}: 'dataset_ids' is empty; name the portal datasets, e.g. [10440]")
    unmapped = [o.get("name") for o in data["pickable_objects"]
                if o.get("is_particle") and not (o.get("identifier") or o.get("go_id"))]
    if unmapped:
        log.warning("%s: particle objects %s have no 'identifier' (GO or UniProtKB id); copick fetches portal "
                    "annotations only for objects with one, so these have no portal ground truth", where, unmapped)


def overlay_root(root) -> Path:
    """Local directory of the writable overlay root (``local://`` or a plain path)."""
    return local_overlay(root.config.overlay_root, _project_name(root))


def particle_objects(root) -> list[ParticleObject]:
    """The project's particle objects (``is_particle``), sorted by label; weight from ``metadata['weight']``."""
    objects = []
    for obj in root.pickable_objects:
        if not obj.is_particle:
            continue
        if obj.label is None or obj.radius is None:
            raise ProjectError(
                f"{_project_name(root)}: particle object '{obj.name}' has no "
                f"{'label' if obj.label is None else 'radius'}; add it to the pickable_objects entry"
            )
        weight = (obj.metadata or {}).get("weight", 1)
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise ProjectError(
                f"{_project_name(root)}: object '{obj.name}' has metadata weight {weight!r}, not a number"
            ) from None
        objects.append(ParticleObject(obj.name, int(obj.label), float(obj.radius), weight))
    return sorted(objects, key=lambda o: o.label)


def _select_runs(root, run_ids):
    names = [r.name for r in root.runs]
    if run_ids is None:
        return names, {}
    known = set(names)
    wanted, skipped = [], {}
    for rid in run_ids:
        if rid in known:
            wanted.append(rid)
        else:
            skipped[rid] = "no such run in the project"
    return wanted, skipped


def tomogram_inventory(root) -> dict[str, int]:
    """``{"ALG@VOXEL_SIZE": number of runs that have it}`` over the whole project (for error messages)."""
    found: dict[str, int] = {}
    for run in root.runs:
        for vs in run.voxel_spacings:
            for tomo in vs.tomograms:
                key = f"{tomo.tomo_type}@{float(vs.voxel_size):g}"
                found[key] = found.get(key, 0) + 1
    return dict(sorted(found.items()))


def segmentation_inventory(root) -> dict[str, int]:
    """``{"NAME:USER/SESSION@VOXEL_SIZE": number of runs that have it}`` over the project (multilabel only)."""
    found: dict[str, int] = {}
    for run in root.runs:
        for seg in run.get_segmentations(is_multilabel=True):
            key = f"{seg.name}:{seg.user_id}/{seg.session_id}@{float(seg.voxel_size):g}"
            found[key] = found.get(key, 0) + 1
    return dict(sorted(found.items()))


def runs_with_voxel_spacing(root, voxel_size: float, run_ids) -> tuple[list[str], dict[str, str]]:
    """Of ``run_ids``, the runs that have voxel spacing ``voxel_size`` (copick's exact rule); the others with why."""
    found, skipped = [], {}
    for rid in run_ids:
        if _voxel_spacing(root.get_run(rid), voxel_size) is None:
            skipped[rid] = f"no voxel spacing {voxel_size:g} A"
        else:
            found.append(rid)
    return found, skipped


def runs_with_tomogram(root, voxel_size: float, tomo_alg: str, run_ids=None) -> tuple[list[str], dict[str, str]]:
    """Runs that have tomogram ``tomo_alg@voxel_size``; the others map to the reason they were skipped."""
    candidates, skipped = _select_runs(root, run_ids)
    found = []
    for rid in candidates:
        vs = _voxel_spacing(root.get_run(rid), voxel_size)
        if vs is None:
            skipped[rid] = f"no voxel spacing {voxel_size:g} A"
        elif not vs.get_tomograms(tomo_alg):
            skipped[rid] = f"no tomogram '{tomo_alg}' at {voxel_size:g} A"
        else:
            found.append(rid)
    return found, skipped


