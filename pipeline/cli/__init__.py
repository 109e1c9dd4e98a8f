"""``tomopick`` command line: one sub-command per stage.

Each sub-command lives in its own module ``pipeline/cli/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``. Heavy imports (torch, copick) happen inside ``run`` so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pipeline import __version__

# name -> (module, one-line help)
COMMANDS = {
    "run": ("pipeline.cli.run", "run the whole pipeline from a YAML config (same as run_all.py)"),
    "segment": ("pipeline.cli.segment", "segment tomograms with octopi models (TTA, sliding windows)"),
    "localize": ("pipeline.cli.localize", "turn segmentations into particle picks (watershed or com)"),
    "evaluate": ("pipeline.cli.evaluate", "score picks against ground truth (octopi or CZII rule)"),
    "show": ("pipeline.cli.show", "render tomogram slices with ground-truth and predicted picks"),
    "synth": ("pipeline.cli.synth", "create a synthetic copick project with ground truth"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tomopick",
        description="Fast, octopi-compatible particle picking in cryo-ET tomograms stored in copick projects.",
    )
    parser.add_argument("--version", action="version", version=f"tomopick {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli.common import UserError, setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    setup_logging(args.verbose)
    from pipeline.errors import RunFailed

    try:
        return int(args._module.run(args) or 0)
    except RunFailed as exc:  # a run failed with output.on_error: raise; the others done so far are kept
        logging.getLogger("tomopick").error("%s", exc)
        return 1
    except UserError as exc:
        logging.getLogger("tomopick").error("%s", exc)
        return 2
    except KeyboardInterrupt:
        logging.getLogger("tomopick").error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
