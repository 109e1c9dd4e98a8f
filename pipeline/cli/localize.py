"""Turn multilabel segmentations into particle picks: watershed (default) or centre of mass, as octopi localize;
or class probabilities, with peaks.

For every run that has the segmentation (others are skipped with a warning) and every particle object: the
class's mask is opened, split by a distance-transform watershed (or into connected components with --method
com), regions between the volumes of spheres of radius-min-scale x radius and radius-max-scale x radius are
kept, their centroids merged within radius-min-scale x radius and dropped within 0.5% of the border, and the
picks written as NAME picks of --pick-user-id / --pick-session-id (identity orientations). Runs picked
already by an earlier job are skipped (a job resumes where it stopped) unless their segmentation or
probability file was written after their picks; --overwrite redoes them, and picks
that tomopick did not write are never replaced without it. This is the driver of `run_all.py` with only the localize stage on.

Label ids come from the segmentation's log (<overlay_root>/logs/segment-{user}_{session}_{name}.yaml) when it
exists, else from the copick config. Scores: watershed/com write the voxel count of the region(s) that made a
pick divided by the voxels of a sphere of the object's radius: a size ratio, not a confidence (the regions are
those of the opened mask, so a particle segmented at 0.6 of its radius scores about 0.6^3 = 0.2; the demo's
picks score 0.13-0.30). peaks (-m peaks --probabilities DIR) picks local maxima of each class's smoothed
probability above a per-class threshold and writes the peak probability as the score (0-1, a confidence);
tune its settings with `tomopick tune`; where a larger class's peak sits on a particle a smaller class also
claims and the segmented particle is too small for the larger class, the larger class's peak is dropped
(--no-overlap-check keeps it). Its flags (--probabilities, --threshold, --smoothing, --peak-window,
--no-overlap-check, --tuned) are refused with another method, which would ignore them.

Examples:
  tomopick localize -c config.json -sinfo predict,octopi,1 -vs 10
  tomopick localize -c config.json --seg-uri predict:octopi/1 -m com -obj ribosome,apo-ferritin --runIDs TS_1
"""

from __future__ import annotations

from pipeline.cli.common import (
    add_config_arg,
    add_device_arg,
    add_overwrite_arg,
    add_run_ids_arg,
    d,
    file_arg,
)
from pipeline.config import LocalizeConfig, RunConfig, choices, default
from pipeline.config_checks import PER_CLASS

# the flags that only a method reading class probabilities (peaks) uses -> their dest
PEAKS_FLAGS = {"--probabilities": "probabilities", "--threshold": "threshold", "--smoothing": "smoothing",
               "--peak-window": "peak_window", "--no-overlap-check": "overlap_check", "--tuned": "tuned"}
PER_CLASS_KEYS = {flag: key for key, (flag, _, _) in PER_CLASS.items()}  # flag -> its per-class localize key


def add_arguments(p) -> None:
    add_config_arg(p)
    p.add_argument("-m", "--method", type=str.lower, choices=choices("localize", "method"), default=None,
                   help=f"watershed splits touching particles; com: one pick per connected component; peaks: local "
                        f"maxima of the class probabilities (needs --probabilities) {d(LocalizeConfig, 'method')}")
    p.add_argument("--probabilities", default=None, metavar="FOLDER",
                   help="peaks: read each run's class probabilities from FOLDER/<run>.h5 (written by `tomopick "
                        "segment --save-probabilities FOLDER`) instead of a segmentation")
    p.add_argument("--threshold", default=None, metavar="T | NAME=T,...",
                   help="peaks: lowest peak probability kept, one value or per object, e.g. 0.3 or "
                        f"default=0.25,ribosome=0.4 (default {default(LocalizeConfig, 'thresholds')['default']:g})")
    p.add_argument("--smoothing", default=None, metavar="S | NAME=S,...",
                   help="peaks: Gaussian sigma in units of the object's radius, one value or per object "
                        f"(default {default(LocalizeConfig, 'smoothing')['default']:g})")
    p.add_argument("--peak-window", default=None, metavar="W | NAME=W,...",
                   help="peaks: side of the local-maximum window in units of the object's radius, one value or per "
                        f"object (default {default(LocalizeConfig, 'peak_window')['default']:g})")
    p.add_argument("--no-overlap-check", dest="overlap_check", action="store_const", const=False, default=None,
                   help="peaks: keep a larger class's peak even where a smaller class's peak claims the same particle "
                        "and the segmented particle is too small for the larger class (by default it is dropped: "
                        "README, 'peaks')")
    p.add_argument("--tuned", default=None, metavar="YAML", type=file_arg("YAML written by `tomopick tune`",
                                                                          (".yaml", ".yml")),
                   help="peaks settings written by `tomopick tune`, method peaks included (flags given here win "
                        "over them: --threshold ribosome=0.5 changes ribosome's only; a default given, e.g. "
                        "--threshold 0.3, replaces the file's per-class values)")
    p.add_argument("-sinfo", "--seg-info", default=None,
                   help=f"segmentation to read: NAME,USER_ID,SESSION_ID {d(LocalizeConfig, 'segmentation')}")
    p.add_argument("-suri", "--seg-uri", default=None, help="octopi 1.7 spelling of --seg-info, e.g. predict:octopi/1")
    p.add_argument("-vs", "--voxel-size", type=float, default=None,
                   help=f"voxel size in Angstrom {d(RunConfig, 'voxel_size')}")
    add_run_ids_arg(p, "--runIDs")
    p.add_argument("-rmin", "--radius-min-scale", type=float, default=None,
                   help="keep regions larger than a sphere of rmin x radius; merge picks closer than that "
                        f"{d(LocalizeConfig, 'radius_min_scale')}")
    p.add_argument("-rmax", "--radius-max-scale", type=float, default=None,
                   help=f"keep regions smaller than a sphere of rmax x radius {d(LocalizeConfig, 'radius_max_scale')}")
    p.add_argument("-fs", "--filter-size", type=int, default=None,
                   help=f"maximum-filter side (voxels) for the watershed seeds {d(LocalizeConfig, 'filter_size')}")
    p.add_argument("-obj", "--pick-objects", default=None,
                   help="comma-separated objects to pick (default: every particle object in the segmentation)")
    p.add_argument("-np", "--n-procs", type=int, default=None,
                   help=f"CPU worker threads (object classes in parallel) {d(LocalizeConfig, 'n_procs')}")
    p.add_argument("-psid", "--pick-session-id", default=None,
                   help=f"session id of the written picks {d(LocalizeConfig, 'pick_session_id')}")
    p.add_argument("-pui", "--pick-user-id", default=None,
                   help=f"user id of the written picks {d(LocalizeConfig, 'pick_user_id')}")
    p.add_argument("-lbl", "--label", type=int, default=None,
                   help="read this one label value of the segmentation for every object picked (e.g. 1 for a "
                        "binary mask, with -obj naming the object); the labels of the segmentation log and the "
                        "copick config are then not used (octopi 1.7's -lbl); a value the segmentation's log does "
                        "not list is refused")
    add_device_arg(p)
    add_overwrite_arg(p, "picks")


def run(args) -> int:
    from pipeline.cli.common import list_arg, run_job
    from pipeline.config import overlay
    from pipeline.selectors import resolve_seg

    tuned = read_tuned(args.tuned) if args.tuned else None
    seg = resolve_seg(args.seg_info, args.seg_uri)
    doc = overlay(
        {"copick_config": args.config, "stages": ["localize"]},
        voxel_size=args.voxel_size, run_ids=list_arg(args.run_ids), device=args.device,
        output={"overwrite": args.overwrite, "on_error": args.on_error},
        localize={"method": args.method, "segmentation": seg.info() if seg else None,
                  "radius_min_scale": args.radius_min_scale, "radius_max_scale": args.radius_max_scale,
                  "filter_size": args.filter_size, "pick_objects": list_arg(args.pick_objects),
                  "n_procs": args.n_procs, "pick_user_id": args.pick_user_id,
                  "pick_session_id": args.pick_session_id, "label": args.label, "probabilities": args.probabilities,
                  "thresholds": args.threshold, "smoothing": args.smoothing, "peak_window": args.peak_window,
                  "overlap_check": args.overlap_check, "tuned": args.tuned},
    )
    return run_job(doc, "tomopick localize", check=lambda cfg: check_flags(args, cfg, tuned))


def read_tuned(path_text: str) -> dict:
    """The ``localize`` block of a ``--tuned`` file, checked here so that an error in it names the file (the
    config build would blame the command line)."""
    from pathlib import Path

    from pipeline.config_checks import read_tuned_block
    from pipeline.errors import ConfigError

    path = Path(path_text).expanduser()
    source = f"--tuned file '{path}'"
    if not path.is_file():
        raise ConfigError(f"{source}: no such file; give the YAML that `tomopick tune -o FILE` wrote")
    return read_tuned_block(path, source)


def check_flags(args, cfg, tuned: dict | None) -> None:
    """What the config build cannot tell: flags the method does not use, names and labels that the project or
    the segmentation lack. Each error names where the value came from (a flag, or the --tuned file)."""
    from pipeline import copick_io
    from pipeline.errors import ConfigError
    from pipeline.localize.methods import PROBABILITIES, get_method, method_names

    method = cfg.localize.method
    if get_method(method).needs != PROBABILITIES:
        given = [flag for flag, dest in PEAKS_FLAGS.items() if getattr(args, dest) is not None]
        if given:
            peaks = [m for m in method_names() if get_method(m).needs == PROBABILITIES]
            why = ("-m" if args.method else "the --tuned file's 'method'" if tuned and "method" in tuned
                   else "the default")
            raise ConfigError(
                f"tomopick localize: {', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to -m "
                f"{'/'.join(peaks)}, which picks from class probabilities, but the method is {method} ({why}), "
                f"which would ignore {'it' if len(given) == 1 else 'them'}; add -m {peaks[0]}, or leave "
                f"{'it' if len(given) == 1 else 'them'} out"
            )
    root = copick_io.open_project(cfg.copick_config)
    _check_per_class_names(args, cfg, tuned, {o.name for o in copick_io.particle_objects(root)})
    if cfg.localize.label is not None:
        _check_label(cfg, root)


def _check_per_class_names(args, cfg, tuned: dict | None, objects: set[str]) -> None:
    """An object named in --threshold/--smoothing/--peak-window or in the --tuned file is one of the project's:
    a misspelled name would leave that class at the default without a word."""
    from pipeline.config import build
    from pipeline.errors import ConfigError

    for flag, key in PER_CLASS_KEYS.items():
        value = getattr(args, PEAKS_FLAGS[flag])
        named = {}
        if value is not None:
            named[f"tomopick localize: 'localize.{key}' ({flag})"] = set(
                getattr(build(LocalizeConfig, {key: value}, flag, "localize"), key))
        if tuned and isinstance(tuned.get(key), dict):
            named[f"--tuned file '{args.tuned}': 'localize.{key}'"] = set(map(str, tuned[key]))
        for where, names in named.items():
            unknown = sorted(n for n in names if n != "default" and n not in objects)
            if unknown:
                raise ConfigError(
                    f"{where} names {', '.join(map(repr, unknown))}, not a particle object of {cfg.copick_config}; "
                    f"its particle objects: {', '.join(sorted(objects)) or 'none'} (or 'default' for every other)"
                )


def _check_label(cfg, root) -> None:
    """-lbl VALUE is a label the segmentation has: another value reads an empty mask, and every run would be
    marked done with 0 picks. The labels are those of the segmentation's log, when it has one."""
    from pipeline import overlay_files
    from pipeline.errors import ConfigError
    from pipeline.run.select import input_segmentation

    seg = input_segmentation(cfg)
    labels = overlay_files.read_segmentation_labels(root, seg) if seg is not None else None
    if labels is None or cfg.localize.label in labels.values():
        return
    listing = ", ".join(f"{name} {value}" for name, value in sorted(labels.items(), key=lambda kv: kv[1]))
    raise ConfigError(
        f"-lbl/--label {cfg.localize.label}: segmentation {seg.uri()} has no such label; its log "
        f"{overlay_files.segmentation_log_path(root, seg)} lists {listing}; give one of them (with -obj naming "
        "the object)"
    )
