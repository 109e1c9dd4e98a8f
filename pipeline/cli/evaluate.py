"""Score predicted picks against ground truth, with octopi's rule or the CZII challenge rule.

octopi rule (default): a prediction is a true positive when its nearest ground-truth point is closer than
distance-threshold-scale x radius (default 0.8); ground-truth points with no prediction that close are false
negatives; not one-to-one. czii rule: each ground-truth particle counts at most once, threshold 0.5 x radius
(inclusive). Both: F-beta per object over all runs, then the mean weighted by the objects' metadata "weight".

Writes <save-path>/average_metrics.yaml and metrics.json (octopi's structure) and scores.png, and prints a table.

Example:
  tomopick evaluate -c config.json -gtuid data-portal -gtsid 0 -puid octopi -psid 1 -o scores
"""

from __future__ import annotations

from pipeline.cli.common import add_config_arg


def _list_arg(value):
    """``a,b``, ``[a,b]`` or ``a b`` -> list; None -> None."""
    from pipeline.selectors import parse_run_ids

    if value is None:
        return None
    return parse_run_ids(str(value).strip().strip("[]").replace(" ", ","))


def add_arguments(p) -> None:
    add_config_arg(p)
    p.add_argument("-gtuid", "--ground-truth-user-id", required=True, help="user id of the ground-truth picks")
    p.add_argument(
        "-gtsid", "--ground-truth-session-id", default=None,
        help="session id of the ground-truth picks (default: any session, as octopi)",
    )
    p.add_argument("-puid", "--predict-user-id", default="octopi", help="user id of the predicted picks (octopi)")
    p.add_argument("-psid", "--predict-session-id", default="1", help="session id of the predicted picks (1)")
    p.add_argument(
        "-o", "--output", "--save-path", dest="save_path", default="scores",
        help="folder for average_metrics.yaml, metrics.json and scores.png (default: scores)",
    )
    p.add_argument(
        "-names", "--object-names", default=None,
        help="comma-separated particle objects to score (default: every particle object of the project)",
    )
    p.add_argument(
        "-runs", "--run-ids", default=None,
        help="comma-separated run names (default: every run of the project; runs without picks count as empty)",
    )
    p.add_argument("-fb", "--fbeta", type=float, default=4, help="beta of the F-beta score (default 4, as the challenge)")
    p.add_argument(
        "-dts", "--distance-threshold-scale", type=float, default=None,
        help="match threshold as a fraction of the particle radius (default 0.8 for octopi, 0.5 for czii)",
    )
    p.add_argument("-vs", "--voxel-size", type=float, default=10.0, help="voxel size in Angstrom (default 10)")
    p.add_argument(
        "--metric", choices=("octopi", "czii"), default="octopi",
        help="octopi: octopi 1.7's rule (not one-to-one); czii: the CZII Kaggle rule (each particle once)",
    )


def run(args) -> int:
    from pipeline import copick_io
    from pipeline.evaluate import evaluate_project, format_table, select_objects, write_reports
    from pipeline.selectors import parse_voxel_size

    voxel_size = parse_voxel_size(args.voxel_size, where="--voxel-size")
    root = copick_io.open_project(args.config)
    objects = select_objects(copick_io.particle_objects(root), _list_arg(args.object_names))
    result = evaluate_project(
        root,
        objects,
        _list_arg(args.run_ids),
        gt_user_id=args.ground_truth_user_id,
        gt_session_id=args.ground_truth_session_id,
        pred_user_id=args.predict_user_id,
        pred_session_id=args.predict_session_id,
        voxel_size=voxel_size,
        metric=args.metric,
        beta=args.fbeta,
        distance_threshold_scale=args.distance_threshold_scale,
        config_path=args.config,
        progress=True,
    )
    paths = write_reports(result, args.save_path)
    print(format_table(result))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
