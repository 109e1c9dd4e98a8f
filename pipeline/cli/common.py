"""Shared argparse pieces and logging set-up for the sub-commands."""

from __future__ import annotations

import logging

from pipeline.errors import TomopickError
from pipeline.selectors import SelectorError

# What the CLI turns into a one-line error and exit code 2 instead of a traceback.
UserError = (TomopickError, SelectorError, FileNotFoundError)


def setup_logging(verbose: int = 0) -> None:
    level = logging.WARNING if verbose < 0 else logging.INFO if verbose == 0 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # copick/zarr/numba chatter stays out of INFO unless -vv
    for noisy in ("numba", "fsspec", "asyncio", "matplotlib", "PIL", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)


def add_config_arg(p) -> None:
    p.add_argument("-c", "--config", required=True, help="copick configuration JSON of the project")


def add_run_ids_arg(p, *extra_flags: str) -> None:
    p.add_argument(
        "-runs", "--run-ids", *extra_flags, dest="run_ids", default=None,
        help="comma-separated run names (default: every run that has the data)",
    )


def add_tomo_args(p) -> None:
    p.add_argument("-vs", "--voxel-size", type=float, default=None, help="voxel size in Angstrom (default 10)")
    p.add_argument("-alg", "--tomo-alg", default=None, help="tomogram algorithm / tomo_type (default wbp)")
    p.add_argument("--tomo-uri", default=None, help="octopi 1.7 spelling of the two above, e.g. wbp@10.0")


def add_device_arg(p) -> None:
    p.add_argument(
        "--device", default="auto",
        help="auto | cpu | cuda | cuda:N (default auto: the GPU when there is one, else the CPU)",
    )
