"""pipeline.runtimes: every CPU runtime computes the network as eager torch does; clear errors otherwise."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from pipeline import runtimes
from pipeline.errors import ConfigError, DeviceError

CPU = torch.device("cpu")


def tiny_unet(seed: int, num_classes: int = 3):
    """A seeded MONAI UNet with instance norms and residual units: the layers octopi's models are made of."""
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    return UNet(3, 1, num_classes, (4, 8, 8), (2, 1), num_res_units=1).eval()


def _inputs(seed: int):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn((3, 1, 16, 16, 16), generator=gen) * 2 + 1,  # several windows of one shape
            torch.randn((2, 1, 16, 24, 20), generator=gen)]  # another shape (rotated windows are one)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino", "compile"])
def test_cpu_runtime_gives_the_logits_of_torch(runtime):
    if runtime in runtimes.PACKAGES:
        pytest.importorskip(runtimes.PACKAGES[runtime][0], reason=f"{runtime} is not installed")
    seed = int(np.random.SeedSequence().entropy % 2**31)  # fresh weights and inputs each run; printed on failure
    net = tiny_unet(seed)
    run = runtimes.runner(net, CPU, runtime, "fp32")
    with torch.inference_mode():
        for x in _inputs(seed)[: 1 if runtime == "compile" else 2]:  # compile: one shape, ~20 s each
            want = net(x)
            got = run(x).float()
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=lambda m: f"seed {seed}: {m}")
    assert runtimes.runner(net, CPU, runtime, "fp32") is run  # prepared once per network


@pytest.mark.parametrize("runtime", ["torch", "openvino"])
def test_bf16_runtimes_close_to_fp32(runtime):
    if runtime in runtimes.PACKAGES:
        pytest.importorskip(runtimes.PACKAGES[runtime][0], reason=f"{runtime} is not installed")
    seed = int(np.random.SeedSequence().entropy % 2**31)
    net = tiny_unet(seed)
    x = _inputs(seed)[0]
    with torch.inference_mode():
        want = net(x)
        got = runtimes.runner(net, CPU, runtime, "bf16")(x).float()
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=0, atol=0.05 * scale, msg=lambda m: f"seed {seed}: {m}")
    assert (got.argmax(1) == want.argmax(1)).float().mean() > 0.95


@pytest.mark.parametrize("runtime,package", [("onnxruntime", "onnxruntime"), ("openvino", "openvino")])
def test_missing_package_says_what_to_install(monkeypatch, runtime, package):
    monkeypatch.setitem(sys.modules, runtimes.PACKAGES[runtime][0], None)  # import now raises ImportError
    with pytest.raises(ConfigError, match=rf"needs the Python package '{package}'.*pip install {package}"):
        runtimes.check_runtime(runtime, CPU)


@pytest.mark.parametrize("runtime", ["cudagraphs", "tensorrt"])
def test_cuda_runtime_on_the_cpu_is_refused(runtime):
    with pytest.raises(DeviceError, match="needs a CUDA GPU"):
        runtimes.check_runtime(runtime, CPU)
    with pytest.raises(ConfigError, match="runtime 'tvm'"):
        runtimes.check_runtime("tvm", CPU)


def test_runner_leaves_the_callers_network_alone():
    net = tiny_unet(1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    runtimes.runner(net, CPU, "torch", "fp32")(torch.randn(1, 1, 16, 16, 16))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert next(net.parameters()).is_contiguous()
    assert any(isinstance(m, torch.nn.InstanceNorm3d) for m in net.modules())
