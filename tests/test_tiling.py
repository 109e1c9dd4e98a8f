"""pipeline.tiling: MONAI's window placement reproduced, our even plan's guarantees, and the stitching invariant."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import tiling

sides = st.integers(min_value=3, max_value=70)
overlaps = st.sampled_from([0.0, 0.1, 0.25, 0.33, 0.5, 0.625, 0.75])


def monai_reference_starts(shape, window, overlap):
    """Window starts as MONAI's own sliding_window_inference computes them (its private helpers)."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    image_size = tuple(max(s, w) for s, w in zip(shape, window))
    interval = _get_scan_interval(image_size, window, 3, (overlap,) * 3)
    slices = dense_patch_slices(image_size, window, interval)
    return np.array([[s.start for s in sl] for sl in slices])


@settings(max_examples=80, deadline=None)
@given(z=sides, y=sides, x=sides, w=st.integers(4, 40), overlap=overlaps)
def test_monai_plan_places_windows_like_monai(z, y, x, w, overlap):
    plan = tiling.monai_plan((z, y, x), w, overlap)
    want = monai_reference_starts((z, y, x), (w, w, w), overlap)
    np.testing.assert_array_equal(plan.starts, want)  # same windows, same order
    # MONAI pads diff // 2 before, the rest after, only where the volume is smaller than the window
    for s, b, p in zip((z, y, x), plan.pad_before, plan.padded_shape):
        assert p == max(s, w) and b == max(w - s, 0) // 2


def sliding_affine(volume, plan, window_batch, weights=None):
    return tiling.sliding_window(volume, lambda b: 2 * b + 1, plan, window_batch=window_batch, weights=weights)


small_sides = st.integers(min_value=3, max_value=40)


@settings(max_examples=40, deadline=None)
@given(z=small_sides, y=small_sides, x=small_sides, w=st.integers(6, 40),
       overlap=st.sampled_from([0.0, 0.1, 0.25, 0.33, 0.5, 0.625]), batch=st.integers(1, 5),
       seed=st.integers(0, 2**31 - 1))
def test_constant_blending_returns_affine_exactly(z, y, x, w, overlap, batch, seed):
    vol = torch.from_numpy(np.random.default_rng(seed).integers(-500, 500, (z, y, x)).astype(np.float32))
    out = sliding_affine(vol, tiling.monai_plan(vol.shape, w, overlap), batch)
    assert out.shape == (1, z, y, x) and out.dtype == torch.float32
    assert torch.equal(out[0], 2 * vol + 1)


@settings(max_examples=40, deadline=None)
@given(z=small_sides, y=small_sides, x=small_sides, dim_in=st.integers(4, 32), divisor=st.sampled_from([1, 2, 4, 8]),
       scale=st.floats(1.0, 3.0), margin=st.integers(0, 16), batch=st.integers(1, 3),
       seed=st.integers(0, 2**31 - 1))
def test_gaussian_blending_returns_affine_exactly(z, y, x, dim_in, divisor, scale, margin, batch, seed):
    vol = torch.from_numpy(np.random.default_rng(seed).integers(-500, 500, (z, y, x)).astype(np.float32))
    plan = tiling.even_plan(vol.shape, dim_in, divisor=divisor, max_window=int(dim_in * scale), margin=margin)
    weights = tiling.blend_weights(plan.window, "gaussian")
    out = sliding_affine(vol, plan, batch, weights)
    assert torch.equal(out[0], 2 * vol + 1)


@settings(max_examples=25, deadline=None)
@given(z=small_sides, y=small_sides, x=small_sides, dim_in=st.integers(4, 24), channels=st.integers(1, 8),
       batch=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_channels_last_buffer_stitches_the_same_numbers(z, y, x, dim_in, channels, batch, seed):
    """Voxel-major accumulation (fast mode on the CPU) adds the same values in the same order: identical output."""
    gen = torch.Generator().manual_seed(seed)
    vol = torch.randn((z, y, x), generator=gen)
    mix = torch.randn(channels, generator=gen)

    def predictor(b):  # (B, 1, ...) -> (B, C, ...), channel-dependent, any memory format
        return b * mix.reshape(1, -1, 1, 1, 1) + torch.sin(b)

    plan = tiling.even_plan(vol.shape, dim_in, margin=dim_in // 3)
    weights = tiling.blend_weights(plan.window, "gaussian")
    want = tiling.sliding_window(vol, predictor, plan, window_batch=batch, weights=weights)

    def predictor_cl(b):
        return predictor(b).contiguous(memory_format=torch.channels_last_3d)

    got = tiling.sliding_window(vol, predictor_cl, plan, window_batch=batch, weights=weights, channels_last=True)
    assert got.shape == want.shape == (channels, z, y, x)
    assert got.stride()[0] == 1  # classes innermost: argmax over them reads memory in order
    assert torch.equal(got, want)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 700), dim_in=st.integers(8, 128), divisor=st.sampled_from([1, 2, 4, 16, 32]),
       scale=st.floats(1.0, 3.0), margin=st.integers(0, 64))
def test_even_axis_guarantees(size, dim_in, divisor, scale, margin):
    max_window = int(dim_in * scale)
    side, starts = tiling.even_axis(size, dim_in, divisor, max_window, margin)
    assert side >= dim_in and (side - dim_in) % divisor == 0
    if len(starts) > 1:
        assert side <= max(max_window, dim_in)
        assert starts[0] == 0 and starts[-1] + side == size  # covers the axis, nothing sticks out
        gaps = np.diff(starts)
        assert (gaps > 0).all()
        assert side - gaps.max() >= min(margin, dim_in - 1)  # neighbours overlap by at least the margin
    else:
        assert starts == [0]
        # one window: the smallest allowed side that covers the axis (padding only up to the next valid side)
        assert side >= size and (side == dim_in or side - divisor < size)


def test_even_plan_fewer_windows_than_monai():
    monai = tiling.monai_plan((96, 256, 256), 64, 0.5)
    ours = tiling.even_plan((96, 256, 256), 64, divisor=4)
    assert monai.n_windows == 2 * 7 * 7
    assert ours.window == (64, 64, 64) and ours.n_windows == 2 * 4 * 4 < monai.n_windows
    covered = torch.zeros(96, 256, 256, dtype=torch.int32)
    for i in range(ours.n_windows):
        covered[ours.slices(i)] += 1
    assert (covered > 0).all()


def test_gaussian_weights_shape_peak_and_floor():
    w = tiling.blend_weights((5, 8, 11), "gaussian", sigma_scale=0.125)
    assert w.shape == (5, 8, 11) and w.max() == 1.0 and w.min() >= 1 / 256
    assert torch.equal(w, w.flip(0)) and torch.equal(w, w.flip(1)) and torch.equal(w, w.flip(2))
    assert tiling.blend_weights((4, 4, 4), "constant") is None
    with pytest.raises(ValueError, match="blend mode"):
        tiling.blend_weights((4, 4, 4), "cosine")
