"""tomopick's main job: ``python run_all.py configs/x.yaml`` runs segment -> localize -> (evaluate) on every run.

This is ``tomopick run``: the same flags and help (``python run_all.py --help``), the same logging set-up and
exit codes. It loads the YAML run config (schema and defaults: pipeline/config.py) and hands over to the
streaming driver (pipeline/run/).
"""

import sys


def main(argv=None) -> int:
    from pipeline.cli import main as cli_main

    # one parser for both spellings, so that their flags cannot drift apart
    return cli_main(["run", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
