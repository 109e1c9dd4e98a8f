"""The yardstick of segmentation: octopi 1.7's math with MONAI's own ``sliding_window_inference`` (tests, benchmarks).

Nothing here runs in the pipeline; ``pipeline.segment``'s compat mode must give these logits (bit for bit on the
CPU), and fast mode is judged against them on the quality gate (benchmarks/bench_quality.py).
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.config import SegmentConfig
from pipeline.device import resolve_device
from pipeline.runtimes import autocast, resolve_precision
from pipeline.tta import tta_transforms


def reference_logits(volume_zyx, ensemble, settings: SegmentConfig, *, device: str) -> torch.Tensor:
    """octopi's loop: MONAI ``NormalizeIntensity``; per model, per transform: transform,
    ``sliding_window_inference`` (window ``dim_in``, ``settings.overlap``, constant blending, zero padding,
    ``settings.window_batch`` windows per pass), inverse, float32 sum; / transforms; mean over models.
    Precision as compat mode resolves it. Returns (C, z, y, x) float32 on ``device``.
    """
    from monai.inferers import sliding_window_inference
    from monai.transforms import NormalizeIntensity

    dev = torch.device(resolve_device(str(device)).torch_device)
    precision, _ = resolve_precision(settings.precision, dev, "compat")
    x = volume_zyx if isinstance(volume_zyx, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(volume_zyx))
    x = torch.as_tensor(NormalizeIntensity()(x[None]))[None].to(dev)
    transforms = tta_transforms(settings.ntta)
    acc = torch.zeros((ensemble.num_classes, *x.shape[2:]), dtype=torch.float32, device=dev)
    with torch.inference_mode():
        for model in ensemble.models:
            model.to(dev)
            per_model = torch.zeros_like(acc)
            for t in transforms:
                with autocast(precision, dev):
                    pred = sliding_window_inference(t.forward(x), (ensemble.dim_in,) * 3, settings.window_batch,
                                                    model, overlap=settings.overlap, sw_device=dev, device=dev)
                per_model += t.inverse(torch.as_tensor(pred)[0].to(torch.float32))
            acc += per_model / len(transforms)
    return acc / len(ensemble.models)
