"""Shared argparse pieces and logging set-up for the sub-commands.

Every flag defaults to None: a flag not given leaves the run config's value, whose one default lives in
``pipeline/config.py`` (the help texts quote it from there).
"""

from __future__ import annotations

import argparse
import logging

from pipeline.config import RunConfig, default
from pipeline.errors import TomopickError

# What the CLI turns into a one-line error and exit code 2 instead of a traceback.
UserError = (TomopickError, FileNotFoundError)

TRUE = {"action": "store_const", "const": True, "default": None}  # an on-switch whose absence means "config's"


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


def add_config_arg(p) -> None:
    p.add_argument("-c", "--config", required=True, help="copick configuration JSON of the project")


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


def list_arg(value) -> list[str] | None:
    """``a,b``, ``[a,b]`` or ``a b`` -> list; None -> None."""
    from pipeline.selectors import parse_run_ids

    if value is None:
        return None
    return parse_run_ids(str(value).strip().strip("[]").replace(" ", ","))


def run_job(doc: dict, source: str) -> int:
    """Build the run config from ``doc`` (flags laid over defaults), run the driver, print its summary."""
    from pipeline.config import config_from_dict
    from pipeline.run import run_pipeline

    cfg = config_from_dict(doc, source=source)
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
    lines += [f"report: {result.report_path}", f"manifest: {result.manifest_path}"]
    print("\n".join(lines))
    return 1 if result.failed else 0


__all__ = ["argparse", "UserError", "TRUE", "setup_logging", "TqdmSafeHandler", "d", "add_config_arg", "add_run_ids_arg",
           "add_tomo_args", "add_device_arg", "add_overwrite_arg", "list_arg", "run_job", "announce_compilation",
           "print_summary"]
