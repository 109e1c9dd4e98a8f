"""Score predicted picks against ground truth, with octopi's rule or the CZII challenge rule.

octopi rule (default): a prediction is a true positive when its nearest ground-truth point is closer than
distance-threshold-scale x radius (default 0.8); ground-truth points with no prediction that close are false
negatives; not one-to-one. czii rule: each ground-truth particle counts at most once, threshold 0.5 x radius
(inclusive). Both: F-beta per object over all runs, then the mean weighted by the objects' metadata "weight".

Writes <save-path>/average_metrics.yaml and metrics.json (octopi's structure) and scores.png, and prints a table.

octopi 1.7's flags are accepted as octopi spells them, with its defaults (-gtuid, -gtsid, -puid, -psid,
--run-ids, -dts, -names, -o, -fb, and -v/--verbose, which takes a value: -v True).

Examples:
  tomopick evaluate -c config.json -gtuid data-portal -gtsid 0 -puid octopi -psid 1 -o scores
  tomopick evaluate -c config.json -gtuid curation -gtsid 0 --metric czii -v True
"""

from __future__ import annotations

from pipeline.cli.common import add_config_arg, argparse, d
from pipeline.config import EvaluateConfig, LocalizeConfig, RunConfig, choices


def add_arguments(p) -> None:
    add_config_arg(p)
    p.add_argument("-gtuid", "--ground-truth-user-id", default=None,
                   help=f"user id of the ground-truth picks {d(EvaluateConfig, 'ground_truth_user_id')}")
    p.add_argument("-gtsid", "--ground-truth-session-id", default=None,
                   help="session id of the ground-truth picks (default: any session of that user, as octopi)")
    p.add_argument("-puid", "--predict-user-id", dest="pick_user_id", default=None,
                   help=f"user id of the predicted picks {d(LocalizeConfig, 'pick_user_id')}")
    p.add_argument("-psid", "--predict-session-id", dest="pick_session_id", default=None,
                   help=f"session id of the predicted picks {d(LocalizeConfig, 'pick_session_id')}")
    p.add_argument("-o", "--output", "--save-path", dest="save_path", default=None,
                   help=f"folder for average_metrics.yaml, metrics.json and scores.png {d(EvaluateConfig, 'save_path')}")
    p.add_argument("-names", "--object-names", default=None,
                   help="comma-separated particle objects to score (default: every particle object of the project)")
    p.add_argument("-runs", "--run-ids", default=None,
                   help="comma-separated run names (default: every run of the project; runs without picks count as empty)")
    p.add_argument("-fb", "--fbeta", dest="beta", type=float, default=None,
                   help=f"beta of the F-beta score {d(EvaluateConfig, 'beta')}, as the challenge")
    p.add_argument("-dts", "--distance-threshold-scale", type=float, default=None,
                   help="match threshold as a fraction of the particle radius (default 0.8 for octopi, 0.5 for czii)")
    p.add_argument("-vs", "--voxel-size", type=float, default=None,
                   help=f"voxel size in Angstrom {d(RunConfig, 'voxel_size')}")
    p.add_argument("-v", "--verbose", dest="verbose_picks", type=octopi_bool, default=None, metavar="BOOL",
                   help="true: say, per run, which objects have no ground-truth or no predicted picks and which "
                        "pick sets (user/session) the run has instead (octopi's -v True; default false). A value, "
                        "as in octopi: -v True, -v 1")
    p.add_argument("--min-score", type=float, default=None,
                   help="leave out predicted picks scored lower: for peaks the peak probability, for watershed/com "
                        "region voxels / sphere voxels (scores.png draws precision and recall over the score)")
    p.add_argument("--metric", choices=choices("evaluate", "metric"), default=None,
                   help="octopi: octopi 1.7's rule (not one-to-one); czii: the CZII Kaggle rule (each particle once) "
                        f"{d(EvaluateConfig, 'metric')}")


def run(args) -> int:
    from pathlib import Path

    from pipeline import copick_io
    from pipeline.cli.common import known_run_ids, list_arg
    from pipeline.config import config_from_dict, overlay
    from pipeline.errors import ConfigError
    from pipeline.run import evaluate_runs

    if args.save_path and Path(args.save_path).expanduser().is_file():  # found now, not after the scoring
        raise ConfigError(f"tomopick evaluate: -o/--output '{args.save_path}' is a file; it names the folder for "
                          "average_metrics.yaml, metrics.json and scores.png: give a folder (default scores)")
    doc = overlay(
        {"copick_config": args.config, "stages": [], "evaluate": {}},
        voxel_size=args.voxel_size,
        localize={"pick_user_id": args.pick_user_id, "pick_session_id": args.pick_session_id},
        evaluate={"ground_truth_user_id": args.ground_truth_user_id,
                  "ground_truth_session_id": args.ground_truth_session_id, "metric": args.metric,
                  "beta": args.beta, "distance_threshold_scale": args.distance_threshold_scale,
                  "save_path": args.save_path, "object_names": list_arg(args.object_names),
                  "min_score": args.min_score},
    )
    cfg = config_from_dict(doc, source="tomopick evaluate")
    root = copick_io.open_project(cfg.copick_config)
    run_ids = known_run_ids(root, list_arg(args.run_ids), cfg.copick_config)  # as segment and localize do
    objects = copick_io.particle_objects(root)
    result, table, paths = evaluate_runs(cfg, root, objects, run_ids, None, progress=True)
    if args.verbose_picks:
        report_missing_picks(root, result, cfg)
    print(table)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def octopi_bool(text: str) -> bool:
    """click's BOOL, as octopi's ``-v/--verbose`` takes it: 1/0, true/false, t/f, yes/no, y/n, on/off."""
    value = str(text).strip().lower()
    if value in ("1", "true", "t", "yes", "y", "on"):
        return True
    if value in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean; use true or false (1/0, yes/no, on/off)")


def report_missing_picks(root, result, cfg) -> None:
    """One line per run that lacks ground truth or predictions of an object, with the pick sets it has."""
    import logging

    from pipeline import copick_io

    log = logging.getLogger("tomopick.evaluate")
    ev, loc = cfg.evaluate, cfg.localize
    for run_id, counts in result.per_run_counts.items():
        no_gt = [name for name, c in counts.items() if c.tp + c.fn == 0]
        no_pred = [name for name, c in counts.items() if c.tp + c.fp == 0]
        if not (no_gt or no_pred):
            continue
        sets = copick_io.pick_sets(root, {run_id})
        have = ", ".join(f"{u}/{s} ({n})" for (u, s), n in sets.items()) or "none"
        if no_gt:
            log.info("run %s: no ground truth %s/%s for %s", run_id, ev.ground_truth_user_id,
                     ev.ground_truth_session_id or "*", ", ".join(no_gt))
        if no_pred:
            log.info("run %s: no predicted picks %s/%s for %s", run_id, loc.pick_user_id, loc.pick_session_id,
                     ", ".join(no_pred))
        log.info("run %s: its pick sets (user/session and files): %s", run_id, have)
