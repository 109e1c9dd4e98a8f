"""Create a synthetic copick project with ground truth: the six CZII particle classes, each with its own
shape and size, touching neighbours, low-pass blur and noise at a chosen SNR.

Writes DIR/config.json (open it with copick.from_file or pass it as -c), tomograms `wbp` at 10 A, ground-truth
picks (user data-portal, session 0) and, unless --no-label-map, the ground-truth label map as the multilabel
segmentation targets:data-portal/0. Deterministic per --seed.
"""

from __future__ import annotations

import logging
import time

from pipeline.cli.common import d
from pipeline.config import SyntheticConfig

log = logging.getLogger(__name__)


def _shape(text: str) -> tuple[int, int, int]:
    import argparse

    try:
        parts = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r}: expected Z,Y,X integers, e.g. 184,630,630") from None
    if len(parts) != 3:  # the sides themselves: synthetic.check_settings
        raise argparse.ArgumentTypeError(f"shape {text!r}: expected three sides Z,Y,X, e.g. 184,630,630")
    return parts


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="folder for the new project (must not hold a config.json yet)")
    p.add_argument("--runs", type=int, default=None, help=f"number of runs {d(SyntheticConfig, 'runs')}")
    p.add_argument("--shape", type=_shape, default=None, help=f"Z,Y,X voxels {d(SyntheticConfig, 'shape')}")
    p.add_argument("--seed", type=int, default=None, help=f"random seed {d(SyntheticConfig, 'seed')}")
    p.add_argument("--snr", type=float, default=None,
                   help=f"particle contrast / noise std {d(SyntheticConfig, 'snr')}")
    p.add_argument("--density", type=float, default=None,
                   help=f"particle density relative to the CZII challenge's {d(SyntheticConfig, 'density')}")
    p.add_argument("--no-label-map", dest="write_label_map", action="store_const", const=False, default=None,
                   help="do not write the ground-truth label map")


def run(args) -> int:
    from pipeline.config import build
    from pipeline.synthetic import make_synthetic_project

    flags = {"out": args.out, "runs": args.runs, "shape": list(args.shape) if args.shape else None, "seed": args.seed,
             "snr": args.snr, "density": args.density, "write_label_map": args.write_label_map}
    s = build(SyntheticConfig, {k: v for k, v in flags.items() if v is not None}, "tomopick synth")
    t0 = time.perf_counter()
    config_path = make_synthetic_project(
        s.out, runs=s.runs, shape=tuple(s.shape), seed=s.seed, snr=s.snr, density=s.density,
        write_label_map=s.write_label_map, progress=True,
    )
    size = sum(f.stat().st_size for f in config_path.parent.rglob("*") if f.is_file())
    print(f"{config_path}  ({s.runs} runs of {'x'.join(map(str, s.shape))}, "
          f"{size / 2**20:.1f} MiB, {time.perf_counter() - t0:.1f} s)")
    return 0
