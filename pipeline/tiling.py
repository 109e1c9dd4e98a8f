"""Where sliding windows go, how they are weighted, and how their outputs are stitched.

Two plans share one stitcher (``sliding_window``):

- ``monai_plan``: exactly MONAI ``sliding_window_inference``'s windows (``_get_scan_interval`` +
  ``dense_patch_slices``: interval ``int(window * (1 - overlap))``, the last window pushed back to end at the
  border, z slowest) and its symmetric zero padding when the volume is smaller than the window (``diff // 2``
  before). With constant weights the stitcher adds window outputs in MONAI's order and divides by the same
  integer counts, so the result is bit-for-bit MONAI's for the same network outputs.
- ``even_plan``: ours. Per axis the fewest windows of at most ``max_window`` voxels (default ``dim_in``) that
  overlap by at least ``margin`` (default 0), spread evenly (nnU-Net style), each side at least the network's
  ``dim_in`` and congruent to it modulo the network's size divisor; Gaussian weights so window borders count little.

Everything here is z, y, x voxels.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TilePlan:
    """Windows over a (possibly padded) volume: ``starts`` (N, 3) z, y, x in the padded frame."""

    image_shape: tuple[int, int, int]  # the volume as given
    padded_shape: tuple[int, int, int]
    pad_before: tuple[int, int, int]
    window: tuple[int, int, int]
    starts: np.ndarray

    @property
    def n_windows(self) -> int:
        return len(self.starts)

    def slices(self, i: int) -> tuple[slice, slice, slice]:
        return tuple(slice(int(s), int(s) + w) for s, w in zip(self.starts[i], self.window))

    def crop(self) -> tuple[slice, slice, slice]:
        """Slices that take the padded frame back to the volume as given."""
        return tuple(slice(p, p + s) for p, s in zip(self.pad_before, self.image_shape))


def monai_pad(shape: Sequence[int], window: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """MONAI's padding when a side is smaller than the window: ``diff // 2`` before, the rest after."""
    before, after = [], []
    for s, w in zip(shape, window):
        diff = max(w - s, 0)
        before.append(diff // 2)
        after.append(diff - diff // 2)
    return tuple(before), tuple(after)


def monai_scan_interval(image_size: Sequence[int], window: Sequence[int], overlap: float) -> tuple[int, ...]:
    """``monai.inferers.utils._get_scan_interval``: ``int(window * (1 - overlap))`` (>= 1); the window when equal."""
    out = []
    for s, w in zip(image_size, window):
        if w == s:
            out.append(int(w))
        else:
            interval = int(w * (1 - overlap))
            out.append(interval if interval > 0 else 1)
    return tuple(out)


def monai_axis_starts(size: int, window: int, interval: int) -> list[int]:
    """``monai.data.utils.dense_patch_slices`` along one axis (window <= size)."""
    num = int(math.ceil(float(size) / interval))
    scan_num = next((d + 1 for d in range(num) if d * interval + window >= size), 1)
    return [i * interval - max(i * interval + window - size, 0) for i in range(scan_num)]


def _grid(axis_starts: Sequence[Sequence[int]]) -> np.ndarray:
    """All combinations, first axis slowest (``np.meshgrid(..., indexing="ij")`` as MONAI)."""
    mesh = np.meshgrid(*[np.asarray(a, dtype=np.int64) for a in axis_starts], indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


def monai_plan(shape: Sequence[int], window: int | Sequence[int], overlap: float) -> TilePlan:
    shape = tuple(int(s) for s in shape)
    window = (int(window),) * 3 if np.isscalar(window) else tuple(int(w) for w in window)
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be >= 0 and < 1, got {overlap}")
    before, after = monai_pad(shape, window)
    padded = tuple(s + b + a for s, b, a in zip(shape, before, after))
    interval = monai_scan_interval(padded, window, overlap)
    starts = _grid([monai_axis_starts(s, w, i) for s, w, i in zip(padded, window, interval)])
    return TilePlan(shape, padded, before, window, starts)


def even_axis(size: int, dim_in: int, divisor: int, max_window: int, margin: int) -> tuple[int, list[int]]:
    """Window side and starts along one axis for ``even_plan``.

    Side: >= dim_in and ``dim_in + k * divisor``; the fewest windows whose side stays <= max_window while
    neighbours overlap by >= margin. A volume side below dim_in gets one window of dim_in (padded).
    """
    if size <= dim_in:
        return dim_in, [0]
    max_window = max(max_window, dim_in)
    margin = min(margin, dim_in - 1)

    def side_for(need: int) -> int:
        return dim_in + divisor * math.ceil(max(need - dim_in, 0) / divisor)

    n = 1
    while True:
        side = side_for(math.ceil((size + (n - 1) * margin) / n))
        if side <= max_window or side == dim_in:
            break
        n += 1
    if side >= size:
        return side, [0]
    starts = np.round(np.linspace(0, size - side, n)).astype(int).tolist()
    return side, starts


def even_plan(
    shape: Sequence[int], dim_in: int, *, divisor: int = 1, max_window: int | None = None, margin: int | None = None
) -> TilePlan:
    shape = tuple(int(s) for s in shape)
    max_window = dim_in if max_window is None else int(max_window)
    margin = 0 if margin is None else int(margin)
    sides, axis_starts = zip(*[even_axis(s, dim_in, divisor, max_window, margin) for s in shape])
    before, after = monai_pad(shape, sides)
    padded = tuple(s + b + a for s, b, a in zip(shape, before, after))
    return TilePlan(shape, padded, before, tuple(sides), _grid(axis_starts))


WEIGHT_STEPS = 256  # Gaussian weights are multiples of 1/256: see _gaussian_cpu


@functools.lru_cache(maxsize=16)
def _gaussian_cpu(window: tuple[int, int, int], sigma_scale: float) -> torch.Tensor:
    """Separable Gaussian, sigma = sigma_scale * side, peak 1, floor 1/256 (MONAI clamps at 1e-3).

    Rounded to multiples of 1/256: weight x value and the sums of a few of them are then exact for values with
    up to ~12 significant bits, so a predictor that returns the same value from every window is stitched back
    to exactly that value (the invariant tests/test_tiling.py checks); the rounding moves no weight by more
    than 0.2 % of the peak.
    """
    w = None
    for i, side in enumerate(window):
        x = torch.arange(side, dtype=torch.float64) - (side - 1) / 2.0
        g = torch.exp(-(x**2) / (2 * (sigma_scale * side) ** 2))
        w = g if w is None else w[..., None] * g.reshape((1,) * i + (side,))
    w = torch.round(w / w.max() * WEIGHT_STEPS).clamp_(min=1) / WEIGHT_STEPS
    return w.to(torch.float32)


_weights_cache: dict = {}


def blend_weights(window: Sequence[int], mode: str = "constant", *, sigma_scale: float = 0.125,
                  device: str | torch.device = "cpu") -> torch.Tensor | None:
    """Per-voxel window weight (z, y, x), cached per device; ``None`` for constant (weight 1, nothing to multiply)."""
    if mode == "constant":
        return None
    if mode != "gaussian":
        raise ValueError(f"blend mode {mode!r}: expected 'constant' or 'gaussian'")
    key = (tuple(int(w) for w in window), float(sigma_scale), str(device))
    if key not in _weights_cache:
        if len(_weights_cache) > 32:
            _weights_cache.clear()
        _weights_cache[key] = _gaussian_cpu(key[0], key[1]).to(device)
    return _weights_cache[key]


def sliding_window(
    volume: torch.Tensor,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    plan: TilePlan,
    *,
    window_batch: int = 4,
    weights: torch.Tensor | None = None,
    out_device: str | torch.device | None = None,
    out_channels: int | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Stitch ``predictor`` outputs over ``plan``'s windows: (Z, Y, X) volume -> (C, Z, Y, X) float32.

    ``predictor`` maps (B, 1, *window) to (B, C, *window). Windows are taken in plan order, ``window_batch`` per
    call; each output (times ``weights`` when given) is added to a float32 buffer on ``out_device`` in that order,
    and the sum is divided by the summed weights (integer counts for constant weights), as MONAI does.
    ``channels_last``: the buffer is stored voxel-major (Z, Y, X, C) and returned as a (C, Z, Y, X) view of it:
    adding channels-last window outputs and the final argmax over classes then read memory in order.
    """
    out_device = torch.device(out_device) if out_device is not None else volume.device
    padded = volume
    if any(plan.pad_before) or plan.padded_shape != tuple(volume.shape):
        pads = []
        for b, s, p in zip(reversed(plan.pad_before), reversed(volume.shape), reversed(plan.padded_shape)):
            pads.extend([b, p - s - b])
        padded = torch.nn.functional.pad(volume[None, None], pads, mode="constant", value=0.0)[0, 0]
    output = None
    count = torch.zeros((1, *plan.padded_shape), dtype=torch.float32, device=out_device)
    w_out = weights.to(out_device) if weights is not None else None
    for i in range(plan.n_windows):
        sl = plan.slices(i)
        if w_out is None:
            count[(slice(None), *sl)] += 1.0
        else:
            count[(slice(None), *sl)] += w_out
    for b0 in range(0, plan.n_windows, window_batch):
        idx = range(b0, min(b0 + window_batch, plan.n_windows))
        batch = torch.stack([padded[plan.slices(i)] for i in idx])[:, None]
        pred = predictor(batch)
        if weights is not None:
            pred = pred * weights.to(pred.device)
        pred = pred.to(out_device)
        if output is None:
            channels = out_channels or pred.shape[1]
            if channels_last:
                output = torch.zeros((*plan.padded_shape, channels), dtype=torch.float32, device=out_device)
                output = output.permute(3, 0, 1, 2)
            else:
                output = torch.zeros((channels, *plan.padded_shape), dtype=torch.float32, device=out_device)
        for j, i in enumerate(idx):
            output[(slice(None), *plan.slices(i))] += pred[j]
    output /= count
    return output[(slice(None), *plan.crop())]
