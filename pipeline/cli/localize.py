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
tune its settings with `tomopick tune`.

Examples:
  tomopick localize -c config.json -sinfo predict,octopi,1 -vs 10
  tomopick localize -c config.json --seg-uri predict:octopi/1 -m com -obj ribosome,apo-ferritin --runIDs TS_1
"""

from __future__ import annotations

from pipeline.cli.common import add_config_arg, add_device_arg, add_overwrite_arg, add_run_ids_arg, d
from pipeline.config import LocalizeConfig, RunConfig, choices, default


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
    p.add_argument("--tuned", default=None, metavar="YAML",
                   help="peaks settings written by `tomopick tune` (flags given here win over them)")
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
                        "copick config are then not used (octopi 1.7's -lbl)")
    add_device_arg(p)
    add_overwrite_arg(p, "picks")


def run(args) -> int:
    from pipeline.cli.common import list_arg, run_job
    from pipeline.config import overlay
    from pipeline.selectors import resolve_seg

    seg = resolve_seg(args.seg_info, args.seg_uri)
    doc = overlay(
        {"copick_config": args.config, "stages": ["localize"]},
        voxel_size=args.voxel_size, run_ids=list_arg(args.run_ids), device=args.device,
        output={"overwrite": args.overwrite},
        localize={"method": args.method, "segmentation": seg.info() if seg else None,
                  "radius_min_scale": args.radius_min_scale, "radius_max_scale": args.radius_max_scale,
                  "filter_size": args.filter_size, "pick_objects": list_arg(args.pick_objects),
                  "n_procs": args.n_procs, "pick_user_id": args.pick_user_id,
                  "pick_session_id": args.pick_session_id, "label": args.label, "probabilities": args.probabilities,
                  "thresholds": args.threshold, "smoothing": args.smoothing, "peak_window": args.peak_window,
                  "tuned": args.tuned},
    )
    return run_job(doc, "tomopick localize")
