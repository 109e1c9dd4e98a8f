"""pipeline.tiling: MONAI's window placement reproduced, our even plan's guarantees, and the stitching invariant."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given, settings
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
    # exact for sums of a few weighted values (tiling._gaussian_cpu): neighbours overlapping by at most half a
    # window, as every real plan does; at margin dim_in - 1 a voxel sums ~dim_in^3 windows and float32 rounds
    assume(margin <= dim_in // 2)
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


def _collect_bands(z_size):
    """A ``finish`` that writes bands into a full tensor and checks they come once each, in order."""
    seen = []

    def finish(z0, z1, band):
        assert z0 == (seen[-1][1] if seen else 0) and z1 > z0
        if "out" not in state:
            state["out"] = torch.full((band.shape[0], z_size, *band.shape[2:]), float("nan"))
        state["out"][:, z0:z1] = band
        seen.append((z0, z1))

    state = {}
    return finish, state, seen


@settings(max_examples=40, deadline=None)
@given(z=st.integers(3, 60), y=small_sides, x=small_sides, dim_in=st.integers(4, 20), margin=st.integers(0, 8),
       border=st.integers(0, 4), channels=st.integers(1, 5), batch=st.integers(1, 4), channels_last=st.booleans(),
       gaussian=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_banded_stitching_equals_whole_volume(z, y, x, dim_in, margin, border, channels, batch, channels_last,
                                              gaussian, seed):
    """The z-band stitcher (segment_volume's fast mode) hands on exactly the whole-volume stitcher's numbers."""
    gen = torch.Generator().manual_seed(seed)
    vol = torch.randn((z, y, x), generator=gen)
    mix = torch.randn(channels, generator=gen)

    def predictor(b):  # channel-dependent and nonlinear, so a misplaced or reordered term shows
        out = b * mix.reshape(1, -1, 1, 1, 1) + torch.sin(3 * b)
        return out.contiguous(memory_format=torch.channels_last_3d) if channels_last else out

    plan = tiling.even_plan(vol.shape, dim_in, margin=margin + 2 * border)
    border = border if 2 * border < min(plan.window) else 0
    weights = tiling.window_weights(plan, "gaussian" if gaussian else "constant", border=border)
    kw = dict(window_batch=batch, weights=weights, channels_last=channels_last)
    want = tiling.sliding_window(vol, predictor, plan, **kw)
    finish, state, seen = _collect_bands(z)
    assert tiling.sliding_window(vol, predictor, plan, finish=finish, **kw) is None
    assert seen[-1][1] == z
    assert torch.equal(state["out"], want)


@settings(max_examples=20, deadline=None)
@given(z=st.integers(3, 50), y=small_sides, x=small_sides, w=st.integers(6, 24), overlap=overlaps,
       seed=st.integers(0, 2**31 - 1))
def test_banded_stitching_of_monai_windows(z, y, x, w, overlap, seed):
    vol = torch.from_numpy(np.random.default_rng(seed).standard_normal((z, y, x)).astype(np.float32))
    plan = tiling.monai_plan(vol.shape, w, overlap)
    want = sliding_affine(vol, plan, 2)
    finish, state, _ = _collect_bands(z)
    tiling.sliding_window(vol, lambda b: 2 * b + 1, plan, window_batch=2, finish=finish)
    assert torch.equal(state["out"], want)


@settings(max_examples=40, deadline=None)
@given(z=small_sides, y=small_sides, x=small_sides, dim_in=st.integers(6, 24), margin=st.integers(0, 6),
       border=st.integers(1, 5), seed=st.integers(0, 2**31 - 1))
@example(z=19, y=19, x=20, dim_in=14, margin=5, border=4, seed=0)  # CI's find: 252 windows, one voxel off by 2e-4
def test_border_band_weights_keep_the_affine_invariant(z, y, x, dim_in, margin, border, seed):
    """With inner window faces discarded, every voxel still has weight (windows overlap by margin + 2 border)."""
    vol = torch.from_numpy(np.random.default_rng(seed).integers(-500, 500, (z, y, x)).astype(np.float32))
    plan = tiling.even_plan(vol.shape, dim_in, margin=margin + 2 * border)
    if 2 * border >= min(plan.window):
        return
    weight_of = tiling.window_weights(plan, "gaussian", border=border)
    out = sliding_affine(vol, plan, 2, weight_of)
    if margin + 2 * border <= min(plan.window) // 2:  # neighbours overlap by at most half a window, as in real plans
        assert torch.equal(out[0], 2 * vol + 1)
    else:  # a voxel sums many windows (252 at dim_in 14, overlap 13): float32 rounds, but no voxel lacks weight
        torch.testing.assert_close(out[0], 2 * vol + 1, rtol=1e-5, atol=1e-3)
    for i in range(plan.n_windows):  # zero exactly on inner faces, the Gaussian elsewhere
        w = weight_of(i)
        for axis in range(3):
            s, side, p = int(plan.starts[i][axis]), plan.window[axis], plan.padded_shape[axis]
            first = w.select(axis, 0)
            last = w.select(axis, side - 1)
            assert bool((first == 0).all()) == (s > 0)
            assert bool((last == 0).all()) == (s + side < p)
