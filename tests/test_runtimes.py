"""pipeline.runtimes: every CPU runtime computes the network as eager torch does; clear errors otherwise."""

from __future__ import annotations

import contextlib
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


def test_cudagraphs_captures_on_the_networks_device_not_the_current_one(monkeypatch):
    """torch.cuda.graph() without ``stream=`` captures on a stream of the *current* device (made once per process,
    torch/cuda/graphs.py) and synchronizes that device; a network on cuda:1 while cuda:0 is current then runs
    eagerly outside the capture, the graph is empty and replays return stale outputs. Modelled here without a
    GPU: each capture must happen on a stream of the network's device, with that device current."""
    current = {"index": 0}
    captures = []

    class Stream:
        def __init__(self, device=None):
            self.device = torch.device(device) if device is not None else torch.device("cuda", current["index"])

        def wait_stream(self, other):
            pass

    class Graph:
        def replay(self):
            pass

    @contextlib.contextmanager
    def device_ctx(dev):
        saved, current["index"] = current["index"], torch.device(dev).index
        try:
            yield
        finally:
            current["index"] = saved

    @contextlib.contextmanager
    def graph_ctx(cuda_graph, pool=None, stream=None, **kw):
        capture_stream = stream if stream is not None else Stream()  # torch: a stream of the current device
        captures.append((capture_stream.device, current["index"]))
        yield

    real_zeros = torch.zeros
    monkeypatch.setattr(torch, "zeros", lambda shape, device=None, **kw: real_zeros(shape, **kw))
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream(device))
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "device", device_ctx)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", graph_ctx)
    run = runtimes._BUILDERS["cudagraphs"](lambda x: 2 * x, torch.device("cuda:1"), "fp32", False)
    run(torch.ones((1, 1, 4, 4, 4)))
    run(torch.ones((1, 1, 4, 4, 4)))  # the same shape: replayed, not captured again
    assert captures == [(torch.device("cuda:1"), 1)]
    assert current["index"] == 0  # the caller's current device is left as it was
