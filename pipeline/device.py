"""Choose the compute backend once, with the reason, so every stage and log line agrees."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pipeline.errors import DeviceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceChoice:
    kind: str  # "cuda" or "cpu"
    index: int | None  # CUDA ordinal, None on CPU
    reason: str

    @property
    def torch_device(self) -> str:
        return f"cuda:{self.index}" if self.kind == "cuda" else "cpu"

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"


def cuda_device_count() -> int:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cupy_available() -> bool:
    """True when CuPy imports and sees a GPU (needed by the GPU localization path)."""
    try:
        import cupy
    except ImportError:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # CuPy raises its own CUDARuntimeError without a driver
        return False


def make_current(choice: DeviceChoice) -> None:
    """Make ``choice``'s GPU the current device of this process for torch and CuPy.

    A CUDA tensor exports through DLPack only from the current device, and CuPy allocates and launches (numba's
    kernels too) on its current device: on ``cuda:1`` nothing of localization works unless both point there.
    """
    if not choice.is_cuda:
        return
    import torch

    torch.cuda.set_device(choice.index)
    if cupy_available():
        import cupy

        cupy.cuda.Device(choice.index).use()


def resolve_device(spec: str | None = "auto") -> DeviceChoice:
    """``auto | cpu | cuda | cuda:N`` -> DeviceChoice. Asking for CUDA without one fails at once, with the reason."""
    spec = (spec or "auto").strip().lower()
    n_gpu = cuda_device_count()
    if spec == "cpu":
        return DeviceChoice("cpu", None, "asked for cpu")
    if spec == "auto":
        if n_gpu:
            return DeviceChoice("cuda", 0, f"auto: {n_gpu} CUDA device(s) visible, using cuda:0")
        return DeviceChoice("cpu", None, "auto: torch sees no CUDA device")
    if spec == "cuda" or spec.startswith("cuda:"):
        index = 0
        if spec.startswith("cuda:"):
            try:
                index = int(spec.split(":", 1)[1])
            except ValueError:
                raise DeviceError(f"device {spec!r}: expected cuda:N with N an integer, e.g. cuda:0") from None
        if n_gpu == 0:
            raise DeviceError(
                f"device {spec!r} asked for, but torch sees no CUDA device on this machine "
                "(CPU-only torch build or no driver); use device 'cpu' or 'auto'"
            )
        if index >= n_gpu:
            raise DeviceError(f"device {spec!r}: only {n_gpu} CUDA device(s) visible (cuda:0..cuda:{n_gpu - 1})")
        return DeviceChoice("cuda", index, f"asked for {spec}")
    raise DeviceError(f"device {spec!r}: expected auto, cpu, cuda or cuda:N")
