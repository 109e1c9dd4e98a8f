"""How a network is executed: precision, memory layout and runtime (``segment.precision``, ``segment.runtime``).

A runner maps a (B, 1, z, y, x) float32 batch on the device to (B, C, z, y, x) logits (float32 or the
autocast dtype). Runtimes:

- ``torch``: eager PyTorch; on the CPU in channels-last-3d layout with layout-keeping instance norms
  (``channels_last_network``); under ``torch.autocast`` for fp16/bf16.
- ``compile``: ``torch.compile`` of the same network (CPU or CUDA; compiles once per shape, slow the first time).
- ``onnxruntime``: the network exported to ONNX, run by onnxruntime's CPU provider (fp32; ``pip install
  onnxruntime``).
- ``openvino``: the network converted by OpenVINO, CPU plugin, inference precision from ``precision``
  (``pip install openvino``).
- ``cudagraphs`` (CUDA): the eager network captured once per input shape as a CUDA graph and replayed.
- ``tensorrt`` (CUDA): torch-tensorrt's compile (``pip install torch-tensorrt``).

Measured on the quality gate (benchmarks/bench_quality.py, benchmarks/RESULTS.md): on the CPU none of compile,
onnxruntime and openvino was >= 1.3x faster than eager torch (bf16, channels-last), so none is an extra of the
package and ``torch`` is the default; the CUDA ones are not measured yet (no GPU lent to that session).
Prepared runners are cached per network, device, runtime, precision and layout: converting or compiling once
per model, not once per tomogram (inference only: a network whose weights change afterwards needs a new one).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import weakref
from collections.abc import Callable

import torch

from pipeline.errors import ConfigError, DeviceError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
RUNTIMES = ("torch", "compile", "onnxruntime", "openvino", "cudagraphs", "tensorrt")
CPU_RUNTIMES = ("torch", "compile", "onnxruntime", "openvino")
CUDA_RUNTIMES = ("torch", "compile", "cudagraphs", "tensorrt")
# runtime -> (module, what installs it). None is an extra of setup.cfg: the measurements (benchmarks/RESULTS.md)
# found none of them >= 1.3x faster than torch at the gate on the CPU, and TensorRT is not measured yet.
PACKAGES = {"onnxruntime": ("onnxruntime", "pip install onnxruntime"), "openvino": ("openvino", "pip install openvino"),
            "tensorrt": ("torch_tensorrt", "pip install torch-tensorrt")}
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

Runner = Callable[[torch.Tensor], torch.Tensor]
# network -> {(device, runtime, precision, channels_last): runner}
_runners: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cpu_bf16_hardware() -> str | None:
    """'AMX' or 'AVX512-BF16' when this CPU computes bf16 natively, else None."""
    if torch.cpu._is_amx_tile_supported():
        return "AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return "AVX512-BF16"
    return None


def resolve_precision(precision: str, device: torch.device, mode: str) -> tuple[str, str]:
    """(precision, why). ``auto``: fp16 on CUDA (octopi); on the CPU fp32 in compat mode (octopi's numbers), and
    in fast mode bf16 where the CPU has AMX or AVX512-BF16, fp32 elsewhere."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        if device.type == "cpu" and precision == "fp16":
            log.warning("precision fp16 on the CPU: autocast there is slow and agrees less; bf16 or fp32 fit better")
        elif device.type == "cpu" and precision == "bf16" and cpu_bf16_hardware() is None:
            log.warning("precision bf16 on a CPU without AMX or AVX512-BF16: emulated, likely slower than fp32")
        return precision, "asked for"
    if device.type == "cuda":
        return "fp16", "auto on CUDA: fp16 autocast, as octopi"
    if mode == "compat":
        return "fp32", "auto in compat mode on the CPU: fp32, as octopi"
    hardware = cpu_bf16_hardware()
    if hardware is not None:
        return "bf16", f"auto on a CPU with {hardware}: bf16 autocast"
    return "fp32", "auto on a CPU without AMX or AVX512-BF16: fp32"


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def check_runtime(runtime: str, device: torch.device) -> None:
    """Refuse a runtime this device cannot use, or whose package is missing, saying what installs it."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"segment runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    allowed = CUDA_RUNTIMES if device.type == "cuda" else CPU_RUNTIMES
    if runtime not in allowed:
        raise DeviceError(f"segment runtime {runtime!r} needs a {'CPU' if device.type == 'cuda' else 'CUDA GPU'}; "
                          f"on {device} use one of {', '.join(allowed)}")
    if runtime in PACKAGES:
        module, install = PACKAGES[runtime]
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(f"segment runtime {runtime!r} needs the Python package {module!r}, which is not "
                              f"installed: {install} (or use runtime torch)") from None


class ChannelsLastInstanceNorm3d(torch.nn.Module):
    """``InstanceNorm3d`` (no running statistics) that keeps its input's memory format.

    torch's own instance norm turns a channels-last input into a standard one (and is slower on it: 26 ms
    against this one's 19.5 ms for (8, 32, 32, 32, 32) on 2 CPU cores), which would cost two layout conversions
    around every convolution. Same statistics (biased variance, ``eps``), computed on a (batch, voxels, channels)
    view; equal to torch's within float32 rounding. Half-precision inputs (bf16/fp16 autocast) go to torch's
    channels-last group norm with one group per channel (the same function, statistics accumulated in float32):
    19x faster than the float32 copy here for bf16 (11.5 vs 216 ms for (4, 16, 96, 48, 48) on 2 cores), with an
    error below the output's own rounding. Its float32 kernel is less exact (3e-4 against 2e-6), so float32
    inputs keep the exact path.
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
        if x.dtype in (torch.bfloat16, torch.float16):
            return torch.nn.functional.group_norm(x, c, weight=self.weight, bias=self.bias, eps=self.eps)
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
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.InstanceNorm3d) and not child.track_running_stats:
                setattr(module, name, ChannelsLastInstanceNorm3d(child))
    return model.to(memory_format=torch.channels_last_3d)


def uses_channels_last(runtime: str, device: torch.device) -> bool:
    """Channels-last-3d on the CPU for the torch runtimes (1.1-1.4x there); CUDA keeps the standard layout."""
    return device.type == "cpu" and runtime in ("torch", "compile")


def runner(model: torch.nn.Module, device: torch.device, runtime: str, precision: str) -> Runner:
    """The cached runner of ``model`` on ``device`` (see the module docstring); the caller's network is not changed."""
    check_runtime(runtime, device)
    channels_last = uses_channels_last(runtime, device)
    key = (str(device), runtime, precision, channels_last)
    cache = _runners.setdefault(model, {})
    if key not in cache:
        net = channels_last_network(model) if channels_last else model
        log.debug("preparing a %s runner on %s (%s%s)", runtime, device, precision,
                  ", channels-last" if channels_last else "")
        cache[key] = _BUILDERS[runtime](net, device, precision, channels_last)
    return cache[key]


def _torch_runner(net, device, precision, channels_last) -> Runner:
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format

    def run(x):
        with autocast(precision, device):
            return net(x.contiguous(memory_format=layout))
    return run


def _compile_runner(net, device, precision, channels_last) -> Runner:
    return _torch_runner(torch.compile(net, dynamic=False), device, precision, channels_last)


def _onnx_bytes(net, example: torch.Tensor) -> bytes:
    """The network as ONNX (batch and spatial axes dynamic); torch's TorchScript exporter, opset 17."""
    import io
    import warnings

    buffer = io.BytesIO()
    axes = {0: "batch", 2: "z", 3: "y", 4: "x"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and training-mode notices
        torch.onnx.export(net, example, buffer, input_names=["x"], output_names=["logits"], opset_version=17,
                          dynamic_axes={"x": axes, "logits": axes}, dynamo=False)
    return buffer.getvalue()


def _example(net) -> torch.Tensor:
    side = 16
    return torch.zeros((1, 1, side, side, side), dtype=next(net.parameters()).dtype)


def _onnxruntime_runner(net, device, precision, channels_last) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(_onnx_bytes(net.float().cpu(), _example(net)), options,
                                   providers=["CPUExecutionProvider"])

    def run(x):
        out = session.run(None, {"x": x.detach().to("cpu", torch.float32).contiguous().numpy()})[0]
        return torch.from_numpy(out)
    return run


def _openvino_runner(net, device, precision, channels_last) -> Runner:
    import openvino as ov

    if precision == "fp16":
        raise ConfigError("runtime openvino on the CPU: precision fp16 is not offered; use bf16, fp32 or auto")
    core = ov.Core()
    model = ov.convert_model(net.float().cpu(), example_input=_example(net))
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
              "INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"}
    compiled: dict[tuple, object] = {}  # one compiled model per input shape: static shapes run faster

    def run(x):
        shape = tuple(x.shape)
        if shape not in compiled:
            m = model.clone()
            m.reshape({m.inputs[0]: ov.PartialShape(list(shape))})
            compiled[shape] = core.compile_model(m, "CPU", config)
        request = compiled[shape]
        out = request(x.detach().to("cpu", torch.float32).contiguous().numpy())[0]
        return torch.from_numpy(out.copy())
    return run


def _cudagraphs_runner(net, device, precision, channels_last) -> Runner:
    """One CUDA graph per input shape, captured after a warm-up on a side stream (PyTorch's recipe)."""
    graphs: dict[tuple, tuple] = {}

    def capture(shape):
        # on the network's device, capturing on our side stream: torch.cuda.graph() otherwise synchronizes the
        # current device and captures on a stream it made (once per process) there, so on cuda:1 with cuda:0
        # current the kernels run eagerly on cuda:1, the graph stays empty (torch only warns) and every replay
        # returns the capture's output
        with torch.cuda.device(device):
            static_in = torch.zeros(shape, device=device)
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                for _ in range(2):
                    with autocast(precision, device):
                        net(static_in)
            torch.cuda.current_stream(device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream), autocast(precision, device):
                static_out = net(static_in)
        return graph, static_in, static_out

    def run(x):
        shape = tuple(x.shape)
        if shape not in graphs:
            graphs[shape] = capture(shape)
        graph, static_in, static_out = graphs[shape]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()  # the next replay overwrites static_out
    return run


def _tensorrt_runner(net, device, precision, channels_last) -> Runner:
    import torch_tensorrt

    dtypes = {torch.float32} | ({_DTYPES[precision]} if precision in _DTYPES else set())
    engines: dict[tuple, object] = {}

    def run(x):
        shape = tuple(x.shape)
        if shape not in engines:
            engines[shape] = torch_tensorrt.compile(net, ir="dynamo", inputs=[torch_tensorrt.Input(shape)],
                                                    enabled_precisions=dtypes)
        return engines[shape](x.float())
    return run


_BUILDERS = {"torch": _torch_runner, "compile": _compile_runner, "onnxruntime": _onnxruntime_runner,
             "openvino": _openvino_runner, "cudagraphs": _cudagraphs_runner, "tensorrt": _tensorrt_runner}
