"""tomopick's main job: ``python run_all.py configs/x.yaml`` runs segment -> localize -> (evaluate) on every run.

Loads the YAML run config (schema and defaults: pipeline/config.py), sets up logging and hands over to the
streaming driver (pipeline/run/). ``tomopick run CONFIG`` does the same.
"""

import argparse
import sys


def main(argv=None) -> int:
    from pipeline.config import choices

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="run config YAML, e.g. configs/demo.yaml")
    parser.add_argument("--shard", default=None, help="K/N: take every N-th run starting at K (SLURM arrays)")
    parser.add_argument("--overwrite", action="store_true", help="redo runs whose picks exist already")
    parser.add_argument("--executor", default=None, choices=choices("", "executor"),
                        help="where runs go: local (this node) or ray (a Ray cluster's actors; default: the config's)")
    parser.add_argument("--ray-address", default=None,
                        help="auto | HOST:PORT | ray://HOST:PORT: the Ray cluster (default: the config's ray.address)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    args = parser.parse_args(argv)

    from pipeline.cli import main as cli_main

    forwarded = ["-v"] * args.verbose + ["run", args.config]
    if args.shard:
        forwarded += ["--shard", args.shard]
    if args.overwrite:
        forwarded.append("--overwrite")
    for flag, value in (("--executor", args.executor), ("--ray-address", args.ray_address)):
        if value is not None:
            forwarded += [flag, value]
    return cli_main(forwarded)


if __name__ == "__main__":
    sys.exit(main())
