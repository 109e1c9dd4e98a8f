"""Every numba CUDA kernel compiles to PTX for real GPUs, with the argument types its launcher passes.

The simulator (tests/test_localize_cudasim.py) runs the kernels as Python, so it cannot see what only the CUDA
compiler rejects: numba >= 0.66's CUDA target refuses ``max(a, b)``, for one (numba#10753). This compiles each
kernel with libNVVM, no GPU needed. It is skipped where numba finds no libNVVM and CUDA runtime (a CUDA toolkit,
or the nvidia-cuda-nvcc-cu12 and nvidia-cuda-runtime-cu12 wheels that numba-cuda[cu12] brings); .ci/run installs
those wheels beside the venv, points numba at them (CUDA_HOME, LD_LIBRARY_PATH) and sets
``TOMOPICK_REQUIRE=nvvm``, under which a skip fails.
"""

from __future__ import annotations

import importlib
import os
import pkgutil

import numba
import numpy as np
import pytest

import kernels

pytestmark = pytest.mark.requires("nvvm")

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("the CUDA simulator is on: nothing to compile", allow_module_level=True)

from numba import cuda  # noqa: E402
from numba.cuda import dispatcher as cuda_dispatcher  # noqa: E402

# compute capabilities of the GPUs tomopick targets: A100 (8.0), L4/RTX 40 (8.9), H100/H200 (9.0)
TARGETS = [(8, 0), (8, 9), (9, 0)]


def _nvvm_or_skip():
    try:
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()
    except Exception as exc:  # numba raises its own NvvmSupportError (or OSError) when libNVVM is missing
        pytest.skip(f"libNVVM not found ({type(exc).__name__}); install the CUDA toolkit or numba-cuda[cu12]")


def _kernel_dispatchers():
    """{(module, name): dispatcher} for every global (not device-function) CUDA kernel in kernels/."""
    found = {}
    for info in pkgutil.iter_modules(kernels.__path__):
        module = importlib.import_module(f"kernels.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, cuda_dispatcher.CUDADispatcher) and not obj.targetoptions.get("device"):
                found[(module.__name__, name)] = obj
    return found


class _Recorder:
    """Stands in for a kernel: ``kernel[blocks, threads](*args)`` records the numba types of the arguments."""

    def __init__(self, kernel):
        self.kernel, self.signatures = kernel, []

    def __getitem__(self, launch_config):
        return self

    def __call__(self, *args):
        self.signatures.append(tuple(numba.typeof(a) for a in args))


def _launch_every_kernel():
    """Drive each launcher on small host arrays (xp = numpy) so it launches its kernels once."""
    from kernels.region_stats import region_stats_cuda
    from kernels.watershed_levels import flood_levels_cuda

    rng = np.random.default_rng(0)
    mask = rng.random((5, 6, 7)) < 0.8
    key = -rng.integers(0, 4, (5, 6, 7)).astype(np.int32)
    markers = np.zeros((5, 6, 7), np.int32)
    markers[1, 1, 1], markers[3, 4, 5] = 1, 2
    mask[1, 1, 1] = mask[3, 4, 5] = True
    flood_levels_cuda(key, markers, mask, np)
    region_stats_cuda(markers, 2, np)


def test_every_cuda_kernel_compiles_to_ptx(monkeypatch):
    _nvvm_or_skip()
    dispatchers = _kernel_dispatchers()
    assert {name for _, name in dispatchers} >= {"_sweep_cuda", "_stats_cuda"}
    recorders = {}
    for (module_name, name), kernel in dispatchers.items():
        recorders[(module_name, name)] = rec = _Recorder(kernel)
        monkeypatch.setattr(importlib.import_module(module_name), name, rec)
    _launch_every_kernel()

    class _Device:  # compile_ptx asks the "current device" for its capability even when cc is given
        compute_capability = TARGETS[-1]

    monkeypatch.setattr(cuda_dispatcher, "get_current_device", lambda: _Device(), raising=False)
    for key, rec in recorders.items():
        assert rec.signatures, f"{key}: no launcher in _launch_every_kernel() launched it; add one"
        for signature in set(rec.signatures):
            for cc in TARGETS:
                ptx, _ = cuda.compile_ptx(rec.kernel.py_func, signature, cc=cc)
                assert f".target sm_{cc[0]}{cc[1]}" in ptx, (key, cc)
                assert ".entry" in ptx, key
