"""Turn multilabel segmentations into particle picks: watershed (default) or centre of mass, as octopi localize.

For every run that has the segmentation (others are skipped with a warning) and every particle object: the
class's mask is opened, split by a distance-transform watershed (or into connected components with --method
com), regions between the volumes of spheres of radius-min-scale x radius and radius-max-scale x radius are
kept, their centroids merged within radius-min-scale x radius and dropped within 0.5% of the border, and the
picks written as NAME picks of --pick-user-id / --pick-session-id (identity orientations).

Label ids come from the segmentation's log (<overlay_root>/logs/segment-{user}_{session}_{name}.yaml) when it
exists, else from the copick config. Each pick's score is the voxel count of the region(s) that made it divided
by the voxels of a sphere of the object's radius (about 1 for a whole particle, well below 1 for a fragment).

Examples:
  tomopick localize -c config.json -sinfo predict,octopi,1 -vs 10
  tomopick localize -c config.json --seg-uri predict:octopi/1 -m com -obj ribosome,apo-ferritin --runIDs TS_1
"""

from __future__ import annotations

import logging
import time

from pipeline.cli.common import add_config_arg, add_device_arg, add_run_ids_arg

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    add_config_arg(p)
    p.add_argument("-m", "--method", choices=("watershed", "com"), default="watershed",
                   help="watershed (default): split touching particles by a distance-transform watershed; "
                        "com: one pick per connected component")
    p.add_argument("-sinfo", "--seg-info", default=None,
                   help="segmentation NAME,USER_ID,SESSION_ID (default predict,octopi,1)")
    p.add_argument("-suri", "--seg-uri", default=None,
                   help="octopi 1.7 spelling of --seg-info: NAME, NAME:USER_ID or NAME:USER_ID/SESSION_ID")
    p.add_argument("-vs", "--voxel-size", type=float, default=10.0, help="voxel size in Angstrom (default 10)")
    add_run_ids_arg(p, "--runIDs")
    p.add_argument("-rmin", "--radius-min-scale", type=float, default=0.5,
                   help="smallest region kept: a sphere of this x the object's radius; also the merge "
                        "distance (default 0.5)")
    p.add_argument("-rmax", "--radius-max-scale", type=float, default=1.0,
                   help="largest region kept: a sphere of this x the object's radius (default 1.0)")
    p.add_argument("-fs", "--filter-size", type=int, default=10,
                   help="side in voxels of the maximum filter that finds watershed seeds (default 10)")
    p.add_argument("-obj", "--pick-objects", default=None,
                   help="comma-separated objects to pick (default: every particle object of the segmentation)")
    p.add_argument("-np", "--n-procs", type=int, default=8,
                   help="CPU worker threads; object classes run in parallel (default 8)")
    p.add_argument("-psid", "--pick-session-id", default="1", help="session id of the written picks (default 1)")
    p.add_argument("-pui", "--pick-user-id", default="octopi", help="user id of the written picks (default octopi)")
    add_device_arg(p)


def _names(value) -> list[str] | None:
    from pipeline.selectors import parse_run_ids

    if value is None:
        return None
    return parse_run_ids(str(value).strip().strip("[]").replace(" ", ","))


def resolve_objects(project_objects, log_labels: dict[str, int] | None, wanted: list[str] | None, where: str):
    """ParticleObjects to pick, with label ids from the segmentation log when it has them.

    ``project_objects``: the copick particle objects (radius, weight). Without ``wanted``: the log's objects
    (those that are particles of the project) or, without a log, every particle object.
    """
    from dataclasses import replace

    from pipeline.errors import ConfigError

    by_name = {o.name: o for o in project_objects}
    if wanted is None:
        if log_labels is None:
            wanted = list(by_name)
        else:
            wanted = [name for name in log_labels if name in by_name]
            ignored = [name for name in log_labels if name not in by_name]
            if ignored:
                log.warning("segmentation labels %s are not particle objects of the project; not picking them",
                            ", ".join(ignored))
    chosen = []
    for name in wanted:
        if name not in by_name:
            in_log = log_labels is not None and name in log_labels
            raise ConfigError(
                f"object '{name}' is {'in the segmentation log but ' if in_log else ''}not a particle object of "
                f"{where}, so it has no radius to size its picks; particle objects: {', '.join(by_name) or 'none'}"
            )
        obj = by_name[name]
        if log_labels is not None and name in log_labels:
            obj = replace(obj, label=int(log_labels[name]))
        chosen.append(obj)
    if not chosen:
        raise ConfigError(f"no particle objects to pick in {where}; check --pick-objects and the segmentation's labels")
    return chosen


def _backend(device: str):
    """CLI --device -> (localize backend, reason); CUDA without CuPy fails at once with the reason."""
    from pipeline.device import cupy_available, resolve_device
    from pipeline.errors import DeviceError

    spec = (device or "auto").strip().lower()
    if spec == "cpu":
        return "cpu", None, "asked for cpu"
    if spec == "auto":
        if cupy_available():
            return "gpu", 0, "auto: CuPy sees a GPU"
        return "cpu", None, "auto: CuPy not importable or no GPU"
    choice = resolve_device(spec)
    if not cupy_available():
        raise DeviceError(
            f"--device {device}: the GPU localization needs CuPy (and cuCIM), which are not importable here; "
            "install the 'gpu' extra (pip install tomopick[gpu]) or use --device cpu"
        )
    return "gpu", choice.index, choice.reason


def _write_parameters(root, args, seg, objects, backend: str, reason: str):
    from pipeline import __version__, copick_io

    params = {
        "input": {"config": args.config, "seg_name": seg.name, "seg_user_id": seg.user_id,
                  "seg_session_id": seg.session_id, "voxel_size": float(args.voxel_size)},
        "output": {"pick_session_id": args.pick_session_id, "pick_user_id": args.pick_user_id},
        "parameters": {"method": args.method, "radius_min_scale": args.radius_min_scale,
                       "radius_max_scale": args.radius_max_scale, "filter_size": args.filter_size},
        "labels": {o.name: o.label for o in objects},
        "tomopick": {"version": __version__, "backend": backend, "backend_reason": reason,
                     "score": "region voxels / voxels of a sphere of the object's radius"},
    }
    return copick_io.write_overlay_log(root, f"localize-{args.pick_user_id}_{args.pick_session_id}.yaml", params)


def run(args) -> int:
    from tqdm import tqdm

    from pipeline import copick_io
    from pipeline.errors import RunError
    from pipeline.localize import localize
    from pipeline.localize.common import check_parameters
    from pipeline.selectors import parse_voxel_size, resolve_seg

    voxel_size = parse_voxel_size(args.voxel_size, where="--voxel-size")
    seg = resolve_seg(args.seg_info, args.seg_uri)
    check_parameters(args.method, args.filter_size, args.radius_min_scale, args.radius_max_scale, voxel_size, "auto")
    if args.n_procs < 1:
        from pipeline.errors import ConfigError

        raise ConfigError(f"--n-procs {args.n_procs}: need at least 1 worker")
    backend, gpu_index, reason = _backend(args.device)
    log.info("localization backend %s (%s)", backend, reason)

    root = copick_io.open_project(args.config)
    log_labels = copick_io.read_segmentation_labels(root, seg)
    if log_labels is None:
        log.info("no segmentation log for %s; label ids from the copick config", seg.uri())
    objects = resolve_objects(copick_io.particle_objects(root), log_labels, _names(args.pick_objects), args.config)
    run_ids, skipped = copick_io.runs_with_segmentation(root, voxel_size, seg, _names(args.run_ids))
    for rid, why in skipped.items():
        log.warning("skipping run %s: %s", rid, why)
    if not run_ids:
        raise RunError(
            f"{args.config}: no run has the segmentation {seg.uri()} at {voxel_size:g} A; "
            "check --seg-info/--seg-uri and --voxel-size, or run `tomopick segment` first"
        )
    params_path = _write_parameters(root, args, seg, objects, backend, reason)
    log.info("localizing %s in %d run(s) with %s (%s); parameters in %s",
             ", ".join(f"{o.name}={o.label}" for o in objects), len(run_ids), args.method, backend, params_path)

    device_context = None
    if backend == "gpu":
        import cupy

        device_context = cupy.cuda.Device(gpu_index or 0)
        device_context.__enter__()
    t_all = time.perf_counter()
    total = 0
    try:
        for rid in tqdm(run_ids, desc="localize", unit="run"):
            t0 = time.perf_counter()
            label_map = copick_io.read_segmentation(root, rid, voxel_size, seg)
            t_read = time.perf_counter() - t0
            picks = localize(
                label_map, objects, voxel_size, method=args.method, filter_size=args.filter_size,
                radius_min_scale=args.radius_min_scale, radius_max_scale=args.radius_max_scale,
                backend=backend, n_procs=args.n_procs,
            )
            t_loc = time.perf_counter() - t0 - t_read
            try:
                for obj in objects:
                    p = picks[obj.name]
                    copick_io.write_picks(root, rid, obj.name, p.centers_zyx_vox, voxel_size, args.pick_user_id,
                                          args.pick_session_id, scores=p.scores)
            except BaseException:
                # a run gets all its pick sets or none: undo the ones this run already wrote
                for obj in objects:
                    copick_io.remove_picks(root, rid, obj.name, args.pick_user_id, args.pick_session_id)
                raise
            n = sum(len(p) for p in picks.values())
            total += n
            log.info("%s: %d picks (%s) in %.1fs (read %.1fs, localize %.1fs, write %.1fs)", rid, n,
                     ", ".join(f"{k} {len(v)}" for k, v in picks.items()), time.perf_counter() - t0, t_read, t_loc,
                     time.perf_counter() - t0 - t_read - t_loc)
    finally:
        if device_context is not None:
            device_context.__exit__(None, None, None)
    log.info("localized %d run(s): %d picks in %.1fs, written as %s/%s", len(run_ids), total,
             time.perf_counter() - t_all, args.pick_user_id, args.pick_session_id)
    return 0
