"""Segmentation speed: octopi's math with MONAI's sliding_window_inference vs ours (compat, fast), one process.

Same network, same synthetic tomogram, same device. Prints seconds, ratio to the reference, windows through the
network, voxel agreement of the label maps; on a GPU also achieved TFLOP/s (network FLOPs counted once with
torch.utils.flop_counter, times the voxels that went through it) and the fraction of a measured fp16 conv3d peak.

    python benchmarks/bench_segment.py                                   # CPU, 96x256x256, ntta 4, demo model
    python benchmarks/bench_segment.py --shape 184,630,630 --device cuda
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline import tiling  # noqa: E402
from pipeline.config import SegmentConfig  # noqa: E402
from pipeline.models import load_ensemble  # noqa: E402
from pipeline.segment import compute_logits  # noqa: E402
from pipeline.segment_reference import reference_logits  # noqa: E402
from pipeline.synthetic import synth_run_arrays  # noqa: E402
from pipeline.tta import tta_transforms  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def flops_per_voxel(model, dim_in, device, precision) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 1, dim_in, dim_in, dim_in, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        ctx = torch.autocast("cuda", dtype=torch.float16) if precision == "fp16" else torch.autocast("cpu", enabled=False)
        with ctx:
            model(x)
    return counter.get_total_flops() / dim_in**3


def conv_peak_tflops(device) -> float:
    """fp16 conv3d throughput of this GPU on a large, well-shaped convolution (the practical ceiling)."""
    conv = torch.nn.Conv3d(64, 64, 3, padding=1).to(device).half()
    x = torch.randn(4, 64, 64, 128, 128, device=device, dtype=torch.float16)
    with torch.inference_mode():
        for _ in range(3):
            conv(x)
        _, dt = timed(lambda: [conv(x) for _ in range(10)], device)
    flops = 2 * 64 * 64 * 27 * x[0, 0].numel() * 4 * 10
    return flops / dt / 1e12


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="96,256,256")
    p.add_argument("--ntta", type=int, default=4)
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--window-batch", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--model-config", default=str(REPO / "configs/models/demo_unet.yaml"))
    p.add_argument("--model-weights", default=str(REPO / "configs/models/demo_unet.pth"))
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--fast-window-scale", type=float, default=None, help="fast mode's window_scale (default: config)")
    p.add_argument("--fast-margin", type=int, default=None, help="fast mode's margin (default: the config's)")
    p.add_argument("--runtime", default="torch", help="fast mode's runtime (compat and the reference run torch)")
    p.add_argument("--skip-reference", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from pipeline.device import resolve_device

    choice = resolve_device(args.device)
    device = torch.device(choice.torch_device)
    shape = tuple(int(s) for s in args.shape.split(","))
    volume, _, _ = synth_run_arrays(shape, seed=args.seed)
    ens = load_ensemble(args.model_config, args.model_weights, device=str(device))
    common = dict(ntta=args.ntta, overlap=args.overlap, window_batch=args.window_batch, precision=args.precision)
    compat_settings = SegmentConfig(mode="compat", **common)
    fast_settings = SegmentConfig(mode="fast", runtime=args.runtime, **common)
    if args.fast_window_scale is not None:
        fast_settings.window_scale = args.fast_window_scale
    if args.fast_margin is not None:
        fast_settings.margin = args.fast_margin
    dev = str(device)
    monai_windows = sum(tiling.monai_plan(t.forward(torch.empty(shape, device="meta")).shape, ens.dim_in,
                                          args.overlap).n_windows for t in tta_transforms(args.ntta))
    monai_windows *= len(ens.models)

    # warm-up (cuDNN autotune, allocator, thread pools) on a small volume
    small = volume[: min(shape[0], ens.dim_in), : ens.dim_in, : ens.dim_in]
    compute_logits(small, ens, fast_settings, device=dev)
    compute_logits(small, ens, compat_settings, device=dev)

    rows = []
    ref_labels = None
    if not args.skip_reference:
        ref, t_ref = timed(lambda: reference_logits(volume, ens, compat_settings, device=dev), device)
        ref_labels = torch.argmax(torch.softmax(ref, 0), 0)
        rows.append(("reference (MONAI swi in octopi's TTA loop)", t_ref, monai_windows, monai_windows * ens.dim_in**3,
                     1.0, None))
        del ref
    (compat, stats_c), t_compat = timed(lambda: compute_logits(volume, ens, compat_settings, device=dev), device)
    compat_labels = torch.argmax(torch.softmax(compat, 0), 0)
    agree_c = float((compat_labels == ref_labels).float().mean()) if ref_labels is not None else 1.0
    rows.append(("tomopick compat", t_compat, stats_c["windows"], stats_c["network_voxels"], agree_c, None))
    del compat
    (fast, stats_f), t_fast = timed(lambda: compute_logits(volume, ens, fast_settings, device=dev), device)
    fast_labels = torch.argmax(fast, 0)
    agree_f = float((fast_labels == (ref_labels if ref_labels is not None else compat_labels)).float().mean())
    agree_fc = float((fast_labels == compat_labels).float().mean())
    rows.append((f"tomopick fast (window {'x'.join(map(str, stats_f['window_shape']))})", t_fast, stats_f["windows"],
                 stats_f["network_voxels"], agree_f, agree_fc))
    del fast

    base = rows[0][1]
    precision = stats_f["precision"]
    fpv = flops_per_voxel(ens.models[0], ens.dim_in, device, precision) if device.type == "cuda" else None
    peak = conv_peak_tflops(device) if device.type == "cuda" else None
    cpu = platform.processor() or platform.machine()
    print(f"device {device} ({choice.reason}); {torch.get_num_threads()} CPU threads; {cpu}; torch {torch.__version__}")
    print(f"volume {shape}, ntta {args.ntta}, overlap {args.overlap}, window batch {args.window_batch}, "
          f"model {Path(args.model_config).name} (dim_in {ens.dim_in}), precision fast {precision} "
          f"({stats_f['precision_reason']}), compat {stats_c['precision']}, fast margin {fast_settings.margin}")
    print(f"{'':48s} {'seconds':>8s} {'speed-up':>8s} {'windows':>8s} {'Mvoxel':>8s} {'agree':>8s} {'vs compat':>9s}"
          + ("  TFLOP/s  of-peak" if fpv else ""))
    for name, t, win, vox, agree, agree_compat in rows:
        line = (f"{name:48s} {t:8.2f} {base / t:7.2f}x {win:8d} {vox / 1e6:8.1f} {agree:8.4f} "
                f"{agree_compat if agree_compat is not None else float('nan'):9.4f}")
        if fpv:
            tflops = fpv * vox / t / 1e12
            line += f"  {tflops:7.1f}  {tflops / peak:6.1%}"
        print(line)
    if peak:
        print(f"measured fp16 conv3d peak on this GPU: {peak:.0f} TFLOP/s; network {fpv / 1e3:.1f} kFLOP/voxel")
    return 0


if __name__ == "__main__":
    sys.exit(main())
