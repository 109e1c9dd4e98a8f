"""Driver throughput: end to end against its stages, measured in one process.

    python benchmarks/bench_driver.py --runs 4 --shape 96,256,256            # CPU
    python benchmarks/bench_driver.py --runs 6 --shape 184,630,630 --device cuda

Prints, for the same runs and the same settings:
- the driver's wall time per run and its slowest stage's time per run (CPU target: within 10%);
- tomograms per minute end to end and for the segmentation stage alone, i.e. segment_volume called in a loop on
  tomograms already in memory (GPU target: end to end >= 0.9x segmentation alone).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--shape", default="96,256,256")
    p.add_argument("--device", default="auto")
    p.add_argument("--ntta", type=int, default=4)
    p.add_argument("--mode", default="fast")
    p.add_argument("--n-procs", type=int, default=2)
    p.add_argument("--workdir", default=None, help="keep the synthetic project here (default: a temp folder)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from pipeline import copick_io
    from pipeline.config import config_from_dict
    from pipeline.device import resolve_device
    from pipeline.models import load_ensemble
    from pipeline.run import run_pipeline, throughput_summary
    from pipeline.run.select import prepare_project
    from pipeline.segment import segment_volume

    shape = [int(s) for s in args.shape.split(",")]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_driver_"))
    doc = {
        "synthetic": {"out": str(work / "project"), "runs": args.runs, "shape": shape, "seed": 11},
        "device": args.device,
        "model": {"configs": [str(REPO / "configs/models/demo_unet.yaml")],
                  "weights": [str(REPO / "configs/models/demo_unet.pth")]},
        "segment": {"mode": args.mode, "ntta": args.ntta},
        "localize": {"n_procs": args.n_procs},
        "output": {"dir": str(work / "out"), "overwrite": True},
    }
    cfg = config_from_dict(doc, source="bench_driver")
    device = resolve_device(cfg.device)

    # 1. the driver, end to end (makes the project first if needed, outside the timing)

    prepare_project(cfg)
    t0 = time.perf_counter()
    result = run_pipeline(cfg, progress=False, workers=[device.torch_device])  # one device, as the loop below
    wall = time.perf_counter() - t0
    summary = throughput_summary(result.records, wall)
    n = summary["runs_done"]

    # 2. segmentation alone on tomograms already in memory (same model, same settings)
    root = copick_io.open_project(cfg.copick_config)
    run_ids = [r.run_id for r in result.records]
    volumes = [copick_io.read_tomogram(root, r, cfg.voxel_size, cfg.tomo_alg) for r in run_ids]
    ensemble = load_ensemble(cfg.model.configs, cfg.model.weights, device=device.torch_device)
    s = cfg.segment
    t0 = time.perf_counter()
    for v in volumes:
        out = segment_volume(v, ensemble, s, device=device.torch_device)
        if device.is_cuda:
            import torch

            torch.cuda.synchronize()
        del out
    seg_alone = time.perf_counter() - t0

    stages = summary["stage_seconds_total"]
    slowest = summary["slowest_stage"]
    print(f"device {device.torch_device} ({device.reason}); {n} runs of {'x'.join(map(str, shape))}, "
          f"ntta {args.ntta}, mode {args.mode}")
    print("stage totals (s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    print(f"driver wall per run            {wall / n:8.2f} s")
    print(f"slowest stage ({slowest}) per run {stages[slowest] / n:8.2f} s   "
          f"ratio wall/slowest {wall / stages[slowest]:.3f}  (CPU target <= 1.10)")
    print(f"end to end                     {60 * n / wall:8.2f} tomograms/min")
    print(f"segmentation alone             {60 * n / seg_alone:8.2f} tomograms/min   "
          f"ratio {seg_alone / wall:.3f}  (GPU target >= 0.90)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
