"""Segment tomograms with octopi models: test-time augmentation, sliding windows, model ensembles.

For every run with the tomogram (others are skipped with a warning) writes the multilabel segmentation
NAME/USER_ID/SESSION_ID, and <overlay_root>/logs/segment-{user}_{session}_{name}.yaml with the labels, models and
settings (octopi's localize needs that file). Modes: fast (default; windows spread evenly with the least overlap,
Gaussian-blended, the transforms of a window in one forward pass: ~3x fewer windows than octopi) and compat
(octopi 1.7's MONAI windows at 50 % overlap, bit for bit on the CPU). Runs segmented already by an earlier
job are skipped (a job resumes where it stopped); --overwrite redoes them. This is the driver of run_all.py
with only the segment stage switched on: with several GPUs (--device auto or cuda), one worker process per
GPU takes the runs as it frees up.

octopi 1.7's flags are accepted as octopi spells them (-uri/--tomo-uri, -suri/--seg-uri, -o/--overlap,
-ntta/--ntta, -swbs, -runs), with octopi's defaults. Unlike octopi, tomopick downloads no pretrained
checkpoints (-mw tomogram-boundary is refused: pass the files) and refuses -ntta above 8 instead of running 8.

Examples:
  tomopick segment -c config.json -mc model.yaml -mw best_model.pth -alg wbp -vs 10 -seginfo predict,octopi,1
  tomopick segment -c config.json -mc model.yaml -mw a.pth,b.pth --tomo-uri wbp@10.0 --seg-uri predict:octopi/1
  tomopick segment -c config.json -uri wbp@10.0 -mc model.yaml -mw model.pth -suri predict:octopi/1 -ntta 8 -o 0.25
"""

from __future__ import annotations

from pipeline.cli.common import (
    add_config_arg,
    add_device_arg,
    add_nonfinite_arg,
    add_overwrite_arg,
    add_run_ids_arg,
    add_tomo_args,
    d,
)
from pipeline.config import MAX_NTTA, RunConfig, SegmentConfig, choices


def add_arguments(p) -> None:
    add_config_arg(p)
    # required, but checked in run(): `-mw tomogram-boundary` (octopi's download alias) gets its own message
    model_config = p.add_argument(
        "-mc", "--model-config", default=None,
        help="required: octopi model config YAML(s), comma-separated; one config may serve several weights "
             "(tomopick downloads no Hugging Face checkpoints, so octopi's -mw alias without -mc is refused)")
    p.add_argument("-mw", "--model-weights", required=True,
                   help="model weights (.pth state_dict), comma-separated for an ensemble (logits averaged)")
    add_tomo_args(p)
    p.add_argument("-seginfo", "--seg-info", default=None,
                   help=f"output segmentation NAME,USER_ID,SESSION_ID {d(SegmentConfig, 'write_segmentation')}")
    p.add_argument("-suri", "--seg-uri", default=None,
                   help="octopi 1.7 spelling of --seg-info: NAME, NAME:USER_ID or NAME:USER_ID/SESSION_ID (missing "
                        "parts from the default), e.g. predict:octopi/1")
    add_run_ids_arg(p)
    p.add_argument("--tomo-batch-size", dest="read_ahead", type=int, default=None, metavar="N",
                   help=f"tomograms read ahead while the current one is segmented {d(RunConfig, 'read_ahead')}")
    p.add_argument("-swbs", "--sliding-window-batch-size", dest="window_batch", type=int, default=None,
                   help="network inputs per forward pass (compat: windows; fast: windows x transforms) "
                        f"{d(SegmentConfig, 'window_batch')}")
    p.add_argument("-o", "--overlap", type=float, default=None,
                   help=f"overlap of MONAI's sliding windows, compat mode {d(SegmentConfig, 'overlap')}")
    p.add_argument("-ntta", "--ntta", type=int, default=None,
                   help=f"test-time transforms, 1..{MAX_NTTA}, octopi's order {d(SegmentConfig, 'ntta')}; more is "
                        f"refused (octopi 1.7 quietly runs {MAX_NTTA})")
    add_device_arg(p)
    add_overwrite_arg(p, "segmentations")
    add_nonfinite_arg(p)
    p.add_argument("--mode", choices=choices("segment", "mode"), default=None,
                   help=f"fast or compat (octopi 1.7's windows and blending) {d(SegmentConfig, 'mode')}")
    p.add_argument("--precision", choices=choices("segment", "precision"), default=None,
                   help="network precision: auto = fast mode in bf16 autocast on CPUs with AMX or AVX512-BF16, fp32 "
                        "on other CPUs; compat mode fp32 on the CPU (octopi's numbers); fp16 autocast on CUDA (as "
                        "octopi; fp32 on CUDA keeps PyTorch's TF32 convolutions) "
                        f"{d(SegmentConfig, 'precision')}")
    p.add_argument("--runtime", choices=choices("segment", "runtime"), default=None,
                   help="how the network runs: torch; compile, onnxruntime, openvino (CPU) and cudagraphs, tensorrt "
                        "(CUDA) are selectable but measured no faster here (benchmarks/RESULTS.md) "
                        f"{d(SegmentConfig, 'runtime')}")
    p.add_argument("--window-scale", type=float, default=None,
                   help=f"fast: largest window side as a multiple of the model's dim_in {d(SegmentConfig, 'window_scale')}")
    p.add_argument("--border-scale", type=float, default=None,
                   help="fast: band discarded at inner window faces, a fraction of dim_in "
                        f"{d(SegmentConfig, 'border_scale')}")
    p.add_argument("--margin", type=int, default=None,
                   help=f"fast: least overlap (voxels) of neighbouring windows' kept parts {d(SegmentConfig, 'margin')}")
    p.add_argument("--blend", choices=choices("segment", "blend"), default=None,
                   help=f"fast: window weights {d(SegmentConfig, 'blend')}")
    p.add_argument("--sigma-scale", type=float, default=None,
                   help=f"fast: Gaussian sigma as a fraction of the window side {d(SegmentConfig, 'sigma_scale')}")
    p.add_argument("--save-probabilities", default=None, metavar="FOLDER",
                   help="also write per-class probabilities to FOLDER/<run>.h5 (float16, gzip; for napari/Python)")
    model_config.required = True  # the usage line shows -mc as the required flag it is
    p.usage = p.format_usage().removeprefix("usage: ").rstrip("\n").replace("%", "%%")
    model_config.required = False


def run(args) -> int:
    from pipeline.cli.common import list_arg, run_job
    from pipeline.config import overlay
    from pipeline.errors import ConfigError
    from pipeline.models import split_paths
    from pipeline.selectors import resolve_seg, resolve_tomo

    weights = split_paths(args.model_weights)
    check_model_flags(args.model_config, weights)
    if args.ntta is not None and not 1 <= args.ntta <= MAX_NTTA:
        raise ConfigError(f"-ntta/--ntta {args.ntta}: tomopick runs 1 to {MAX_NTTA} of octopi's {MAX_NTTA} test-time "
                          f"transforms; octopi 1.7 accepts more and runs {MAX_NTTA} with a warning, tomopick refuses so "
                          f"that what runs is what was asked: use -ntta {MAX_NTTA}")
    tomo = resolve_tomo(args.voxel_size, args.tomo_alg, args.tomo_uri)
    seg = resolve_seg(args.seg_info, args.seg_uri)
    doc = overlay(
        {"copick_config": args.config, "stages": ["segment"],
         "model": {"configs": split_paths(args.model_config), "weights": weights}},
        voxel_size=tomo.voxel_size, tomo_alg=tomo.tomo_alg, run_ids=list_arg(args.run_ids), device=args.device,
        output={"overwrite": args.overwrite, "on_error": args.on_error},
        read_ahead=args.read_ahead,
        segment={"mode": args.mode, "ntta": args.ntta, "overlap": args.overlap, "window_batch": args.window_batch,
                 "precision": args.precision, "save_probabilities": args.save_probabilities,
                 "write_segmentation": seg.info() if seg else None, "runtime": args.runtime,
                 "window_scale": args.window_scale, "border_scale": args.border_scale, "margin": args.margin,
                 "blend": args.blend, "sigma_scale": args.sigma_scale, "nonfinite": args.nonfinite},
    )
    return run_job(doc, "tomopick segment")


# octopi 1.7's pretrained checkpoints, named instead of files (octopi/utils/hub.py: KNOWN_MODELS)
HUGGING_FACE_ALIASES = ("tomogram-boundary",)


def check_model_flags(model_config, weights: list[str]) -> None:
    """octopi 1.7 downloads a checkpoint named by its alias (``-mw tomogram-boundary``) from the Hugging Face Hub
    at run time, config included; tomopick downloads nothing, so it asks for the files."""
    from pathlib import Path

    from pipeline.errors import ConfigError

    aliases = [w for w in weights if w in HUGGING_FACE_ALIASES and not Path(w).exists()]
    if aliases:
        raise ConfigError(
            f"-mw/--model-weights {aliases[0]!r} is one of octopi's pretrained checkpoints, which octopi downloads "
            "from the Hugging Face Hub (biohub/octopi) at run time; tomopick downloads nothing while it runs. Fetch "
            "the checkpoint's model config YAML and weights once (e.g. run octopi with it on a machine with network, "
            "or download them from the Hub) and pass them as -mc/--model-config FILE.yaml -mw/--model-weights "
            "FILE.pth"
        )
    if model_config is None:
        raise ConfigError("-mc/--model-config is missing: give the octopi model config YAML(s) that go with "
                          f"-mw/--model-weights {','.join(weights)} (one config may serve several weights)")
