"""pipeline.segment: compat equals octopi's math with MONAI's own sliding windows; fast mode's pieces; outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import SegmentConfig
from pipeline.errors import ConfigError, DeviceError
from pipeline.models import Ensemble
from pipeline.runtimes import ChannelsLastInstanceNorm3d, channels_last_network
from pipeline.segment import (
    _fast_predictor,
    _plain_runner,
    compute_logits,
    normalize_volume,
    save_probabilities,
    segment_volume,
)
from pipeline.segment_reference import reference_logits
from pipeline.tta import tta_transforms

CPU = "cpu"


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
    compat = SegmentConfig(mode="compat", ntta=ntta, overlap=0.5, window_batch=window_batch)
    want = reference_logits(vol, ens, compat, device=CPU)
    got, stats = compute_logits(vol, ens, compat, device=CPU)
    assert got.shape == want.shape == (3, *shape) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    assert stats["windows"] > 0 and stats["ntta"] == max(1, ntta)
    if n_models == 1 and ntta <= 4:
        labels = segment_volume(vol, ens, compat, device=CPU).label_map
        assert labels.dtype == torch.uint8 and labels.shape == shape
        assert torch.equal(labels, torch.argmax(torch.softmax(want, 0), 0).to(torch.uint8))


@pytest.mark.parametrize("overlap", [0.0, 0.7])
def test_compat_other_overlaps(overlap):
    ens = tiny_unet_ensemble(seed=5)
    vol = random_volume((17, 26, 20), seed=3)
    compat = SegmentConfig(mode="compat", ntta=2, overlap=overlap, window_batch=4)
    want = reference_logits(vol, ens, compat, device=CPU)
    got, _ = compute_logits(vol, ens, compat, device=CPU)
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
    settings = SegmentConfig(mode=mode, ntta=8, window_scale=1.5, margin=3, border_scale=0.125, precision="fp32")
    got, _ = compute_logits(vol, ens, settings, device=CPU)
    with torch.inference_mode():
        want = ens.models[0](normalize_volume(torch.from_numpy(vol))[None, None])[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window,ntta", [((8, 8, 8), 8), ((8, 12, 10), 8), ((8, 12, 10), 3), ((8, 8, 8), 1)])
def test_fast_predictor_equals_one_transform_at_a_time(window, ntta):
    ens = tiny_unet_ensemble(2, dim_in=8, seed=7)
    transforms = tta_transforms(ntta)
    batch = torch.randn(3, 1, *window, generator=torch.Generator().manual_seed(ntta))
    with torch.inference_mode():
        runners = [_plain_runner(m, torch.device(CPU), "fp32") for m in ens.models]
        got = _fast_predictor(runners, transforms, max_batch=4)(batch)
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
    """The CPU's channels-last runner against the network as loaded, both fp32, on fresh random inputs."""
    from pipeline import runtimes, tiling
    from pipeline.segment import fast_plan

    seed = int(np.random.SeedSequence().entropy % 2**31)
    ens = tiny_unet_ensemble(2, seed=seed)
    vol = random_volume(shape, seed=seed)
    fast = SegmentConfig(ntta=ntta, precision="fp32", margin=2, border_scale=0.125)
    on, stats_on = compute_logits(vol, ens, fast, device=CPU)
    assert stats_on["channels_last"] and stats_on["precision"] == "fp32"
    plan = fast_plan(shape, ens, fast)
    transforms = tta_transforms(ntta)
    with torch.inference_mode():
        plain = _fast_predictor([_plain_runner(m, torch.device(CPU), "fp32") for m in ens.models], transforms, 4)
        weights = tiling.window_weights(plan, "gaussian", border=2)  # 0.125 x dim_in 16
        off = tiling.sliding_window(normalize_volume(torch.from_numpy(vol)), plain, plan,
                                    window_batch=max(1, 4 // ntta), weights=weights)
    torch.testing.assert_close(on, off, rtol=1e-4, atol=1e-4, msg=lambda m: f"seed {seed}: {m}")
    assert next(ens.models[0].parameters()).is_contiguous()  # the caller's networks are left as loaded
    # converted once per network and device, not once per tomogram
    first = [runtimes.runner(m, torch.device(CPU), "torch", "fp32") for m in ens.models]
    assert all(a is runtimes.runner(m, torch.device(CPU), "torch", "fp32") for a, m in zip(first, ens.models))


def test_fast_mode_outputs_and_fewer_windows():
    ens = tiny_unet_ensemble(seed=1)
    vol = random_volume((18, 36, 30), seed=4)
    settings = SegmentConfig(ntta=4, margin=2, border_scale=0.125)
    fast = segment_volume(vol, ens, settings, device=CPU, return_probabilities=True)
    compat = segment_volume(vol, ens, SegmentConfig(mode="compat", ntta=4), device=CPU)
    assert fast.label_map.shape == (18, 36, 30) and fast.label_map.dtype == torch.uint8
    assert fast.label_map.device.type == "cpu"
    p = fast.probabilities
    assert p.shape == (3, 18, 36, 30)
    assert p.dtype == torch.float16  # fast mode keeps probabilities in half the memory
    torch.testing.assert_close(p.float().sum(0), torch.ones(18, 36, 30), atol=3e-3, rtol=0)
    # asking for probabilities leaves the labels as they are without (the argmax of the logits)
    torch.testing.assert_close(segment_volume(vol, ens, settings, device=CPU).label_map, fast.label_map)
    # the labels are the argmax of the float32 softmax; the float16 copy can only disagree at near-ties
    disagree = torch.argmax(p, 0).to(torch.uint8) != fast.label_map
    top2 = torch.topk(p.float(), 2, dim=0).values
    assert disagree.float().mean() < 0.01
    assert torch.all((top2[0] - top2[1])[disagree] <= 2e-3)
    assert fast.stats["network_voxels"] < compat.stats["network_voxels"]
    assert compat.probabilities is None
    assert compat.stats["precision"] == "fp32" and "compat" in compat.stats["precision_reason"]


@pytest.mark.parametrize("border_scale", [0, 0.1875])  # 0 and 3 voxels at dim_in 16
@pytest.mark.parametrize("return_probabilities", [False, True])
def test_streamed_label_map_equals_whole_volume_stitching(border_scale, return_probabilities):
    """segment_volume's fast mode finishes z-bands as it goes; its labels equal the whole-volume logits' argmax."""
    seed = int(np.random.SeedSequence().entropy % 2**31)
    ens = tiny_unet_ensemble(seed=seed)
    vol = random_volume((45, 30, 26), seed=seed)  # 45 = several z-bands of 16
    settings = SegmentConfig(ntta=2, margin=4, border_scale=border_scale, precision="fp32")
    logits, _ = compute_logits(vol, ens, settings, device=CPU)
    got = segment_volume(vol, ens, settings, device=CPU, return_probabilities=return_probabilities)
    if not return_probabilities:  # the same sums in the same order: identical labels
        assert torch.equal(got.label_map, torch.argmax(logits, 0).to(torch.uint8)), f"seed {seed}"
    else:  # float16 probabilities of the band's float32 softmax; the labels come from the float32 ones
        whole = torch.softmax(logits, 0)
        torch.testing.assert_close(got.probabilities, whole.half(), rtol=0, atol=1e-3)
        top2 = torch.topk(whole, 2, dim=0).values
        differ = got.label_map != torch.argmax(whole, 0).to(torch.uint8)
        assert torch.all((top2[0] - top2[1])[differ] <= 1e-6), f"seed {seed}"  # only float32 rounding ties


def test_precision_auto_and_its_reason(monkeypatch):
    from pipeline import runtimes

    cpu = torch.device(CPU)
    for amx, avx, want in ((True, False, ("bf16", "AMX")), (False, True, ("bf16", "AVX512-BF16")),
                           (False, False, ("fp32", "without"))):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda avx=avx: avx)
        precision, why = runtimes.resolve_precision("auto", cpu, "fast")
        assert precision == want[0] and want[1] in why
        assert runtimes.resolve_precision("auto", cpu, "compat") == ("fp32", "auto in compat mode on the CPU: "
                                                                              "fp32, as octopi")
    assert runtimes.resolve_precision("bf16", cpu, "compat") == ("bf16", "asked for")
    assert runtimes.resolve_precision("auto", torch.device("cuda"), "fast")[0] == "fp16"


def test_bf16_fast_mode_close_to_fp32():
    """bf16 autocast (the CPU default where the hardware has it) against fp32 on fresh random inputs."""
    seed = int(np.random.SeedSequence().entropy % 2**31)
    ens = tiny_unet_ensemble(seed=seed)
    vol = random_volume((20, 34, 30), seed=seed)
    fp32, _ = compute_logits(vol, ens, SegmentConfig(ntta=2, margin=2, precision="fp32"), device=CPU)
    bf16, stats = compute_logits(vol, ens, SegmentConfig(ntta=2, margin=2, precision="bf16"), device=CPU)
    assert stats["precision"] == "bf16"
    scale = float(fp32.abs().max())
    torch.testing.assert_close(bf16, fp32, rtol=0, atol=0.05 * scale, msg=lambda m: f"seed {seed}: {m}")
    assert (torch.argmax(bf16, 0) == torch.argmax(fp32, 0)).float().mean() > 0.95


def test_bad_arguments():
    ens = pointwise_ensemble()
    vol = random_volume((8, 8, 8), 0)
    with pytest.raises(ConfigError, match="mode 'slow'"):
        segment_volume(vol, ens, SegmentConfig(mode="slow"), device=CPU)
    with pytest.raises(ConfigError, match="overlap 1.0"):
        segment_volume(vol, ens, SegmentConfig(overlap=1.0), device=CPU)
    with pytest.raises(ConfigError, match="precision 'fp8'"):
        segment_volume(vol, ens, SegmentConfig(precision="fp8"), device=CPU)
    with pytest.raises(ConfigError, match="batch size 0"):
        segment_volume(vol, ens, SegmentConfig(window_batch=0), device=CPU)
    with pytest.raises(ConfigError, match=r"margin 1 \+ 2 x border 4 \(border_scale 0.45\)"):
        segment_volume(vol, ens, SegmentConfig(margin=1, border_scale=0.45), device=CPU)
    with pytest.raises(ConfigError, match="blend 'cosine'"):
        segment_volume(vol, ens, SegmentConfig(blend="cosine"), device=CPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_fails_at_once():
    with pytest.raises(DeviceError, match="no CUDA device"):
        segment_volume(random_volume((8, 8, 8), 0), pointwise_ensemble(), SegmentConfig(), device="cuda")


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


@pytest.mark.parametrize("mode", ["compat"])
def test_out_of_memory_turning_logits_into_labels_finishes_on_the_host(monkeypatch, caplog, mode):
    """compat: an OOM in softmax/argmax (a second full-size tensor) steps down to the host instead of failing the
    run (fast mode turns each z-band into labels inside the stitcher, whose OOM steps down as a whole)."""
    from pipeline import segment

    ens = tiny_unet_ensemble(seed=3)
    vol = random_volume((14, 22, 19), seed=5)
    settings = SegmentConfig(mode=mode, ntta=2)
    want = segment.segment_volume(vol, ens, settings, device=CPU, return_probabilities=True)
    real, calls = segment._labels, []

    def first_call_runs_out(logits, softmax):
        calls.append(logits.device.type)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(logits, softmax)

    monkeypatch.setattr(segment, "_labels", first_call_runs_out)
    got = segment.segment_volume(vol, ens, settings, device=CPU, return_probabilities=True)
    assert len(calls) == 2 and got.stats["host_labels"]
    assert "doing that on the host" in caplog.text
    assert torch.equal(got.label_map, want.label_map)
    torch.testing.assert_close(got.probabilities, want.probabilities, rtol=0, atol=0)
