"""Where sliding windows go, how they are weighted, and how their outputs are stitched.

Two plans share one stitcher (``sliding_window``):

- ``monai_plan``: exactly MONAI ``sliding_window_inference``'s windows (``_get_scan_interval`` +
  ``dense_patch_slices``: interval ``int(window * (1 - overlap))``, the last window pushed back to end at the
  border, z slowest) and its symmetric zero padding when the volume is smaller than the window (``diff // 2``
  before). With constant weights the stitcher adds window outputs in MONAI's order and divides by the same
  integer counts, so the result is bit-for-bit MONAI's for the same network outputs.
- ``even_plan``: ours. Per axis the fewest windows of at most ``max_window`` voxels (default ``dim_in``) that
  overlap by at least ``margin`` (default 0), spread evenly (nnU-Net style), each side at least the network's
  ``dim_in`` and congruent to it modulo the network's size divisor; Gaussian weights so window borders count
  little, optionally a band of ``border`` voxels at each inner window face that counts for nothing
  (``window_weights``).

The stitcher keeps either the whole (classes, Z, Y, X) sum, or (``finish``) only the z-band that the current
windows touch, handing each finished band on as soon as no later window reaches it: the same numbers either
way, for a fraction of the memory.

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


def window_weights(plan: TilePlan, blend: str = "constant", *, sigma_scale: float = 0.125, border: int = 0,
                   device: str | torch.device = "cpu"):
    """Weights of ``plan``'s windows for ``sliding_window``: None (constant), one (z, y, x) tensor (Gaussian), or
    with ``border`` a function of the window index: the blend weights times 0 in a band of ``border`` voxels at
    each window face that lies inside the padded volume (faces on its edge keep theirs: nothing else covers them).
    Neighbours must then overlap by at least ``2 * border`` voxels, or voxels between them get no weight at all.
    """
    border = int(border)
    base = blend_weights(plan.window, blend, sigma_scale=sigma_scale, device=device)
    if border <= 0:
        return base
    if base is None:
        base = torch.ones(plan.window, dtype=torch.float32, device=device)
    masked: dict[tuple, torch.Tensor] = {}

    def weight_of(i: int) -> torch.Tensor:
        key = tuple((int(s) > 0, int(s) + w < p) for s, w, p in zip(plan.starts[i], plan.window, plan.padded_shape))
        if key not in masked:
            w = base.clone()
            for axis, (cut_before, cut_after) in enumerate(key):
                index = [slice(None)] * 3
                if cut_before:
                    index[axis] = slice(0, border)
                    w[tuple(index)] = 0
                if cut_after:
                    index[axis] = slice(plan.window[axis] - border, None)
                    w[tuple(index)] = 0
            masked[key] = w
        return masked[key]

    return weight_of


def sliding_window(
    volume: torch.Tensor,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    plan: TilePlan,
    *,
    window_batch: int = 4,
    weights=None,
    out_device: str | torch.device | None = None,
    out_channels: int | None = None,
    channels_last: bool = False,
    finish: Callable[[int, int, torch.Tensor], None] | None = None,
) -> torch.Tensor | None:
    """Stitch ``predictor`` outputs over ``plan``'s windows: (Z, Y, X) volume -> (C, Z, Y, X) float32.

    ``predictor`` maps (B, 1, *window) to (B, C, *window). Windows are taken in plan order (z slowest),
    ``window_batch`` per call; each output (times its weights when given: a tensor, or a function of the window
    index, see ``window_weights``) is added to a float32 buffer on ``out_device`` in that order, and the sum is
    divided by the summed weights (integer counts for constant weights), as MONAI does.
    ``channels_last``: the buffer is stored voxel-major (Z, Y, X, C) and returned as a (C, Z, Y, X) view of it:
    adding channels-last window outputs and the final argmax over classes then read memory in order.
    ``finish``: instead of returning the whole result, call ``finish(z0, z1, logits)`` for consecutive z-bands
    of the volume as given (each once, in order; ``logits`` (C, z1 - z0, Y, X) is valid during the call only) and
    return None; the buffer then holds one window depth of z instead of the whole volume. Every voxel's sum gets
    the same terms in the same order either way, so the numbers are identical.
    """
    out_device = torch.device(out_device) if out_device is not None else volume.device
    padded = volume
    if any(plan.pad_before) or plan.padded_shape != tuple(volume.shape):
        pads = []
        for b, s, p in zip(reversed(plan.pad_before), reversed(volume.shape), reversed(plan.padded_shape)):
            pads.extend([b, p - s - b])
        padded = torch.nn.functional.pad(volume[None, None], pads, mode="constant", value=0.0)[0, 0]
    weight_of = weights if callable(weights) else (lambda i: weights)
    depth = plan.window[0] if finish is not None else plan.padded_shape[0]
    band_shape = (depth, *plan.padded_shape[1:])
    count = torch.zeros((1, *band_shape), dtype=torch.float32, device=out_device)
    crop_z, crop_y, crop_x = plan.crop()
    state = {"base": 0, "output": None}  # padded z of the buffer's first row; the buffer, once channels are known

    def flush(upto: int) -> None:
        """Divide rows [base, upto) by their weights, hand the volume's part on, shift the rest to the front."""
        base, output = state["base"], state["output"]
        k = upto - base
        if k <= 0:
            return
        z0, z1 = max(base, crop_z.start), min(upto, crop_z.stop)
        if z1 > z0:
            rows = slice(z0 - base, z1 - base)
            band = output[:, rows].div_(count[:, rows])
            finish(z0 - crop_z.start, z1 - crop_z.start, band[:, :, crop_y, crop_x])
        for j in range(depth - k):  # row by row, ascending: never reads a row already overwritten
            output[:, j].copy_(output[:, j + k])
            count[:, j].copy_(count[:, j + k])
        output[:, depth - k:].zero_()
        count[:, depth - k:].zero_()
        state["base"] = upto

    for b0 in range(0, plan.n_windows, window_batch):
        idx = range(b0, min(b0 + window_batch, plan.n_windows))
        batch = torch.stack([padded[plan.slices(i)] for i in idx])[:, None]
        pred = predictor(batch).to(out_device)
        window_w = [None if w is None else w.to(out_device) for w in (weight_of(i) for i in idx)]
        if state["output"] is None:
            channels = out_channels or pred.shape[1]
            if channels_last:
                buffer = torch.zeros((*band_shape, channels), dtype=torch.float32, device=out_device)
                state["output"] = buffer.permute(3, 0, 1, 2)
            else:
                state["output"] = torch.zeros((channels, *band_shape), dtype=torch.float32, device=out_device)
        for j, i in enumerate(idx):
            if finish is not None:
                flush(int(plan.starts[i][0]))
            sl = plan.slices(i)
            rel = (slice(sl[0].start - state["base"], sl[0].stop - state["base"]), *sl[1:])
            w = window_w[j]
            if w is None:
                state["output"][(slice(None), *rel)] += pred[j]
                count[(slice(None), *rel)] += 1.0
            else:  # output + prediction x weight in one pass, no weighted copy of the prediction
                state["output"][(slice(None), *rel)].addcmul_(pred[j], w)
                count[(slice(None), *rel)] += w
    output = state["output"]
    if finish is not None:
        flush(state["base"] + depth)
        return None
    output /= count
    return output[(slice(None), *plan.crop())]
