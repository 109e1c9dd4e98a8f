"""``tomopick`` command line: one sub-command per stage.

Each sub-command lives in its own module ``pipeline/cli/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``. Heavy imports (torch, copick) happen inside ``run`` so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys

from pipeline import __version__

# name -> (module, one-line help)
COMMANDS = {
    "run": ("pipeline.cli.run", "run the whole pipeline from a YAML config (same as run_all.py)"),
    "segment": ("pipeline.cli.segment", "segment tomograms with octopi models (TTA, sliding windows)"),
    "localize": ("pipeline.cli.localize", "turn segmentations or class probabilities into particle picks (watershed, com or peaks)"),
    "evaluate": ("pipeline.cli.evaluate", "score picks against ground truth (octopi or CZII rule)"),
    "tune": ("pipeline.cli.tune", "tune the peaks method's per-class settings on runs with ground truth"),
    "report": ("pipeline.cli.report", "merge the reports of a sharded job and score all its runs"),
    "show": ("pipeline.cli.show", "render tomogram slices with ground-truth and predicted picks"),
    "synth": ("pipeline.cli.synth", "create a synthetic copick project with ground truth"),
    "import-mrc": ("pipeline.cli.import_mrc", "import MRC tomograms (and ground-truth picks) into a copick project"),
    "export": ("pipeline.cli.export", "write picks as RELION 5 STAR or the CZII challenge's CSV"),
}

# the commands that are the driver (run_all.py's job): a stop finishes or rolls back their runs and writes the report
JOB_COMMANDS = {"run", "segment", "localize"}


def build_parser() -> argparse.ArgumentParser:
    from pipeline.cli.common import ArgumentParser

    parser = ArgumentParser(
        prog="tomopick",
        description="Fast, octopi-compatible particle picking in cryo-ET tomograms stored in copick projects.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"tomopick {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        add_command_verbose(p)
        p.set_defaults(_module=module, _parser=p)
    return parser


def add_command_verbose(p) -> None:
    """``-v/--verbose`` after the command too, as before it (``tomopick report X -v`` as ``tomopick -v report
    X``; run_all.py hands its arguments to `tomopick run`, and has always taken -v). ``evaluate`` keeps octopi's
    ``-v BOOL``: there only ``tomopick -v evaluate`` adds log output."""
    try:
        p.add_argument("-v", "--verbose", dest="command_verbose", action="count", default=None,
                       help="more log output (-vv for debug); also before the command: tomopick -v COMMAND")
    except argparse.ArgumentError:  # the command has a -v of its own (evaluate)
        pass


EXIT_CODES = """exit codes: 0 done; 1 a run failed (the others are kept); 2 bad input (config, flags, project,
model: the message names it); 74 an I/O error (permission denied, read-only file system, disk full: the
message names the path); 130 interrupted (Ctrl-C); 128 + N stopped by signal N (143: SIGTERM, 138: SIGUSR1;
run, segment and localize finish or roll back the runs in flight and write the report first)"""


def _flag_hints(parser, unknown: list[str]) -> str:
    """For each unknown flag, the command's flag it may be a misspelling of (``--min_score``, ``--treshold``),
    one line each; the flag itself stays refused."""
    import difflib

    flags = [s for action in parser._actions for s in action.option_strings]
    hints = []
    for token in unknown:
        flag = token.split("=", 1)[0]
        if not flag.startswith("-") or flag in flags:
            continue
        same_kind = [f for f in flags if f.startswith("--") == flag.startswith("--")]
        guess = flag.replace("_", "-") if flag.replace("_", "-") in flags else next(
            iter(difflib.get_close_matches(flag, same_kind, n=1, cutoff=0.8)), None)
        if guess:
            hints.append(f"\n  did you mean {guess} (for {flag})?")
    return "".join(hints)


def main(argv: list[str] | None = None) -> int:
    from pipeline import own_process

    own_process.declare()  # the CLI's process is tomopick's own
    try:
        return _main(argv)
    finally:
        from pipeline.collector import stop_deferring

        stop_deferring()  # a command that ended before its models loaded: Python's thresholds again


def _main(argv: list[str] | None) -> int:
    from pipeline.cli.common import UserError, setup_logging
    from pipeline.errors import RunFailed, Terminated, raise_on_termination

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the command's usage, not the top level's: the flags it lists are the ones to check
        command_parser = getattr(args, "_parser", parser)
        command_parser.error(f"unrecognized arguments: {' '.join(unknown)}{_flag_hints(command_parser, unknown)}")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    # `tomopick -v run X` and `tomopick run X -v` (run_all.py's spelling) count alike
    setup_logging(args.verbose + (getattr(args, "command_verbose", None) or 0))
    raise_on_termination()
    log = logging.getLogger("tomopick")
    try:
        return int(args._module.run(args) or 0)
    except RunFailed as exc:  # a run failed with output.on_error: raise; the others done so far are kept
        log.error("%s", exc)
        return 1
    except UserError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        log.error("%s%s", where, exc.strerror or exc)
        return 74
    except KeyboardInterrupt:
        if args.command in JOB_COMMANDS:
            log.error("interrupted; runs in flight were finished or rolled back, the report is written")
        else:
            log.error("interrupted (Ctrl-C): tomopick %s stopped before it finished", args.command)
        return 130
    except Terminated as exc:
        if args.command in JOB_COMMANDS:
            log.error("%s; runs in flight were finished or rolled back, the report is written", exc)
        else:
            log.error("%s: tomopick %s stopped before it finished", exc, args.command)
        return 128 + exc.signum
    finally:
        # the interpreter's last garbage collections at exit walk every object torch and MONAI made: ~1 s here
        # (benchmarks/RESULTS.md); frozen objects are skipped, and the process's end frees them all the same
        gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
