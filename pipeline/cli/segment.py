"""Segment tomograms with octopi models: test-time augmentation, sliding windows, model ensembles.

For every run with the tomogram (others are skipped with a warning) writes the multilabel segmentation
NAME/USER_ID/SESSION_ID, and <overlay_root>/logs/segment-{user}_{session}_{name}.yaml with the labels, models and
settings (octopi's localize needs that file). Modes: fast (default; windows spread evenly with the least overlap,
Gaussian-blended, the transforms of a window in one forward pass: ~3x fewer windows than octopi) and compat
(octopi 1.7's MONAI windows at 50 % overlap, bit for bit on the CPU). Runs segmented already by an earlier
job are skipped (a job resumes where it stopped); --overwrite redoes them. This is the driver of run_all.py
with only the segment stage switched on: with several GPUs (--device auto or cuda), one worker process per
GPU takes the runs as it frees up.

Examples:
  tomopick segment -c config.json -mc model.yaml -mw best_model.pth -alg wbp -vs 10 -seginfo predict,octopi,1
  tomopick segment -c config.json -mc model.yaml -mw a.pth,b.pth --tomo-uri wbp@10.0 --seg-uri predict:octopi/1
"""

from __future__ import annotations

from pipeline.cli.common import (
    add_config_arg,
    add_device_arg,
    add_overwrite_arg,
    add_run_ids_arg,
    add_tomo_args,
    d,
)
from pipeline.config import RunConfig, SegmentConfig, choices


def add_arguments(p) -> None:
    add_config_arg(p)
    p.add_argument("-mc", "--model-config", required=True,
                   help="octopi model config YAML(s), comma-separated; one config may serve several weights")
    p.add_argument("-mw", "--model-weights", required=True,
                   help="model weights (.pth state_dict), comma-separated for an ensemble (logits averaged)")
    add_tomo_args(p)
    p.add_argument("-seginfo", "--seg-info", default=None,
                   help=f"output segmentation NAME,USER_ID,SESSION_ID {d(SegmentConfig, 'write_segmentation')}")
    p.add_argument("--seg-uri", default=None, help="octopi 1.7 spelling of --seg-info, e.g. predict:octopi/1")
    add_run_ids_arg(p)
    p.add_argument("--tomo-batch-size", dest="read_ahead", type=int, default=None,
                   help=f"tomograms read ahead while the current one is segmented {d(RunConfig, 'read_ahead')}")
    p.add_argument("-swbs", "--sliding-window-batch-size", dest="window_batch", type=int, default=None,
                   help="network inputs per forward pass (compat: windows; fast: windows x transforms) "
                        f"{d(SegmentConfig, 'window_batch')}")
    p.add_argument("--overlap", type=float, default=None,
                   help=f"overlap of MONAI's sliding windows, compat mode {d(SegmentConfig, 'overlap')}")
    p.add_argument("--ntta", type=int, default=None,
                   help=f"test-time transforms, 1..8, octopi's order {d(SegmentConfig, 'ntta')}")
    add_device_arg(p)
    add_overwrite_arg(p, "segmentations")
    p.add_argument("--mode", choices=choices("segment", "mode"), default=None,
                   help=f"fast or compat (octopi 1.7's windows and blending) {d(SegmentConfig, 'mode')}")
    p.add_argument("--precision", choices=choices("segment", "precision"), default=None,
                   help="network precision: auto = fp16 autocast on CUDA (as octopi), fp32 on the CPU; fp32 on "
                        f"CUDA keeps PyTorch's default of TF32 convolutions on Ampere and newer GPUs "
                        f"{d(SegmentConfig, 'precision')}")
    p.add_argument("--save-probabilities", default=None, metavar="FOLDER",
                   help="also write per-class probabilities to FOLDER/<run>.h5 (float16, gzip; for napari/Python)")


def run(args) -> int:
    from pipeline.cli.common import list_arg, run_job
    from pipeline.config import overlay
    from pipeline.models import split_paths
    from pipeline.selectors import resolve_seg, resolve_tomo

    tomo = resolve_tomo(args.voxel_size, args.tomo_alg, args.tomo_uri)
    seg = resolve_seg(args.seg_info, args.seg_uri)
    doc = overlay(
        {"copick_config": args.config, "stages": ["segment"],
         "model": {"configs": split_paths(args.model_config), "weights": split_paths(args.model_weights)}},
        voxel_size=tomo.voxel_size, tomo_alg=tomo.tomo_alg, run_ids=list_arg(args.run_ids), device=args.device,
        output={"overwrite": args.overwrite},
        read_ahead=args.read_ahead,
        segment={"mode": args.mode, "ntta": args.ntta, "overlap": args.overlap, "window_batch": args.window_batch,
                 "precision": args.precision, "save_probabilities": args.save_probabilities,
                 "write_segmentation": seg.info() if seg else None},
    )
    return run_job(doc, "tomopick segment")
