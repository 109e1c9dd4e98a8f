"""Merge the reports of a sharded job, and score all its runs at once.

Shards running at once (a SLURM array, `--shard K/N`) each write their own throughput-shardKofN.json and, with
an evaluate block, score only their own runs; a shard with nothing to do (its runs done already, or none left
for it in an array larger than the project) writes one too. Once every shard has finished, `tomopick report
CONFIG.yaml` merges the shards' throughput reports into one throughput.json (every run's latest record, the
totals over all of them, each shard's own figures) and, if the config evaluates, scores every run that is done
into evaluate.save_path. Shards with no report and runs not done are named (a warning, and "missing" in
throughput.json); the exit status stays 0, as for failed runs, whose shard has already exited 1.

The reports of one split are merged: N shards with --shards N, else the set written last; shard reports of
another N left in output.dir are named as ignored. A warning names shards that split different run lists (the
project changed between them) and shards whose run manifests differ in a setting that changes the picks.

Example:
  tomopick report configs/my_project.yaml
  tomopick report configs/my_project.yaml --shards 8
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    from pipeline.cli.common import file_arg, positive_int

    p.add_argument("config", type=file_arg("run config YAML", (".yaml", ".yml")),
                   help="the run config YAML the shards ran with")
    p.add_argument("--shards", type=positive_int("the number of shards N of --shard K/N"), default=None, metavar="N",
                   help="merge the reports of N shards (--shard K/N) (default: the set of shard reports written "
                        "last; those of another N are named as ignored)")


def run(args) -> int:
    from pipeline import copick_io
    from pipeline.config import load_config
    from pipeline.errors import RunError
    from pipeline.run import evaluate_runs
    from pipeline.run.job import output_dir
    from pipeline.run.reports import describe_missing, find_shard_reports, merge_shard_reports
    from pipeline.run.select import objects_for_report, run_is_done, select_runs

    cfg = load_config(args.config, overrides={"shard": None}, check_files=False)
    cfg.shard = None
    root = copick_io.open_project(cfg.copick_config)
    out_dir = output_dir(cfg, root)
    find_shard_reports(cfg, out_dir)  # none: say so before reading the project's runs
    objects = objects_for_report(cfg, root)
    run_ids, _, _ = select_runs(cfg, root)  # every shard's runs, in the order the shards split them
    done = [r for r in run_ids if run_is_done(cfg, root, r, objects, say_why=False)]
    merged, summary = merge_shard_reports(cfg, out_dir, run_ids, set(done), shards=args.shards)
    missing, missing_shards = summary["missing_runs"], summary["missing_shards"]
    print(f"merged {summary['shards']} shard report(s) of {summary['shard_count']} shard(s) into {merged}: "
          f"{len(done)} of {len(run_ids)} run(s) done, {summary['runs_failed']} failed"
          + (f"; missing: {describe_missing(missing)}" if missing else ""))
    if summary["ignored_reports"]:
        log.warning("%s: ignored %s in %s: not reports of the %d shards merged (another split's, which --shards N "
                    "merges instead, or not named as a shard's report: delete or move them)", args.config,
                    ", ".join(summary["ignored_reports"]), out_dir, summary["shard_count"])
    for warning in (summary["split_warning"], summary["settings_warning"]):
        if warning:
            log.warning("%s: %s", args.config, warning)
    if missing_shards:
        log.warning("%s: no report from shard(s) %s: run them (run_all.py %s --shard K/N), then tomopick report "
                    "again", args.config, ", ".join(missing_shards), args.config)
    if missing:
        log.warning("%s: %d of the %d run(s) are not done: %s", args.config, len(missing), len(run_ids),
                    describe_missing(missing))
    if cfg.evaluate is not None:
        if not done:
            raise RunError(f"{cfg.copick_config}: none of the {len(run_ids)} selected run(s) is done yet; run the "
                           "shards first")
        _, table, paths = evaluate_runs(cfg, root, objects, done, out_dir, progress=True)
        if missing:
            print(f"scores of {len(done)} of the {len(run_ids)} run(s); missing: {describe_missing(missing)}")
        print(table)
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0
