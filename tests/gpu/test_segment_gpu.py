"""Segmentation on a real CUDA GPU against the CPU (skipped without one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def tiny_ensemble(seed=0, dim_in=16, num_classes=3):
    from monai.networks.nets import UNet

    from pipeline.models import Ensemble

    torch.manual_seed(seed)
    net = UNet(3, 1, num_classes, (4, 8, 8), (2, 1), num_res_units=1).eval()
    return Ensemble([net], {"a": 1, "b": 2}, num_classes, dim_in, [], [], 2)


def volume(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("mode", ["compat", "fast"])
def test_gpu_fp32_matches_cpu(mode):
    from pipeline.config import SegmentConfig
    from pipeline.segment import compute_logits, segment_volume

    vol = volume((20, 45, 33), seed=1)
    settings = SegmentConfig(mode=mode, ntta=4, margin=2, border_scale=0.125, precision="fp32")
    cpu, _ = compute_logits(vol, tiny_ensemble(), settings, device="cpu")
    gpu, stats = compute_logits(vol, tiny_ensemble(), settings, device="cuda")
    assert gpu.device.type == "cuda" and not stats["host_stitching"]
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)
    labels = segment_volume(vol, tiny_ensemble(), settings, device="cuda:0").label_map
    assert labels.device.type == "cuda" and labels.dtype == torch.uint8  # stays on the device for localization
    agree = (labels.cpu() == torch.argmax(cpu, 0).to(torch.uint8)).float().mean()
    assert agree >= 0.999


def test_gpu_fp16_close_to_cpu_fp32():
    from pipeline.config import SegmentConfig
    from pipeline.segment import compute_logits

    vol = volume((24, 40, 40), seed=2)
    cpu, _ = compute_logits(vol, tiny_ensemble(), SegmentConfig(mode="compat", ntta=2), device="cpu")
    gpu, stats = compute_logits(vol, tiny_ensemble(), SegmentConfig(mode="compat", ntta=2), device="cuda")  # fp16
    assert stats["precision"] == "fp16"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=5e-2)


def test_compat_on_gpu_equals_monai_reference_on_gpu():
    from pipeline.config import SegmentConfig
    from pipeline.segment import compute_logits
    from pipeline.segment_reference import reference_logits

    vol = volume((18, 37, 29), seed=3)
    ens = tiny_ensemble()
    settings = SegmentConfig(mode="compat", ntta=4, precision="fp32")
    want = reference_logits(vol, ens, settings, device="cuda")
    got, _ = compute_logits(vol, ens, settings, device="cuda")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_oom_falls_back_to_host_stitching(monkeypatch, caplog):
    from pipeline import segment, tiling

    real = tiling.sliding_window
    calls = []

    def flaky(volume, predictor, plan, **kw):
        calls.append(str(kw.get("out_device")))
        if torch.device(kw.get("out_device")).type == "cuda":
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(volume, predictor, plan, **kw)

    monkeypatch.setattr(tiling, "sliding_window", flaky)
    monkeypatch.setattr(segment, "_warned_host_stitching", False)
    vol = volume((16, 20, 20), seed=4)
    from pipeline.config import SegmentConfig

    result = segment.segment_volume(vol, tiny_ensemble(), SegmentConfig(ntta=2, margin=2, border_scale=0.125), device="cuda")
    assert result.stats["host_stitching"] and "stitching windows on the host" in caplog.text
    assert result.label_map.device.type == "cuda"
    assert calls[0].startswith("cuda") and calls[-1] == "cpu"


@pytest.mark.parametrize("runtime", ["compile", "cudagraphs", "tensorrt"])
def test_cuda_runtimes_same_logits_as_torch(runtime):
    """Each CUDA runtime computes what eager torch computes (fp32 and the default fp16), on fresh random inputs."""
    from pipeline import runtimes

    if runtime == "tensorrt":
        pytest.importorskip("torch_tensorrt", reason="torch-tensorrt is not installed")
    seed = int(np.random.SeedSequence().entropy % 2**31)
    net = tiny_ensemble(seed=seed % 1000).models[0].cuda()
    x = torch.randn((3, 1, 16, 16, 16), generator=torch.Generator().manual_seed(seed)).cuda()
    dev = torch.device("cuda")
    for precision, tol in (("fp32", 1e-3), ("fp16", 5e-2)):
        with torch.inference_mode():
            want = runtimes.runner(net, dev, "torch", precision)(x).float()
            twice = runtimes.runner(net, dev, "torch", precision)(x * 2).float()
            got = runtimes.runner(net, dev, runtime, precision)(x).float()
            again = runtimes.runner(net, dev, runtime, precision)(x * 2).float()  # a replay sees the new input
        torch.testing.assert_close(got, want, rtol=tol, atol=tol, msg=lambda m: f"seed {seed}: {m}")
        torch.testing.assert_close(again, twice, rtol=tol, atol=tol, msg=lambda m: f"seed {seed}: {m}")


def test_cpu_runtime_on_cuda_is_refused():
    from pipeline import runtimes
    from pipeline.errors import DeviceError

    with pytest.raises(DeviceError, match="needs a CPU"):
        runtimes.check_runtime("openvino", torch.device("cuda"))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cudagraphs_on_the_second_gpu_replays_new_inputs():
    """A cudagraphs runner on cuda:1 while cuda:0 is current: each replay computes its own input's logits (an
    empty capture on the wrong device would return the first input's output every time)."""
    from pipeline import runtimes

    dev = torch.device("cuda:1")
    net = tiny_ensemble(seed=3).models[0].to(dev)
    assert torch.cuda.current_device() == 0
    x = torch.randn((2, 1, 16, 16, 16), generator=torch.Generator().manual_seed(5)).to(dev)
    with torch.inference_mode():
        run = runtimes.runner(net, dev, "cudagraphs", "fp32")
        for scale in (1.0, -2.0, 3.0):
            want = runtimes.runner(net, dev, "torch", "fp32")(x * scale)
            torch.testing.assert_close(run(x * scale), want, rtol=1e-3, atol=1e-3)
    assert torch.cuda.current_device() == 0
