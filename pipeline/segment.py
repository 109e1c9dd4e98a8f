"""Tomogram -> label map: normalisation, test-time transforms x sliding windows x models -> logits -> argmax.

Two modes, one code path for every device (spec section 3); settings are a ``pipeline.config.SegmentConfig``:

- ``compat`` reproduces octopi 1.7: for each model and each of the first ``ntta`` transforms, transform the
  whole volume, run MONAI ``sliding_window_inference``'s windows (window ``dim_in``, ``overlap``, constant
  blending, zero padding; ``pipeline.tiling.monai_plan``), inverse-transform the logits and add them in float32;
  divide by the transforms, average over models, softmax, argmax. ``precision: auto`` keeps octopi's numbers:
  fp32 on the CPU, fp16 autocast on CUDA.
- ``fast`` (default) keeps octopi's picks for less work: windows spread evenly over each axis (nnU-Net style,
  ``tiling.even_plan``), up to ``window_scale`` x ``dim_in`` a side, a band of ``border_scale`` x ``dim_in``
  voxels discarded at inner window faces and at least ``margin`` voxels of overlap between the kept parts,
  Gaussian blending; the ``ntta`` transforms of one window batched into one forward pass (one window read, one
  stitch); argmax of the averaged logits (softmax does not change it). The stitcher keeps one window depth of z
  at a time and writes finished z-bands straight into the uint8 label map (the whole probabilities only when
  asked for). ``precision: auto`` is bf16 autocast on CPUs with AMX or AVX512-BF16, fp32 on other CPUs. The
  tiling defaults were chosen on the quality gate (benchmarks/bench_quality.py, benchmarks/RESULTS.md).

How the networks run (layout, precision, ``runtime``) is ``pipeline.runtimes``; the yardstick with MONAI's own
sliding windows is ``pipeline.segment_reference``. On CUDA the tomogram, the logits and the label map stay on the
device; the label map comes back as a device tensor. When CUDA runs out of memory we stitch on the host instead
(logged once) and fail with advice if even that does not fit; softmax/argmax that do not fit on the device run
on the host.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline import runtimes, tiling
from pipeline.config import SegmentConfig
from pipeline.errors import ConfigError, DeviceError
from pipeline.tta import tta_transforms

log = logging.getLogger(__name__)

MODES = ("fast", "compat")
BLENDS = ("gaussian", "constant")

_warned_host_stitching = False


@dataclass
class SegmentResult:
    label_map: torch.Tensor  # uint8 (z, y, x) on the device asked for
    probabilities: torch.Tensor | None = None  # float32 (classes, z, y, x), softmax of the averaged logits
    stats: dict = field(default_factory=dict)  # what ran: mode, precision and why, runtime, windows, seconds


def normalize_volume(volume: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` over all voxels, float32, exactly as MONAI ``NormalizeIntensity()`` (std 0 -> 1)."""
    v = volume.float()
    mean = torch.mean(v).item()  # host sync: a scalar, as MONAI computes it
    std = torch.std(v, unbiased=False).item()
    if std == 0.0:
        std = 1.0
    return (v - mean) / std


def _as_tensor(volume_zyx, device: torch.device) -> torch.Tensor:
    if isinstance(volume_zyx, np.ndarray):
        volume_zyx = torch.from_numpy(np.ascontiguousarray(volume_zyx))
    if not isinstance(volume_zyx, torch.Tensor):
        raise TypeError(f"segment_volume: volume_zyx must be a numpy array or torch tensor, got {type(volume_zyx)}")
    if volume_zyx.ndim != 3:
        raise ValueError(f"segment_volume: volume_zyx must be 3D (z, y, x), got shape {tuple(volume_zyx.shape)}")
    if device.type == "cuda" and volume_zyx.device.type == "cpu" and volume_zyx.is_pinned():
        # the driver's reader pins the next tomogram: an asynchronous copy, ordered before the work that reads it
        return volume_zyx.to(device, non_blocking=True)
    return volume_zyx.to(device)


def check_settings(settings: SegmentConfig) -> None:
    """The checks ``config_from_dict`` makes, for callers that build a SegmentConfig themselves."""
    s = settings
    if s.mode not in MODES:
        raise ConfigError(f"segmentation mode {s.mode!r}: expected one of {', '.join(MODES)}")
    if not 0 <= s.overlap < 1:
        raise ConfigError(f"overlap {s.overlap}: must be >= 0 and < 1 (MONAI sliding windows), e.g. 0.5")
    if s.window_batch < 1:
        raise ConfigError(f"sliding-window batch size {s.window_batch}: must be >= 1")
    if s.blend not in BLENDS:
        raise ConfigError(f"blend {s.blend!r}: expected one of {', '.join(BLENDS)}")
    if s.margin < 0 or not 0 <= s.border_scale < 0.5 or not s.sigma_scale > 0 or not s.window_scale >= 1:
        raise ConfigError(f"margin {s.margin}, border_scale {s.border_scale}, sigma_scale {s.sigma_scale}, "
                          f"window_scale {s.window_scale}: need margin >= 0, 0 <= border_scale < 0.5, "
                          "sigma_scale > 0 and window_scale >= 1")


def _setup(ensemble, settings: SegmentConfig, device: str) -> tuple[torch.device, list, dict]:
    """Device, one runner per model, and the stats every mode reports."""
    check_settings(settings)
    dev = torch.device(device)  # resolved once per worker, by the driver; here only checked
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise DeviceError(f"device {device!r}: torch sees no CUDA device of that number here; use 'cpu' or a GPU it lists")
    precision, why = runtimes.resolve_precision(settings.precision, dev, settings.mode)
    for m in ensemble.models:
        p = next(m.parameters(), None)
        if p is not None and p.device != dev:
            log.debug("moving a model from %s to %s", p.device, dev)
            m.to(dev)
    # compat runs the networks as loaded (octopi's math); fast mode in the runtime's layout
    runtime = settings.runtime if settings.mode == "fast" else "torch"
    if runtime == "onnxruntime" and precision != "fp32":
        precision, why = "fp32", f"runtime onnxruntime runs fp32 ({precision} {why})"
    if settings.mode == "compat" and settings.runtime != "torch":
        log.warning("runtime %s applies to fast mode; compat mode runs torch", settings.runtime)
    if settings.mode == "fast":
        runners = [runtimes.runner(m, dev, runtime, precision) for m in ensemble.models]
    else:
        runners = [_plain_runner(m, dev, precision) for m in ensemble.models]
    stats = {"mode": settings.mode, "device": str(dev), "precision": precision, "precision_reason": why,
             "runtime": runtime, "ntta": settings.ntta, "models": len(runners), "windows": 0,
             "network_voxels": 0}
    return dev, runners, stats


def _plain_runner(model, dev, precision):
    def run(x):
        with runtimes.autocast(precision, dev):
            return model(x)
    return run


def _compat_logits(volume, runners, ensemble, transforms, settings, out_device, stats, progress=None):
    """octopi's loops, verbatim in structure: models x transforms x MONAI windows, float32 sums."""
    acc_models = None
    dev = volume.device
    total = tiling.monai_plan(tuple(volume.shape), ensemble.dim_in, settings.overlap).n_windows * len(transforms)
    total *= len(runners)  # a rotated volume has as many windows: the count per axis is swapped, not changed
    done = [0]
    for run in runners:
        def predictor(batch, run=run):
            out = run(batch.to(dev))
            if progress is not None:
                done[0] += batch.shape[0]
                progress(done[0], total)
            return out

        acc = None
        for t in transforms:
            vt = t.forward(volume)
            plan = tiling.monai_plan(tuple(vt.shape), ensemble.dim_in, settings.overlap)
            logits = tiling.sliding_window(vt, predictor, plan, window_batch=settings.window_batch,
                                           out_device=out_device)
            stats["windows"] += plan.n_windows
            stats["network_voxels"] += plan.n_windows * int(np.prod(plan.window))
            inv = t.inverse(logits).to(torch.float32)
            del logits, vt
            acc = inv if acc is None else acc.add_(inv)
        if len(transforms) > 1:
            acc = acc / len(transforms)
        acc_models = acc if acc_models is None else acc_models.add_(acc)
        del acc
    return acc_models / len(runners)


def _fast_predictor(runners, transforms, max_batch: int):
    """(B, 1, *window) -> (B, C, *window) float32: mean over transforms and models.

    The transformed copies of the B windows that share a shape go through each network together, at most
    ``max_batch`` per forward pass. Outputs may be channels-last (the stitcher reads either).
    """
    count = float(len(transforms) * len(runners))

    def predictor(batch):
        b = batch.shape[0]
        z, y, x = batch.shape[-3:]
        groups: dict[tuple, list] = {}  # transforms whose outputs share a shape run in one forward pass
        for t in transforms:
            groups.setdefault((z, x, y) if t.swaps_yx else (z, y, x), []).append(t)
        parts = []
        for group in groups.values():
            inputs = torch.cat([t.forward(batch) for t in group])
            for run in runners:
                outputs = [run(chunk) for chunk in torch.split(inputs, max_batch)]
                out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
                # inverse transforms in the network's dtype (bf16: half the bytes to move); sums in float32
                parts.extend(t.inverse(out[k * b:(k + 1) * b]) for k, t in enumerate(group))
        total = parts[0].to(torch.float32, copy=True)  # a new tensor: the parts may be views of an output
        for part in parts[1:]:
            total.add_(part)  # a bf16 part is widened exactly, then added in float32
        return total if len(parts) == 1 else total.div_(count)  # a division keeps constant outputs exact

    return predictor


def border_voxels(ensemble, settings: SegmentConfig) -> int:
    return int(round(settings.border_scale * ensemble.dim_in))


def fast_plan(shape_zyx, ensemble, settings: SegmentConfig) -> tiling.TilePlan:
    """Fast mode's windows: the kept parts of neighbours overlap by >= margin (so windows by margin + 2 border)."""
    border = border_voxels(ensemble, settings)
    if settings.margin + 2 * border >= ensemble.dim_in:
        raise ConfigError(f"margin {settings.margin} + 2 x border {border} (border_scale {settings.border_scale}): "
                          f"neighbouring windows cannot overlap that much with the model's dim_in "
                          f"{ensemble.dim_in}; use smaller values")
    return tiling.even_plan(tuple(shape_zyx), ensemble.dim_in, divisor=getattr(ensemble, "size_divisor", 1),
                            max_window=int(settings.window_scale * ensemble.dim_in),
                            margin=settings.margin + 2 * border)


def _counted(predictor, progress, total: int, per_window: int):
    """``predictor`` that reports ``progress(done, total)`` network windows as each batch of windows comes back."""
    if progress is None:
        return predictor
    done = [0]
    progress(0, total)

    def counted(batch):
        out = predictor(batch)
        done[0] += batch.shape[0] * per_window
        progress(done[0], total)
        return out

    return counted


def _fast_stitch(volume, runners, ensemble, transforms, settings, out_device, stats, finish=None, progress=None):
    plan = fast_plan(volume.shape, ensemble, settings)
    weights = tiling.window_weights(plan, settings.blend, sigma_scale=settings.sigma_scale,
                                    border=border_voxels(ensemble, settings), device=volume.device)
    per_window = len(transforms) * len(runners)
    predictor = _counted(_fast_predictor(runners, transforms, max_batch=settings.window_batch), progress,
                         plan.n_windows * per_window, per_window)
    positions = max(1, settings.window_batch // len(transforms))
    channels_last = runtimes.uses_channels_last(stats["runtime"], volume.device)
    n = plan.n_windows * len(transforms) * len(runners)
    stats.update(windows=stats["windows"] + n, network_voxels=stats["network_voxels"] + n * int(np.prod(plan.window)),
                 window_shape=plan.window, border=border_voxels(ensemble, settings), channels_last=channels_last)
    return tiling.sliding_window(volume, predictor, plan, window_batch=positions, weights=weights,
                                 out_device=out_device, out_channels=ensemble.num_classes,
                                 channels_last=channels_last, finish=finish)


def _with_host_fallback(dev, volume, settings, ensemble, work):
    """``work(out_device, attempt)``; on CUDA out of memory once more with the output on the host."""
    out_devices = [dev] if dev.type == "cpu" else [dev, torch.device("cpu")]
    for attempt, out_device in enumerate(out_devices):
        try:
            return work(out_device, attempt)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if attempt + 1 == len(out_devices):
                raise DeviceError(
                    f"CUDA out of memory on {dev} segmenting a {tuple(volume.shape)} tomogram ({settings.mode} "
                    f"mode, window {ensemble.dim_in}, window batch {settings.window_batch}, "
                    f"{len(ensemble.models)} model(s)) even with stitching on the host; use a smaller "
                    "--sliding-window-batch-size, --mode compat, or --device cpu"
                ) from None
            _warn_host_stitching_once(dev)
    raise AssertionError("unreachable")  # pragma: no cover


def compute_logits(volume_zyx, ensemble, settings: SegmentConfig, *, device: str,
                   progress=None) -> tuple[torch.Tensor, dict]:
    """Averaged logits (classes, z, y, x) float32 on the device (or the host after a CUDA OOM) and run stats.

    The whole-volume result, for tests and benchmarks; ``segment_volume`` streams fast mode in z-bands instead.
    """
    dev, runners, stats = _setup(ensemble, settings, device)
    transforms = tta_transforms(settings.ntta)
    with torch.inference_mode():
        volume = normalize_volume(_as_tensor(volume_zyx, dev))

        def work(out_device, attempt):
            s = dict(stats, host_stitching=attempt > 0)
            if settings.mode == "compat":
                return _compat_logits(volume, runners, ensemble, transforms, settings, out_device, s, progress), s
            return _fast_stitch(volume, runners, ensemble, transforms, settings, out_device, s,
                                progress=progress), s

        return _with_host_fallback(dev, volume, settings, ensemble, work)


def segment_volume(volume_zyx, ensemble, settings: SegmentConfig, *, device: str,
                   return_probabilities: bool = False, progress=None) -> SegmentResult:
    """Segment one tomogram (z, y, x) with an ``Ensemble`` from ``pipeline.models.load_ensemble``.

    ``settings``: mode, ntta, tiling, precision and runtime (``pipeline.config.SegmentConfig``; its defaults are
    the only ones). In fast mode ``max(1, window_batch // ntta)`` window positions are taken at a time, their
    ``ntta`` transformed copies going through the network at most ``window_batch`` per forward pass.
    Returns the uint8 label map on ``device`` (and the class probabilities when asked: float16 in fast mode,
    float32 in compat); ``stats`` records what ran, including the precision chosen and why (``precision``,
    ``precision_reason``). ``progress(done, total)`` is called as network windows come back.
    """
    t0 = time.perf_counter()
    if settings.mode == "compat":
        logits, stats = compute_logits(volume_zyx, ensemble, settings, device=device, progress=progress)
        return _compat_labels(logits, stats, t0, return_probabilities)
    dev, runners, stats = _setup(ensemble, settings, device)
    transforms = tta_transforms(settings.ntta)
    with torch.inference_mode():
        volume = normalize_volume(_as_tensor(volume_zyx, dev))

        def work(out_device, attempt):
            s = dict(stats, host_stitching=attempt > 0)
            label_map = torch.empty(volume.shape, dtype=torch.uint8, device=out_device)
            probabilities = None
            if return_probabilities:  # float16: half the memory; labels as without them (argmax of the logits)
                probabilities = torch.empty((ensemble.num_classes, *volume.shape), dtype=torch.float16,
                                            device=out_device)

            def finish(z0, z1, logits):  # a finished z-band of averaged logits
                # argmax of the logits, in their voxel-major layout: that of the softmax (a standard-layout
                # tensor) took 6x as long
                label_map[z0:z1] = torch.argmax(logits, dim=0)
                if probabilities is not None:
                    probabilities[:, z0:z1] = torch.softmax(logits, dim=0)

            _fast_stitch(volume, runners, ensemble, transforms, settings, out_device, s, finish=finish,
                         progress=progress)
            return label_map, probabilities, s

        label_map, probabilities, stats = _with_host_fallback(dev, volume, settings, ensemble, work)
        label_map = label_map.to(dev)
    return _done(SegmentResult(label_map, probabilities, stats), dev, t0)


def _compat_labels(logits, stats, t0, return_probabilities) -> SegmentResult:
    """octopi: softmax once, then argmax; on CUDA out of memory that step runs on the host."""
    dev = torch.device(stats["device"])
    with torch.inference_mode():
        try:
            label_map, probabilities = _labels(logits, True)
        except torch.cuda.OutOfMemoryError:
            pass
        else:
            logits = None
        if logits is not None:  # out of the except block, so the failed attempt's tensors are freed first
            torch.cuda.empty_cache()
            log.warning("CUDA out of memory on %s turning logits into labels: doing that on the host", dev)
            stats["host_labels"] = True
            label_map, probabilities = _labels(logits.cpu(), True)
        del logits
        label_map = label_map.to(dev)
    return _done(SegmentResult(label_map, probabilities if return_probabilities else None, stats), dev, t0)


def _done(result: SegmentResult, dev: torch.device, t0: float) -> SegmentResult:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    result.stats["seconds"] = time.perf_counter() - t0
    log.debug("segmented %s in %.2fs: %s", tuple(result.label_map.shape), result.stats["seconds"], result.stats)
    return result


def _labels(logits: torch.Tensor, softmax: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(uint8 label map, class probabilities or None) from averaged logits, on the logits' device."""
    if not softmax:
        return torch.argmax(logits, dim=0).to(torch.uint8), None
    probabilities = torch.softmax(logits, dim=0)
    return torch.argmax(probabilities, dim=0).to(torch.uint8), probabilities


def _warn_host_stitching_once(dev) -> None:
    global _warned_host_stitching
    if not _warned_host_stitching:
        log.warning("CUDA out of memory on %s: stitching windows on the host from now on (slower)", dev)
        _warned_host_stitching = True


def save_probabilities(path, probabilities, labels: dict[str, int], voxel_size: float | None = None,
                       run_id: str | None = None) -> None:
    """Per-class probabilities (classes, z, y, x) -> HDF5 ``probabilities`` (float16, chunked, gzip) + label names.

    Attributes: ``labels`` (JSON object name -> class index), ``axes`` = "c,z,y,x" and, when given,
    ``voxel_size`` (Angstrom; a reader at another voxel size is refused instead of scaling every pick) and ``run``
    (the copick run they were segmented from; a copy under another run's name is refused). Read with
    ``h5py.File(path)["probabilities"][label]`` or drag into napari via an HDF5 reader.
    """
    import json
    from pathlib import Path

    import h5py

    if isinstance(probabilities, torch.Tensor):
        probabilities = probabilities.detach().to("cpu", torch.float16).numpy()
    probabilities = np.asarray(probabilities, dtype=np.float16)
    if probabilities.ndim != 4:
        raise ValueError(f"save_probabilities: expected (classes, z, y, x), got shape {probabilities.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    chunks = (1, *[min(64, s) for s in probabilities.shape[1:]])
    with h5py.File(tmp, "w") as fh:
        ds = fh.create_dataset("probabilities", data=probabilities, chunks=chunks, compression="gzip",
                               compression_opts=4, shuffle=True)
        ds.attrs["labels"] = json.dumps({str(k): int(v) for k, v in labels.items()})
        ds.attrs["axes"] = "c,z,y,x"
        if voxel_size is not None:
            ds.attrs["voxel_size"] = float(voxel_size)
        if run_id is not None:
            ds.attrs["run"] = str(run_id)
    tmp.replace(path)
