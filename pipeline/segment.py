"""Tomogram -> label map: normalisation, test-time transforms x sliding windows x models -> logits -> argmax.

Two modes, one code path for every device (spec section 3):

- ``compat`` reproduces octopi 1.7: for each model and each of the first ``ntta`` transforms, transform the
  whole volume, run MONAI ``sliding_window_inference``'s windows (window ``dim_in``, ``overlap``, constant
  blending, zero padding; ``pipeline.tiling.monai_plan``), inverse-transform the logits and add them in float32;
  divide by the transforms, average over models, softmax, argmax.
- ``fast`` (default) gives the same answer for much less work: windows of ``dim_in`` spread evenly over each
  axis with the least overlap that covers it (``tiling.even_plan``; octopi's 50 % overlap runs ~4x more windows
  per transform on a 96x256x256 tomogram), Gaussian blending where windows do overlap, the ``ntta`` transforms of
  one window batched into one forward pass (one window read, one stitch), argmax of the averaged logits (softmax
  does not change it). Larger windows are an option (``FastOptions.max_window``), not the default: networks with
  instance normalisation (all octopi defaults) segment worse on windows larger than they were trained on.

On CUDA the tomogram, the logits and the label map stay on the device; the label map comes back as a device
tensor. When CUDA runs out of memory we stitch on the host instead (logged once) and fail with advice if even
that does not fit; softmax/argmax that do not fit on the device run on the host. The network runs under fp16
autocast on CUDA by default (as octopi), float32 on the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline import tiling
from pipeline.device import resolve_device
from pipeline.errors import ConfigError, DeviceError
from pipeline.tta import tta_transforms

log = logging.getLogger(__name__)

MODES = ("fast", "compat")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

_warned_host_stitching = False
# loaded network -> {device: its channels-last copy}: converted once per model and device, not once per tomogram
# (inference only: a network whose weights change after its first fast-mode use would need a fresh copy)
_channels_last_copies: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class FastOptions:
    """Knobs of ``mode='fast'`` (defaults measured in benchmarks/bench_segment.py, see benchmarks/RESULTS.md).

    ``max_window``: largest window side in voxels (None: dim_in); ``margin``: least overlap between neighbouring
    windows in voxels (windows spread evenly, so most overlap more); ``sigma_scale``: Gaussian sigma as a fraction
    of the window side; ``channels_last``: run the networks in channels-last-3d memory format (None: on the CPU,
    where fast mode ran 1.1-1.3x quicker that way in benchmarks/RESULTS.md; not on CUDA, unmeasured there);
    ``compile``: ``torch.compile``.
    """

    max_window: int | None = None
    margin: int = 0
    sigma_scale: float = 0.125
    channels_last: bool | None = None
    compile: bool = False

    def use_channels_last(self, device: torch.device) -> bool:
        return device.type == "cpu" if self.channels_last is None else bool(self.channels_last)


@dataclass
class SegmentResult:
    label_map: torch.Tensor  # uint8 (z, y, x) on the device asked for
    probabilities: torch.Tensor | None = None  # float32 (classes, z, y, x), softmax of the averaged logits
    stats: dict = field(default_factory=dict)


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


def _resolve_precision(precision: str, device: torch.device) -> str:
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if device.type == "cpu" and precision != "fp32":
        log.warning("precision %s on the CPU: autocast there is usually slower than fp32 and agrees less", precision)
    return precision


def _autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


class ChannelsLastInstanceNorm3d(torch.nn.Module):
    """``InstanceNorm3d`` (no running statistics) that keeps its input's memory format.

    torch's own instance norm turns a channels-last input into a standard one (and is slower on it: 26 ms
    against this one's 19.5 ms for (8, 32, 32, 32, 32) on 2 CPU cores), which would cost two layout conversions
    around every convolution. Same statistics (biased variance, ``eps``), computed on a (batch, voxels, channels)
    view; equal to torch's within float32 rounding.
    """

    def __init__(self, norm: torch.nn.InstanceNorm3d):
        super().__init__()
        self.eps = norm.eps
        self.weight = norm.weight if norm.affine else None
        self.bias = norm.bias if norm.affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            return torch.nn.functional.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        b, c = x.shape[:2]
        # statistics in float32, as torch's own norm keeps them: squares of fp16 activations overflow past 256
        v = x.permute(0, 2, 3, 4, 1).reshape(b, -1, c).float()  # a view when x is channels-last float32
        centred = v - v.mean(dim=1, keepdim=True)
        var = (centred * centred).mean(dim=1, keepdim=True)
        out = centred.mul_(torch.rsqrt(var + self.eps))
        if self.weight is not None:
            out = out.mul_(self.weight).add_(self.bias)
        return out.to(x.dtype).reshape(b, *x.shape[2:], c).permute(0, 4, 1, 2, 3)


def channels_last_network(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` in channels-last-3d memory format with layout-keeping instance norms (same function)."""
    import copy

    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.InstanceNorm3d) and not child.track_running_stats:
                setattr(module, name, ChannelsLastInstanceNorm3d(child))
    return model.to(memory_format=torch.channels_last_3d)


def _prepare_models(ensemble, device: torch.device, options: FastOptions | None):
    models = []
    for m in ensemble.models:
        p = next(m.parameters(), None)
        if p is not None and p.device != device:
            log.debug("moving a model from %s to %s", p.device, device)
            m.to(device)
        if options is not None and options.use_channels_last(device):
            # a copy: compat mode and the caller keep the model as loaded
            copies = _channels_last_copies.setdefault(m, {})
            if device not in copies:
                copies[device] = channels_last_network(m)
            m = copies[device]
        if options is not None and options.compile:
            m = torch.compile(m)
        models.append(m)
    return models


def _compat_logits(volume, models, ensemble, transforms, overlap, window_batch, precision, device, out_device, stats):
    """octopi's loops, verbatim in structure: models x transforms x MONAI windows, float32 sums."""
    dim_in = ensemble.dim_in
    acc_models = None
    for model in models:
        def predictor(batch, model=model):
            with _autocast(precision, device):
                return model(batch.to(device))

        acc = None
        for t in transforms:
            vt = t.forward(volume)
            plan = tiling.monai_plan(tuple(vt.shape), dim_in, overlap)
            logits = tiling.sliding_window(vt, predictor, plan, window_batch=window_batch, out_device=out_device)
            stats["windows"] += plan.n_windows
            stats["network_voxels"] += plan.n_windows * int(np.prod(plan.window))
            inv = t.inverse(logits).to(torch.float32)
            del logits, vt
            acc = inv if acc is None else acc.add_(inv)
        if len(transforms) > 1:
            acc = acc / len(transforms)
        acc_models = acc if acc_models is None else acc_models.add_(acc)
        del acc
    return acc_models / len(models)


def _fast_predictor(models, transforms, precision, device, channels_last, max_batch: int = 8):
    """(B, 1, *window) -> (B, C, *window) float32: mean over transforms and models.

    The transformed copies of the B windows that share a shape go through each network together, at most
    ``max_batch`` per forward pass. With ``channels_last`` the output keeps that memory format (the stitcher
    reads either).
    """
    count = float(len(transforms) * len(models))
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format

    def predictor(batch):
        batch = batch.to(device)
        b = batch.shape[0]
        z, y, x = batch.shape[-3:]
        groups: dict[tuple, list] = {}  # transforms whose outputs share a shape run in one forward pass
        for t in transforms:
            groups.setdefault((z, x, y) if t.swaps_yx else (z, y, x), []).append(t)
        parts = []
        for group in groups.values():
            x = torch.cat([t.forward(batch) for t in group]).contiguous(memory_format=layout)
            for model in models:
                with _autocast(precision, device):
                    outputs = [model(chunk) for chunk in torch.split(x, max_batch)]
                y = (outputs[0] if len(outputs) == 1 else torch.cat(outputs)).float()
                parts.extend(t.inverse(y[k * b:(k + 1) * b]) for k, t in enumerate(group))
        if len(parts) == 1:
            return parts[0]
        total = parts[0] + parts[1]  # a new tensor: the parts may be views of a network's output
        for part in parts[2:]:
            total.add_(part)
        return total.div_(count)  # a division keeps constant outputs exact (x / 3 * 3 may not be x)

    return predictor


def _fast_logits(volume, models, ensemble, transforms, window_batch, precision, device, out_device, options, stats):
    divisor = getattr(ensemble, "size_divisor", 1)
    plan = tiling.even_plan(tuple(volume.shape), ensemble.dim_in, divisor=divisor,
                            max_window=options.max_window or ensemble.dim_in, margin=options.margin)
    weights = tiling.blend_weights(plan.window, "gaussian", sigma_scale=options.sigma_scale, device=device)
    channels_last = options.use_channels_last(device)
    predictor = _fast_predictor(models, transforms, precision, device, channels_last, max_batch=window_batch)
    positions = max(1, window_batch // len(transforms))
    stats["windows"] += plan.n_windows * len(transforms) * len(models)
    stats["network_voxels"] += plan.n_windows * len(transforms) * len(models) * int(np.prod(plan.window))
    stats["window_shape"] = plan.window
    stats["channels_last"] = channels_last
    return tiling.sliding_window(volume, predictor, plan, window_batch=positions, weights=weights,
                                 out_device=out_device, out_channels=ensemble.num_classes, channels_last=channels_last)


def compute_logits(
    volume_zyx,
    ensemble,
    *,
    device: str = "cpu",
    mode: str = "fast",
    ntta: int = 4,
    overlap: float = 0.5,
    window_batch: int = 4,
    precision: str = "auto",
    fast_options: FastOptions | None = None,
) -> tuple[torch.Tensor, dict]:
    """Averaged logits (classes, z, y, x) float32 on the device (or the host after a CUDA OOM) and run stats."""
    if mode not in MODES:
        raise ConfigError(f"segmentation mode {mode!r}: expected one of {', '.join(MODES)}")
    if not 0 <= overlap < 1:
        raise ConfigError(f"overlap {overlap}: must be >= 0 and < 1 (MONAI sliding windows), e.g. 0.5")
    if window_batch < 1:
        raise ConfigError(f"sliding-window batch size {window_batch}: must be >= 1")
    choice = resolve_device(str(device))
    dev = torch.device(choice.torch_device)
    precision = _resolve_precision(precision, dev)
    options = fast_options or FastOptions()
    transforms = tta_transforms(ntta)
    models = _prepare_models(ensemble, dev, options if mode == "fast" else None)

    with torch.inference_mode():
        volume = normalize_volume(_as_tensor(volume_zyx, dev))
        out_devices = [dev] if dev.type == "cpu" else [dev, torch.device("cpu")]
        for attempt, out_device in enumerate(out_devices):
            stats = {"mode": mode, "device": str(dev), "precision": precision, "ntta": ntta,
                     "models": len(models), "windows": 0, "network_voxels": 0, "host_stitching": attempt > 0}
            try:
                if mode == "compat":
                    logits = _compat_logits(volume, models, ensemble, transforms, overlap, window_batch, precision,
                                            dev, out_device, stats)
                else:
                    logits = _fast_logits(volume, models, ensemble, transforms, window_batch, precision, dev,
                                          out_device, options, stats)
                return logits, stats
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if attempt + 1 == len(out_devices):
                    raise DeviceError(
                        f"CUDA out of memory on {dev} segmenting a {tuple(volume.shape)} tomogram ({mode} mode, "
                        f"window {ensemble.dim_in}, window batch {window_batch}, {len(models)} model(s)) even with "
                        "stitching on the host; use a smaller --sliding-window-batch-size, --mode compat, or "
                        "--device cpu"
                    ) from None
                _warn_host_stitching_once(dev)
    raise AssertionError("unreachable")  # pragma: no cover


def segment_volume(
    volume_zyx,
    ensemble,
    *,
    device: str = "cpu",
    mode: str = "fast",
    ntta: int = 4,
    overlap: float = 0.5,
    window_batch: int = 4,
    precision: str = "auto",
    return_probabilities: bool = False,
    fast_options: FastOptions | None = None,
) -> SegmentResult:
    """Segment one tomogram (z, y, x) with an ``Ensemble`` from ``pipeline.models.load_ensemble``.

    ``overlap`` and ``window_batch`` are MONAI's (compat); fast mode uses ``fast_options`` for its windows and
    takes ``max(1, window_batch // ntta)`` window positions at a time, their ``ntta`` transformed copies going
    through the network at most ``window_batch`` per forward pass.
    Returns the uint8 label map on ``device`` (and the class probabilities when asked).
    """
    t0 = time.perf_counter()
    logits, stats = compute_logits(volume_zyx, ensemble, device=device, mode=mode, ntta=ntta, overlap=overlap,
                                   window_batch=window_batch, precision=precision, fast_options=fast_options)
    dev = torch.device(stats["device"])
    with torch.inference_mode():
        softmax = mode == "compat" or return_probabilities  # octopi: softmax once, then argmax
        try:
            label_map, probabilities = _labels(logits, softmax)
        except torch.cuda.OutOfMemoryError:
            pass
        else:
            logits = None
        if logits is not None:  # out of the except block, so the failed attempt's tensors are freed first
            torch.cuda.empty_cache()
            log.warning("CUDA out of memory on %s turning logits into labels: doing that on the host", dev)
            stats["host_labels"] = True
            label_map, probabilities = _labels(logits.cpu(), softmax)
        del logits
        label_map = label_map.to(dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    stats["seconds"] = time.perf_counter() - t0
    log.debug("segmented %s in %.2fs: %s", tuple(label_map.shape), stats["seconds"], stats)
    return SegmentResult(label_map, probabilities if return_probabilities else None, stats)


def _labels(logits: torch.Tensor, softmax: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(uint8 label map, class probabilities or None) from averaged logits, on the logits' device."""
    if not softmax:
        return torch.argmax(logits, dim=0).to(torch.uint8), None
    probabilities = torch.softmax(logits, dim=0)
    return torch.argmax(probabilities, dim=0).to(torch.uint8), probabilities


def reference_logits(volume_zyx, ensemble, *, ntta: int = 4, overlap: float = 0.5, window_batch: int = 4,
                     device: str = "cpu", precision: str = "auto") -> torch.Tensor:
    """The yardstick: octopi 1.7's math with MONAI's own ``sliding_window_inference`` (tests and benchmarks).

    MONAI ``NormalizeIntensity``; per model, per transform: transform, ``sliding_window_inference`` (constant
    blending, zero padding), inverse, float32 sum; / transforms; mean over models. Returns (C, z, y, x) float32.
    """
    from monai.inferers import sliding_window_inference
    from monai.transforms import NormalizeIntensity

    dev = torch.device(resolve_device(str(device)).torch_device)
    precision = _resolve_precision(precision, dev)
    x = volume_zyx if isinstance(volume_zyx, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(volume_zyx))
    x = torch.as_tensor(NormalizeIntensity()(x[None]))[None].to(dev)
    transforms = tta_transforms(ntta)
    acc = torch.zeros((ensemble.num_classes, *x.shape[2:]), dtype=torch.float32, device=dev)
    with torch.inference_mode():
        for model in ensemble.models:
            model.to(dev)
            per_model = torch.zeros_like(acc)
            for t in transforms:
                with _autocast(precision, dev):
                    pred = sliding_window_inference(t.forward(x), (ensemble.dim_in,) * 3, window_batch, model,
                                                    overlap=overlap, sw_device=dev, device=dev)
                per_model += t.inverse(torch.as_tensor(pred)[0].to(torch.float32))
            acc += per_model / len(transforms)
    return acc / len(ensemble.models)


def _warn_host_stitching_once(dev) -> None:
    global _warned_host_stitching
    if not _warned_host_stitching:
        log.warning("CUDA out of memory on %s: stitching windows on the host from now on (slower)", dev)
        _warned_host_stitching = True


def save_probabilities(path, probabilities, labels: dict[str, int]) -> None:
    """Per-class probabilities (classes, z, y, x) -> HDF5 ``probabilities`` (float16, chunked, gzip) + label names.

    Attributes: ``labels`` (JSON object name -> class index) and ``axes`` = "c,z,y,x". Read with
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
    tmp.replace(path)
