"""Shared argparse pieces and logging set-up for the sub-commands.

Every flag defaults to None: a flag not given leaves the run config's value, whose one default lives in
``pipeline/config.py`` (the help texts quote it from there).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.config import RunConfig, default
from pipeline.errors import RunError, TomopickError

# What the CLI turns into a one-line error and exit code 2 instead of a traceback.
UserError = (TomopickError, FileNotFoundError)

TRUE = {"action": "store_const", "const": True, "default": None}  # an on-switch whose absence means "config's"


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reads a flag only as spelled: never as an abbreviation of another.

    ``allow_abbrev=False`` does not do that on Python < 3.12: a single-dash flag still matches every flag it is a
    prefix of, so ``-v 20`` was read as ``-vs 20`` and ``-f 0`` as ``-fb 0``. Exact flags, ``--flag=value`` and
    ``-flag=value`` are found before this is asked; of its answers only switches joined behind one dash are kept
    (``-vv``, which the help offers). A value joined to a short flag (``-c/x.json``, which Python 3.12 takes) is
    refused too: with octopi's many single-dash flags, ``-obj`` must never be read as ``-o bj``.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _get_option_tuples(self, option_string):
        joined_switches = option_string[:1] in self.prefix_chars and option_string[1:2] not in self.prefix_chars
        return [t for t in super()._get_option_tuples(option_string)
                if joined_switches and t[1] == option_string[:2] and t[0].nargs == 0]


def positive_int(what: str, least: int = 1):
    """An argparse type: an integer >= ``least`` (1), refused naming ``what`` it counts (``--shards``,
    ``--ray-cpus-...``; ``--min-particles`` takes 0)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {what}, an integer >= {least}")
        return value

    return parse


def setup_logging(verbose: int = 0) -> None:
    level = logging.WARNING if verbose < 0 else logging.INFO if verbose == 0 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        handlers=[TqdmSafeHandler()])
    # copick/zarr/numba chatter stays out of INFO unless -vv
    for noisy in ("numba", "fsspec", "asyncio", "matplotlib", "PIL", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)


class TqdmSafeHandler(logging.StreamHandler):
    """A log line never lands on a progress bar's line: it goes out through ``tqdm.write``, which clears the
    bars drawn on the same stream, writes the line and draws them again (the handler that
    ``tqdm.contrib.logging.logging_redirect_tqdm`` installs, here for the whole process)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging must not raise; logging's own way of reporting it
            self.handleError(record)


def d(cls, name: str) -> str:
    """``(default X)`` for a help text, X from the config dataclass."""
    value = default(cls, name)
    if isinstance(value, list):
        value = ",".join(map(str, value))
    return f"(default {value:g})" if isinstance(value, float) else f"(default {value})"


def file_arg(what: str, suffixes: tuple[str, ...]):
    """An argparse ``type`` for a file argument that refuses a folder, naming the one file of the kind in it
    (``-c project`` for ``-c project/config.json``): a folder is never taken in its file's place."""

    def check(text: str) -> str:
        path = Path(text).expanduser()
        if not path.is_dir():
            return text  # a missing file is reported where it is opened, with the key it came from
        found = sorted(str(f) for f in path.iterdir() if f.suffix.lower() in suffixes and f.is_file())
        kinds = "/".join(suffixes)
        if len(found) == 1:
            hint = f"it holds one {kinds} file: give {found[0]}"
        elif found:
            hint = f"it holds {len(found)} {kinds} files ({', '.join(Path(f).name for f in found[:6])}); give one"
        else:
            hint = f"it holds no {kinds} file; give the path of the {what}"
        raise argparse.ArgumentTypeError(f"'{text}' is a folder, not the {what}; {hint}")

    return check


def add_config_arg(p) -> None:
    p.add_argument("-c", "--config", required=True, type=file_arg("project's copick config", (".json",)),
                   help="copick configuration JSON of the project")


def add_run_ids_arg(p, *extra_flags: str) -> None:
    p.add_argument(
        "-runs", "--run-ids", *extra_flags, dest="run_ids", default=None,
        help="comma-separated run names (default: every run that has the data)",
    )


def add_tomo_args(p) -> None:
    p.add_argument("-vs", "--voxel-size", type=float, default=None,
                   help=f"voxel size in Angstrom {d(RunConfig, 'voxel_size')}")
    p.add_argument("-alg", "--tomo-alg", default=None,
                   help=f"tomogram algorithm / tomo_type {d(RunConfig, 'tomo_alg')}")
    p.add_argument("-uri", "--tomo-uri", default=None, help="octopi 1.7 spelling of the two above, e.g. wbp@10.0")


def add_device_arg(p) -> None:
    p.add_argument("--device", default=None,
                   help=f"auto | cpu | cuda | cuda:N {d(RunConfig, 'device')}: the GPU when there is one, else the CPU")


def add_overwrite_arg(p, what: str) -> None:
    p.add_argument("--overwrite", **TRUE, help=f"redo runs that are done already and replace their {what}")
    add_on_error_arg(p)


def add_on_error_arg(p) -> None:
    from pipeline.config import choices

    p.add_argument("--on-error", default=None, choices=choices("output", "on_error"),
                   help="a failing run: raise stops the job, skip goes on with the others and lists it at the end "
                        "(output.on_error) (default raise)")


def add_nonfinite_arg(p) -> None:
    from pipeline.config import choices

    p.add_argument("--nonfinite", default=None, choices=choices("segment", "nonfinite"),
                   help="NaN or inf voxels in a tomogram: error fails the run naming their count, zero sets them to "
                        "0 with a warning (segment.nonfinite) (default error)")


def list_arg(value) -> list[str] | None:
    """``a,b``, ``[a,b]`` or ``a b`` -> list; None -> None."""
    from pipeline.selectors import parse_run_ids

    if value is None:
        return None
    return parse_run_ids(str(value).strip().strip("[]").replace(" ", ","))


def known_run_ids(root, run_ids: list[str] | None, project, flag: str = "-runs/--run-ids") -> list[str] | None:
    """The run names given on the command line that are runs of the project. The others are one warning, with
    the names they may be misspellings of, as the driver (segment, localize, run) skips them; none left is an
    error that lists the project's runs."""
    import difflib

    from pipeline import copick_io

    if not run_ids:
        return run_ids
    names = copick_io.run_names(root)
    unknown = [r for r in run_ids if r not in names]
    if not unknown:
        return run_ids

    def guess(name: str) -> str:
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.8)
        return f"{name} (did you mean {close[0]}?)" if close else name

    listing = ", ".join(names[:10]) + (f" ... ({len(names)} runs)" if len(names) > 10 else "")
    what = f"{flag}: {', '.join(map(guess, unknown))} {'is not a run' if len(unknown) == 1 else 'are not runs'} " \
           f"of {project}"
    known = [r for r in run_ids if r in names]
    if not known:
        raise RunError(f"{what}, and no other run was asked for; its runs: {listing or 'none'}")
    logging.getLogger("tomopick").warning("%s; skipping %s; its runs: %s", what,
                                          "it" if len(unknown) == 1 else "them", listing)
    return known


def run_job(doc: dict, source: str, check=None) -> int:
    """Build the run config from ``doc`` (flags laid over defaults), call ``check(cfg)`` (checks of the
    command's own flags, before any work), run the driver, print its summary."""
    from pipeline.config import config_from_dict
    from pipeline.run import run_pipeline

    cfg = config_from_dict(doc, source=source)
    if check is not None:
        check(cfg)
    announce_compilation(cfg)
    return print_summary(run_pipeline(cfg))


def announce_compilation(cfg) -> None:
    """Say so before numba compiles the CPU localization kernels (first use after install), not after."""
    from pipeline.device import resolve_device
    from pipeline.localize.methods import PROBABILITIES, get_method
    from pipeline.progress import CPU_KERNEL_MODULES, PEAKS_KERNEL_MODULES, announce_kernel_compilation

    if cfg.has("localize") and not resolve_device(cfg.device).is_cuda:
        peaks = get_method(cfg.localize.method).needs == PROBABILITIES
        announce_kernel_compilation(logging.getLogger("tomopick"), PEAKS_KERNEL_MODULES if peaks else CPU_KERNEL_MODULES)


def print_summary(result) -> int:
    from pipeline.run import summary_line

    lines = [result.evaluation_table, ""] if result.evaluation_table else []
    lines.append(summary_line(result))
    if result.failed:
        lines.append("failed runs: " + ", ".join(f"{r.run_id} ({r.error})" for r in result.failed))
    # only files that are there: a job with nothing to do (a shard whose runs are done) may have none
    lines += [f"{what}: {path}" for what, path in (("report", result.report_path), ("manifest", result.manifest_path))
              if path is not None and Path(path).is_file()]
    print("\n".join(lines))
    return 1 if result.failed else 0


__all__ = ["argparse", "ArgumentParser", "positive_int", "UserError", "TRUE", "setup_logging", "TqdmSafeHandler", "d", "file_arg",
           "add_config_arg", "add_run_ids_arg", "add_tomo_args", "add_device_arg", "add_overwrite_arg",
           "add_on_error_arg", "add_nonfinite_arg", "list_arg",
           "known_run_ids", "run_job", "announce_compilation", "print_summary"]
