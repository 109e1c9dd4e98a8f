"""Merge the reports of a sharded job, and score all its runs at once.

Shards running at once (a SLURM array, `--shard K/N`) each write their own throughput-shardKofN.json and, with
an evaluate block, score only their own runs. Once every shard has finished, `tomopick report CONFIG.yaml`
merges the shards' throughput reports into one throughput.json (every run's latest record, the totals over
all of them) and, if the config evaluates, scores every run that is done into evaluate.save_path.

Example:
  tomopick report configs/my_project.yaml
"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("config", help="the run config YAML the shards ran with")


def run(args) -> int:
    from pipeline import copick_io
    from pipeline.config import load_config
    from pipeline.errors import RunError
    from pipeline.run import evaluate_runs
    from pipeline.run.job import output_dir
    from pipeline.run.reports import merge_shard_reports
    from pipeline.run.select import objects_for_report, run_is_done, select_runs

    cfg = load_config(args.config, overrides={"shard": None}, check_files=False)
    cfg.shard = None
    root = copick_io.open_project(cfg.copick_config)
    out_dir = output_dir(cfg, root)
    merged, summary = merge_shard_reports(cfg, out_dir)
    print(f"merged {summary['shards']} shard report(s) into {merged}: {summary['runs_done']} run(s) done, "
          f"{summary['runs_failed']} failed")
    if cfg.evaluate is not None:
        objects = objects_for_report(cfg, root)
        run_ids, _ = select_runs(cfg, root)
        done = [r for r in run_ids if run_is_done(cfg, root, r, objects, say_why=False)]
        if not done:
            raise RunError(f"{cfg.copick_config}: none of the {len(run_ids)} selected run(s) is done yet; run the "
                           "shards first")
        _, table, paths = evaluate_runs(cfg, root, objects, done, out_dir, progress=True)
        print(table)
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0
