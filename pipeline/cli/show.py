"""Render tomogram slices with ground-truth and predicted picks drawn on them, to PNG, to check picks by eye.

Each pick whose sphere (the object's radius) the slice cuts is drawn as a circle of the cut radius: ground truth
solid, predictions dashed. When the run has ground truth, colours say how the evaluation (--metric, -dts, as
`tomopick evaluate`) sees each pick: green matched (a ground-truth particle and the pick on it), yellow missed
(ground truth without a pick), magenta false (a pick without ground truth), and a marker per object at each
centre; without ground truth, one colour per object. A scale bar in nm sits in the lower left corner. Slices are
chosen through the picks (evenly spaced quantiles of their z) unless --z is given. One PNG per run and slice:
<output>/<run>_z<z>.png.

Example:
  tomopick show -c config.json -runs TS_0_0 -gtuid data-portal -gtsid 0 -puid octopi -psid 1 -o show
  tomopick show -c config.json -runs TS_0_0 --z 40,60 --slab 3
"""

from __future__ import annotations

from pipeline.cli.common import add_config_arg, add_tomo_args, d
from pipeline.config import EvaluateConfig, LocalizeConfig, ShowConfig, choices


def add_arguments(p) -> None:
    add_config_arg(p)
    p.add_argument(
        "-runs", "--run-ids", default=None,
        help="comma-separated run names (default: the first run that has the tomogram)",
    )
    add_tomo_args(p)
    p.add_argument("-gtuid", "--ground-truth-user-id", default=None,
                   help=f"user id of the ground truth {d(EvaluateConfig, 'ground_truth_user_id')}")
    p.add_argument("-gtsid", "--ground-truth-session-id", default=None,
                   help="session id of the ground truth (default: any)")
    p.add_argument("-puid", "--predict-user-id", dest="pick_user_id", default=None,
                   help=f"user id of the predicted picks {d(LocalizeConfig, 'pick_user_id')}")
    p.add_argument("-psid", "--predict-session-id", dest="pick_session_id", default=None,
                   help=f"session id of the predicted picks {d(LocalizeConfig, 'pick_session_id')}")
    p.add_argument("-names", "--object-names", default=None, help="comma-separated objects to draw (default: all)")
    p.add_argument("--z", default=None, help="comma-separated z slice indices (default: chosen through the picks)")
    p.add_argument("-n", "--num-slices", type=int, default=None,
                   help=f"slices per run when --z is not given {d(ShowConfig, 'num_slices')}")
    p.add_argument("--slab", type=int, default=None,
                   help=f"average this many slices around each z for contrast {d(ShowConfig, 'slab')}")
    p.add_argument("-o", "--output", default=None, help=f"folder for the PNGs {d(ShowConfig, 'output')}")
    p.add_argument("--metric", choices=choices("evaluate", "metric"), default=None,
                   help=f"the rule that decides matched / missed / false, as evaluate {d(EvaluateConfig, 'metric')}")
    p.add_argument("-dts", "--distance-threshold-scale", type=float, default=None,
                   help="match threshold as a fraction of the radius (default 0.8 for octopi, 0.5 for czii)")


def _int_list(value, flag: str) -> list[int]:
    from pipeline.errors import ConfigError

    try:
        return [int(v) for v in str(value).strip("[]").replace(" ", ",").split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {value!r}: expected comma-separated integers, e.g. 40,60") from None


def run(args) -> int:
    import logging
    from pathlib import Path

    from pipeline import copick_io, plots
    from pipeline.cli.common import list_arg
    from pipeline.config import RunConfig, build, default
    from pipeline.errors import ConfigError, RunError
    from pipeline.objects import select_objects
    from pipeline.selectors import TomoSelector, resolve_tomo

    def given(**kw):
        return {k: v for k, v in kw.items() if v is not None}

    source = "tomopick show"
    ev = build(EvaluateConfig, given(ground_truth_user_id=args.ground_truth_user_id,
                                     ground_truth_session_id=args.ground_truth_session_id, metric=args.metric,
                                     distance_threshold_scale=args.distance_threshold_scale), source, "evaluate")
    loc = build(LocalizeConfig, given(pick_user_id=args.pick_user_id, pick_session_id=args.pick_session_id),
                source, "localize")
    show = build(ShowConfig, given(num_slices=args.num_slices, slab=args.slab, output=args.output), source)
    tomo = resolve_tomo(args.voxel_size, args.tomo_alg, args.tomo_uri)
    tomo = TomoSelector(tomo.tomo_alg or default(RunConfig, "tomo_alg"),
                        tomo.voxel_size or default(RunConfig, "voxel_size"))
    if show.num_slices < 1:
        raise ConfigError(f"--num-slices {show.num_slices}: need at least 1")
    if show.slab < 1:
        raise ConfigError(f"--slab {show.slab}: need at least 1 slice")
    log = logging.getLogger("tomopick.show")
    root = copick_io.open_project(args.config)
    objects = select_objects(copick_io.particle_objects(root), list_arg(args.object_names))
    run_ids, skipped = copick_io.runs_with_tomogram(root, tomo.voxel_size, tomo.tomo_alg, list_arg(args.run_ids))
    for rid, reason in skipped.items():
        log.warning("run %s skipped: %s", rid, reason)
    if not run_ids:
        raise RunError(f"no run has tomogram {tomo.uri()} (asked for: {args.run_ids or 'any run'}); check --tomo-uri")
    if args.run_ids is None:
        run_ids = run_ids[:1]
    from pipeline.evaluate_io import check_pick_sets_exist

    for what, ids in (("ground-truth", (ev.ground_truth_user_id, ev.ground_truth_session_id)),
                      ("predicted", (loc.pick_user_id, loc.pick_session_id))):
        try:  # drawn all the same (an empty layer), but a typo'd id should not pass for "all missed"
            check_pick_sets_exist(root, run_ids, {what: ids}, args.config)
        except RunError as exc:
            log.warning("%s; drawing that layer empty", exc)
    z_asked = _int_list(args.z, "--z") if args.z is not None else None

    out_dir = Path(show.output)
    written = []
    for run_id in run_ids:
        depth = copick_io.tomogram_shape(root, run_id, tomo.voxel_size, tomo.tomo_alg)[0]
        found = {}
        for obj in objects:
            for source, user_id, session_id in (
                ("ground truth", ev.ground_truth_user_id, ev.ground_truth_session_id),
                ("prediction", loc.pick_user_id, loc.pick_session_id),
            ):
                found[obj.name, source] = copick_io.read_picks(root, run_id, obj.name, user_id, session_id,
                                                               tomo.voxel_size)
        with_gt = any(len(v) for (_, source), v in found.items() if source == "ground truth")
        layers = []
        for i, obj in enumerate(objects):
            radius_vox = obj.radius / tomo.voxel_size
            gt, pred = found[obj.name, "ground truth"], found[obj.name, "prediction"]
            matched = (plots.match_outcomes(pred, gt, radius_vox, ev.metric, ev.distance_threshold_scale)
                       if with_gt else (None, None))
            for source, centers, hit in (("ground truth", gt, matched[1]), ("prediction", pred, matched[0])):
                if len(centers):
                    layers.append(plots.PickLayer(centers, radius_vox, obj.name, source, plots.object_color(i),
                                                  hit, plots.object_marker(i)))
        if z_asked is not None:
            bad = [z for z in z_asked if not 0 <= z < depth]
            if bad:
                raise ConfigError(f"--z {bad}: run '{run_id}' has z slices 0 to {depth - 1}")
            z_list = z_asked
        else:
            z_list = plots.choose_slices([layer.centers_zyx_vox for layer in layers], depth, show.num_slices)
        if not layers:
            log.warning("run %s: no picks of %s found for either source", run_id, [o.name for o in objects])
        volume = copick_io.read_tomogram(root, run_id, tomo.voxel_size, tomo.tomo_alg)
        for z in z_list:
            path = out_dir / f"{run_id}_z{z:04d}.png"
            plots.render_slice(
                volume, z, layers, path, title=f"{run_id} {tomo.uri()}", slab=show.slab, voxel_size=tomo.voxel_size
            )
            written.append(path)
        del volume
        log.info("run %s: %d slices, %d pick layers", run_id, len(z_list), len(layers))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
