"""Tune the peaks method on runs with ground truth: per-class threshold, smoothing and window for the best F-beta.

Reads each run's class probabilities from FOLDER/<run>.h5 (write them with `tomopick segment
--save-probabilities FOLDER`, or segment.save_probabilities in a run config) and its ground-truth picks; sweeps,
per object class, the peak threshold, the Gaussian smoothing (in units of the object's radius) and the
local-maximum window (in radii); prints each class's F-beta before (the settings given, else the defaults) and
after, with a leave-one-run-out estimate (each run scored with the settings tuned on the others: if it is well
below "after", the tuning fits these runs rather than the data). A class keeps the settings given unless another
setting gains at least 0.01 F-beta on at least --min-particles of its ground-truth particles (default 20): on
fewer, the gain is a pick or two and does not carry to other runs. Classes are tuned smallest first with
localize's overlap check (a larger class's peak on a smaller class's particle is dropped), each against the
smaller classes' tuned picks, so "after" is what localize gives with the tuned settings. -o FILE writes the tuned settings as a YAML
file whose localize block `tomopick localize --tuned FILE` and run configs (localize: {tuned: FILE}) read;
without -o the same YAML is printed after the table.

Example:
  tomopick tune -c config.json --probabilities probs -gtuid data-portal --metric czii -o tuned.yaml
"""

from __future__ import annotations

from pipeline.cli.common import add_config_arg, d, positive_int
from pipeline.config import EvaluateConfig, RunConfig, choices


def add_arguments(p) -> None:
    add_config_arg(p)
    p.add_argument("--probabilities", required=True, metavar="FOLDER", help="folder of <run>.h5 class probabilities")
    p.add_argument("-gtuid", "--ground-truth-user-id", default=None,
                   help=f"user id of the ground-truth picks {d(EvaluateConfig, 'ground_truth_user_id')}")
    p.add_argument("-gtsid", "--ground-truth-session-id", default=None,
                   help="session id of the ground-truth picks (default: any session of that user)")
    p.add_argument("--metric", choices=choices("evaluate", "metric"), default=None,
                   help=f"octopi's rule or the CZII challenge's {d(EvaluateConfig, 'metric')}")
    p.add_argument("-fb", "--fbeta", dest="beta", type=float, default=None,
                   help=f"beta of the F-beta score {d(EvaluateConfig, 'beta')}")
    p.add_argument("-dts", "--distance-threshold-scale", type=float, default=None,
                   help="match threshold as a fraction of the radius (default 0.8 octopi, 0.5 czii)")
    p.add_argument("-runs", "--run-ids", default=None,
                   help="comma-separated runs (default: every run with both probabilities and ground-truth picks; "
                        "one without ground truth is left out with a warning)")
    p.add_argument("-obj", "--pick-objects", default=None, help="comma-separated objects (default: all)")
    p.add_argument("-vs", "--voxel-size", type=float, default=None,
                   help=f"voxel size in Angstrom {d(RunConfig, 'voxel_size')}")
    p.add_argument("--threshold", default=None, metavar="T | NAME=T,...",
                   help="the settings to compare with (default: localize's): peak thresholds, one value or per object, "
                        "e.g. default=0.25,ribosome=0.4")
    p.add_argument("--smoothing", default=None, metavar="S | NAME=S,...", help="... smoothing (as localize)")
    p.add_argument("--peak-window", default=None, metavar="W | NAME=W,...", help="... window (as localize)")
    p.add_argument("--no-overlap-check", dest="overlap_check", action="store_const", const=False, default=None,
                   help="tune without the overlap check (as `tomopick localize --no-overlap-check`); the tuned block "
                        "records which")
    p.add_argument("--min-particles", type=positive_int("a number of ground-truth particles", least=0), default=None,
                   metavar="N",
                   help="tune a class only on at least N of its ground-truth particles in the runs (default 20)")
    p.add_argument("-o", "--output", default=None, metavar="YAML",
                   help="write the tuned localize block here (default: print it)")


def run(args) -> int:
    import logging
    import sys
    from pathlib import Path

    import yaml

    from pipeline import atomic, copick_io
    from pipeline.cli.common import known_run_ids, list_arg
    from pipeline.config import config_from_dict, overlay
    from pipeline.errors import ConfigError, RunError, name_list
    from pipeline.evaluate_io import check_pick_sets_exist
    from pipeline.probability_files import (
        check_fits_tomogram,
        probability_path,
        read_labels,
        read_probabilities,
        runs_with_probabilities,
        why_none_found,
    )
    from pipeline.run.select import objects_for_segmentation
    from pipeline.tune import MIN_PARTICLES, RunData, format_result, tune

    if args.output and Path(args.output).expanduser().is_dir():  # found now, not after the tuning
        raise ConfigError(f"tomopick tune: -o/--output '{args.output}' is a folder; give a file, e.g. "
                          f"{Path(args.output) / 'tuned.yaml'}")
    doc = overlay(
        {"copick_config": args.config, "stages": ["localize"], "evaluate": {}},
        voxel_size=args.voxel_size,
        localize={"method": "peaks", "probabilities": args.probabilities, "pick_objects": list_arg(args.pick_objects),
                  "thresholds": args.threshold, "smoothing": args.smoothing, "peak_window": args.peak_window,
                  "overlap_check": args.overlap_check},
        evaluate={"ground_truth_user_id": args.ground_truth_user_id,
                  "ground_truth_session_id": args.ground_truth_session_id, "metric": args.metric,
                  "beta": args.beta, "distance_threshold_scale": args.distance_threshold_scale},
    )
    cfg = config_from_dict(doc, source="tomopick tune")
    root = copick_io.open_project(cfg.copick_config)
    asked = known_run_ids(root, list_arg(args.run_ids), cfg.copick_config) or copick_io.run_names(root)
    run_ids, _ = runs_with_probabilities(cfg.localize.probabilities, asked)
    if not run_ids:
        raise RunError(f"no run of {cfg.copick_config} has probabilities in {cfg.localize.probabilities}: "
                       f"{why_none_found(cfg.localize.probabilities, asked)}")
    objects = objects_for_segmentation(cfg, copick_io.particle_objects(root),
                                       read_labels(probability_path(cfg.localize.probabilities, run_ids[0])))
    ev = cfg.evaluate
    check_pick_sets_exist(root, run_ids, {"ground-truth": (ev.ground_truth_user_id, ev.ground_truth_session_id)},
                          cfg.copick_config)
    # a run that user never annotated is no run of ground truth: every pick there would count as false
    annotated = copick_io.runs_with_pick_set(root, run_ids, ev.ground_truth_user_id, ev.ground_truth_session_id)
    if len(annotated) < len(run_ids):
        bare = [r for r in run_ids if r not in annotated]
        gt_set = f"{ev.ground_truth_user_id}/{ev.ground_truth_session_id or '*'}"
        logging.getLogger("tomopick").warning(
            "%d run(s) with probabilities have no ground-truth picks of %s and are left out of the tuning (each pick "
            "there would count as false): %s", len(bare), gt_set,
            name_list(bare, 10))
        run_ids = annotated
    runs = []
    for run_id in run_ids:
        gt = {o.name: copick_io.read_picks(root, run_id, o.name, ev.ground_truth_user_id, ev.ground_truth_session_id,
                                           cfg.voxel_size) for o in objects}
        path = probability_path(cfg.localize.probabilities, run_id)
        probabilities = read_probabilities(path, cfg.voxel_size, run_id)  # another -vs would scale every pick
        check_fits_tomogram(probabilities, path, root, run_id, cfg.voxel_size, cfg.tomo_alg)
        runs.append(RunData(run_id, probabilities, gt))
    if not any(len(v) for r in runs for v in r.gt.values()):
        raise RunError(f"no ground-truth picks of user '{ev.ground_truth_user_id}' in runs {', '.join(run_ids)}; "
                       "check -gtuid/-gtsid")
    result = tune(runs, objects, cfg.voxel_size, cfg.localize, metric=ev.metric, beta=ev.beta,
                  distance_threshold_scale=ev.distance_threshold_scale,
                  min_particles=MIN_PARTICLES if args.min_particles is None else args.min_particles)
    print(f"tuned on {len(runs)} run(s): {', '.join(run_ids)}")
    print(format_result(result, ev.metric, ev.beta))
    block = {"localize": result.settings_block()}
    header = (f"# tomopick tune on {len(runs)} run(s) of {cfg.copick_config}, {ev.metric} rule, beta {ev.beta:g}: "
              f"F {result.final_before:.4f} -> {result.final_after:.4f}"
              + (f", leave-one-run-out {result.leave_one_out:.4f}" if result.leave_one_out is not None else "")
              + "\n# use with: tomopick localize --tuned THIS_FILE, or localize: {tuned: THIS_FILE} in a run config\n")
    text = header + yaml.safe_dump(block, sort_keys=False)
    if args.output:
        atomic.write_text(args.output, text)
        print(f"wrote {args.output}")
    else:  # the settings are the result: show them, and how to keep them
        print("\n" + text, end="")
        print("tomopick tune: -o FILE writes this block to FILE, for `tomopick localize --tuned FILE` and run "
              "configs (localize: {tuned: FILE})", file=sys.stderr)
    return 0
