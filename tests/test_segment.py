"""pipeline.segment: compat equals octopi's math with MONAI's own sliding windows; fast mode's pieces; outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import ConfigError, DeviceError
from pipeline.models import Ensemble
from pipeline.segment import (
    ChannelsLastInstanceNorm3d,
    FastOptions,
    _fast_predictor,
    channels_last_network,
    compute_logits,
    normalize_volume,
    reference_logits,
    save_probabilities,
    segment_volume,
)
from pipeline.tta import tta_transforms


def tiny_unet_ensemble(n_models=1, dim_in=16, num_classes=3, seed=0):
    """Seeded random MONAI UNets (instance norm, strides 2,1): cheap, and window placement matters to them."""
    from monai.networks.nets import UNet

    models = []
    for i in range(n_models):
        torch.manual_seed(seed + i)
        models.append(UNet(3, 1, num_classes, (4, 8, 8), (2, 1), num_res_units=1).eval())
    labels = {f"obj{i}": i for i in range(1, num_classes)}
    return Ensemble(models, labels, num_classes, dim_in, [], [], 2)


def pointwise_ensemble(num_classes=3, seed=0, dim_in=8):
    """A 1x1x1 convolution: its output at a voxel depends only on that voxel, so windows and TTA cannot matter."""
    torch.manual_seed(seed)
    net = torch.nn.Conv3d(1, num_classes, 1).eval()
    return Ensemble([net], {"a": 1, "b": 2}, num_classes, dim_in, [], [], 1)


def random_volume(shape, seed):
    return (np.random.default_rng(seed).standard_normal(shape) * 3 + 7).astype(np.float32)


# non-cubic volumes, volumes smaller than the window on some or all sides
@pytest.mark.parametrize("shape,ntta,n_models,window_batch", [
    ((20, 37, 29), 4, 1, 4),
    ((11, 14, 9), 8, 1, 3),   # smaller than the 16^3 window on every side
    ((18, 30, 12), 3, 2, 1),  # mixed; an ensemble; one window per forward pass
    ((16, 16, 23), 1, 1, 2),
])
def test_compat_equals_monai_reference(shape, ntta, n_models, window_batch):
    ens = tiny_unet_ensemble(n_models, seed=sum(shape))
    vol = random_volume(shape, seed=ntta)
    want = reference_logits(vol, ens, ntta=ntta, overlap=0.5, window_batch=window_batch)
    got, stats = compute_logits(vol, ens, mode="compat", ntta=ntta, overlap=0.5, window_batch=window_batch)
    assert got.shape == want.shape == (3, *shape) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    assert stats["windows"] > 0 and stats["ntta"] == max(1, ntta)
    if n_models == 1 and ntta <= 4:
        labels = segment_volume(vol, ens, mode="compat", ntta=ntta, window_batch=window_batch).label_map
        assert labels.dtype == torch.uint8 and labels.shape == shape
        assert torch.equal(labels, torch.argmax(torch.softmax(want, 0), 0).to(torch.uint8))


@pytest.mark.parametrize("overlap", [0.0, 0.7])
def test_compat_other_overlaps(overlap):
    ens = tiny_unet_ensemble(seed=5)
    vol = random_volume((17, 26, 20), seed=3)
    want = reference_logits(vol, ens, ntta=2, overlap=overlap, window_batch=4)
    got, _ = compute_logits(vol, ens, mode="compat", ntta=2, overlap=overlap, window_batch=4)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_normalisation_is_monai_normalize_intensity():
    from monai.transforms import NormalizeIntensity

    vol = torch.from_numpy(random_volume((9, 10, 11), seed=2))
    torch.testing.assert_close(normalize_volume(vol), torch.as_tensor(NormalizeIntensity()(vol)), rtol=0, atol=0)
    flat = normalize_volume(torch.full((4, 5, 6), 3.0))
    assert torch.equal(flat, torch.zeros(4, 5, 6))  # std 0 -> divide by 1, no NaN


@pytest.mark.parametrize("mode", ["fast", "compat"])
@pytest.mark.parametrize("shape", [(13, 30, 21), (6, 5, 7)])
def test_pointwise_network_same_logits_in_both_modes(mode, shape):
    """For a network without spatial context, windows and transforms change nothing: logits = net(normalised)."""
    ens = pointwise_ensemble()
    vol = random_volume(shape, seed=11)
    got, _ = compute_logits(vol, ens, mode=mode, ntta=8, fast_options=FastOptions(max_window=12, margin=3))
    with torch.inference_mode():
        want = ens.models[0](normalize_volume(torch.from_numpy(vol))[None, None])[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window,ntta", [((8, 8, 8), 8), ((8, 12, 10), 8), ((8, 12, 10), 3), ((8, 8, 8), 1)])
def test_fast_predictor_equals_one_transform_at_a_time(window, ntta):
    ens = tiny_unet_ensemble(2, dim_in=8, seed=7)
    transforms = tta_transforms(ntta)
    batch = torch.randn(3, 1, *window, generator=torch.Generator().manual_seed(ntta))
    with torch.inference_mode():
        got = _fast_predictor(ens.models, transforms, "fp32", torch.device("cpu"), False)(batch)
        want = torch.zeros(3, 3, *window)
        for model in ens.models:
            for t in transforms:
                want += t.inverse(model(t.forward(batch)))
        want /= len(transforms) * len(ens.models)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(channels=st.integers(1, 9), sides=st.tuples(*[st.integers(1, 12)] * 3), affine=st.booleans(),
       eps=st.sampled_from([1e-5, 1e-3]), seed=st.integers(0, 2**31 - 1))
def test_channels_last_instance_norm_equals_torch(channels, sides, affine, eps, seed):
    if int(np.prod(sides)) == 1:
        sides = (1, 1, 2)  # torch refuses one voxel per channel (variance undefined)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((2, channels, *sides), generator=gen) * 4 + 3
    norm = torch.nn.InstanceNorm3d(channels, affine=affine, eps=eps)
    if affine:
        with torch.no_grad():
            norm.weight.copy_(torch.randn(channels, generator=gen))
            norm.bias.copy_(torch.randn(channels, generator=gen))
    ours = ChannelsLastInstanceNorm3d(norm)
    with torch.inference_mode():
        want = norm(x)
        for layout in (torch.channels_last_3d, torch.contiguous_format):
            got = ours(x.contiguous(memory_format=layout))
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert ours(x.contiguous(memory_format=torch.channels_last_3d)).is_contiguous(
            memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale", [1.0, 400.0])
def test_channels_last_instance_norm_half_precision_keeps_float32_statistics(dtype, scale):
    """Under fp16/bf16 autocast the norm sees half-precision activations; squares of values past ~256 overflow
    fp16, so the statistics must be float32 (as torch's norm keeps them). Output dtype follows the input."""
    seed = int(np.random.SeedSequence().entropy % 2**31)
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn((2, 5, 6, 7, 8), generator=gen) * scale + scale / 3).to(dtype)
    norm = torch.nn.InstanceNorm3d(5, affine=True)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(5, generator=gen))
        norm.bias.copy_(torch.randn(5, generator=gen))
    with torch.inference_mode():
        want = norm(x.float())  # float32 statistics of the same half-precision values
        got = ChannelsLastInstanceNorm3d(norm)(x.contiguous(memory_format=torch.channels_last_3d))
    assert got.dtype == dtype
    assert torch.isfinite(got).all()
    tol = 1e-2 if dtype == torch.float16 else 5e-2  # one rounding of the output to the half type
    torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol, msg=lambda m: f"seed {seed}: {m}")


@pytest.mark.parametrize("arch", ["Unet", "SegResNet", "DynUNet", "SwinUNETR"])
def test_channels_last_network_is_the_same_function(arch):
    """Fast mode's CPU layout changes how the network runs, not what it computes, for every octopi architecture."""
    from pipeline.models import ModelConfig, build_network
    from tests.test_models import TINY

    if arch == "SwinUNETR":
        pytest.importorskip("einops", reason="MONAI's SwinUNETR needs einops")
    seed = int(np.random.SeedSequence().entropy % 2**31)  # fresh weights and input each run; printed on failure
    torch.manual_seed(seed)
    cfg = TINY[arch]
    net = build_network(ModelConfig(path="tiny.yaml", architecture=arch, model=dict(cfg), labels={},
                                    num_classes=cfg["num_classes"], dim_in=cfg["dim_in"])).eval()
    side = cfg["dim_in"]
    x = torch.randn(2, 1, side, side, side)
    converted = channels_last_network(net)
    with torch.inference_mode():
        want = net(x)
        got = converted(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=lambda m: f"seed {seed}: {m}")
    norms = sum(isinstance(m, torch.nn.InstanceNorm3d) for m in net.modules())
    assert sum(isinstance(m, ChannelsLastInstanceNorm3d) for m in converted.modules()) == norms
    assert not any(isinstance(m, torch.nn.InstanceNorm3d) for m in converted.modules())


@pytest.mark.parametrize("shape,ntta", [((18, 36, 30), 4), ((9, 20, 17), 8)])
def test_fast_channels_last_same_logits(shape, ntta):
    seed = int(np.random.SeedSequence().entropy % 2**31)
    ens = tiny_unet_ensemble(2, seed=seed)
    vol = random_volume(shape, seed=seed)
    on, stats_on = compute_logits(vol, ens, mode="fast", ntta=ntta)  # the CPU default
    off, stats_off = compute_logits(vol, ens, mode="fast", ntta=ntta, fast_options=FastOptions(channels_last=False))
    assert stats_on["channels_last"] and not stats_off["channels_last"]
    torch.testing.assert_close(on, off, rtol=1e-4, atol=1e-4, msg=lambda m: f"seed {seed}: {m}")
    assert next(ens.models[0].parameters()).is_contiguous()  # the caller's networks are left as loaded
    # converted once per network and device, not once per tomogram
    from pipeline.segment import _prepare_models

    first = _prepare_models(ens, torch.device("cpu"), FastOptions())
    assert [a is b for a, b in zip(first, _prepare_models(ens, torch.device("cpu"), FastOptions()))] == [True] * 2
    assert all(a is not b for a, b in zip(first, ens.models))


def test_fast_mode_outputs_and_fewer_windows():
    ens = tiny_unet_ensemble(seed=1)
    vol = random_volume((18, 36, 30), seed=4)
    fast = segment_volume(vol, ens, mode="fast", ntta=4, return_probabilities=True)
    compat = segment_volume(vol, ens, mode="compat", ntta=4)
    assert fast.label_map.shape == (18, 36, 30) and fast.label_map.dtype == torch.uint8
    assert fast.label_map.device.type == "cpu"
    p = fast.probabilities
    assert p.shape == (3, 18, 36, 30)
    torch.testing.assert_close(p.sum(0), torch.ones(18, 36, 30))
    assert torch.equal(torch.argmax(p, 0).to(torch.uint8), fast.label_map)
    assert fast.stats["network_voxels"] < compat.stats["network_voxels"]
    assert compat.probabilities is None


def test_bad_arguments():
    ens = pointwise_ensemble()
    vol = random_volume((8, 8, 8), 0)
    with pytest.raises(ConfigError, match="mode 'slow'"):
        segment_volume(vol, ens, mode="slow")
    with pytest.raises(ConfigError, match="overlap 1.0"):
        segment_volume(vol, ens, overlap=1.0)
    with pytest.raises(ConfigError, match="precision 'fp8'"):
        segment_volume(vol, ens, precision="fp8")
    with pytest.raises(ConfigError, match="batch size 0"):
        segment_volume(vol, ens, window_batch=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_fails_at_once():
    with pytest.raises(DeviceError, match="no CUDA device"):
        segment_volume(random_volume((8, 8, 8), 0), pointwise_ensemble(), device="cuda")


def test_save_probabilities_roundtrip(tmp_path):
    import h5py

    probs = torch.softmax(torch.randn(3, 10, 70, 9, generator=torch.Generator().manual_seed(0)), 0)
    path = tmp_path / "sub" / "TS_1.h5"
    save_probabilities(path, probs, {"a": 1, "b": 2})
    with h5py.File(path) as fh:
        ds = fh["probabilities"]
        assert ds.dtype == np.float16 and ds.shape == (3, 10, 70, 9)
        assert ds.chunks == (1, 10, 64, 9) and ds.compression == "gzip"
        assert ds.attrs["axes"] == "c,z,y,x" and '"b": 2' in ds.attrs["labels"]
        np.testing.assert_allclose(ds[...], probs.numpy(), atol=1e-3)
    assert not list(path.parent.glob("*.partial"))


@pytest.mark.parametrize("mode", ["fast", "compat"])
def test_out_of_memory_turning_logits_into_labels_finishes_on_the_host(monkeypatch, caplog, mode):
    """An OOM in softmax/argmax (a second full-size tensor) steps down to the host instead of failing the run."""
    from pipeline import segment

    ens = tiny_unet_ensemble(seed=3)
    vol = random_volume((14, 22, 19), seed=5)
    want = segment.segment_volume(vol, ens, mode=mode, ntta=2, return_probabilities=True)
    real, calls = segment._labels, []

    def first_call_runs_out(logits, softmax):
        calls.append(logits.device.type)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(logits, softmax)

    monkeypatch.setattr(segment, "_labels", first_call_runs_out)
    got = segment.segment_volume(vol, ens, mode=mode, ntta=2, return_probabilities=True)
    assert len(calls) == 2 and got.stats["host_labels"]
    assert "doing that on the host" in caplog.text
    assert torch.equal(got.label_map, want.label_map)
    torch.testing.assert_close(got.probabilities, want.probabilities, rtol=0, atol=0)
