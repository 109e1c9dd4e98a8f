"""Run the whole pipeline from a YAML run config: segment -> localize -> write picks -> evaluate.

`python run_all.py CONFIG [FLAGS]` is this command, with the same flags. The config schema and its defaults are
in pipeline/config.py and the README; relative paths in the YAML resolve against the YAML file's folder.
Reports (throughput JSON, run_manifest.json, scores) go to output.dir (default <overlay_root>/tomopick).
"""

from __future__ import annotations

from pipeline.cli.common import TRUE, add_nonfinite_arg, add_on_error_arg, d, file_arg, positive_int
from pipeline.config import RunConfig, choices


def add_arguments(p) -> None:
    p.add_argument("config", type=file_arg("run config YAML", (".yaml", ".yml")),
                   help="run config YAML, e.g. configs/demo.yaml")
    p.add_argument("--shard", default=None,
                   help="K/N: take runs K, K+N, K+2N, ... (K from 0), e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")
    p.add_argument("--overwrite", **TRUE, help="redo runs that are done already (output.overwrite: true)")
    add_on_error_arg(p)
    add_nonfinite_arg(p)
    p.add_argument("--device", default=None, help="override the config's device: auto | cpu | cuda | cuda:N")
    p.add_argument("--executor", default=None, choices=choices("", "executor"),
                   help=f"where runs go {d(RunConfig, 'executor')}: local (this node) or ray (the actors of a Ray "
                        "cluster; needs pip install \"tomopick[ray]\")")
    p.add_argument("--ray-address", default=None,
                   help="override ray.address: auto (the Ray cluster this node belongs to) | HOST:PORT | "
                        "ray://HOST:PORT (default: start a local Ray instance)")
    p.add_argument("--ray-cpus-per-actor", type=positive_int("a number of CPUs"), default=None, metavar="N",
                   help="override ray.cpus_per_actor on CPU-only clusters: one actor (one loaded model, N torch "
                        "threads) per N CPUs (default 4)")


def run(args) -> int:
    from pipeline.cli.common import announce_compilation, print_summary
    from pipeline.config import load_config
    from pipeline.run import run_pipeline

    cfg = load_config(args.config, overrides={"shard": args.shard, "device": args.device,
                                              "output": {"overwrite": args.overwrite, "on_error": args.on_error},
                                              "segment": {"nonfinite": args.nonfinite}, "executor": args.executor,
                                              "ray": {"address": args.ray_address,
                                                      "cpus_per_actor": args.ray_cpus_per_actor}})
    announce_compilation(cfg)
    return print_summary(run_pipeline(cfg))
