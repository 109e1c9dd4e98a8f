"""The CUDA launchers' launch configurations, checked without a GPU: a stand-in kernel warns at configuration time
as numba-cuda does for grids under 128 blocks (numba/cuda/dispatcher.py, ``_LaunchConfiguration``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kernels.region_stats as region_stats
import kernels.watershed_levels as watershed_levels
from kernels._launch import configure


class NumbaPerformanceWarning(Warning):
    """numba-cuda has its own class of this name (numba.cuda.core.errors): the filter must not depend on it."""


class WarningKernel:
    def __init__(self):
        self.configs, self.calls = [], 0

    def __getitem__(self, config):
        blocks = config[0]
        if blocks < 128:
            warnings.warn(NumbaPerformanceWarning(
                f"Grid size {blocks} will likely result in GPU under-utilization due to low occupancy."), stacklevel=1)
        self.configs.append(config)
        return self

    def __call__(self, *args):
        self.calls += 1


def test_configure_drops_only_the_low_occupancy_warning():
    kernel = WarningKernel()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert configure(kernel, 3, 256) is kernel
        configure(kernel, 200, 64, stream="s")
    assert kernel.configs == [(3, 256), (200, 64, "s")]
    with pytest.warns(UserWarning, match="something else"):  # other warnings still come through
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="nothing")
            configure(_Other(), 1, 32)


class _Other:
    def __getitem__(self, config):
        warnings.warn("something else", stacklevel=1)
        return self


@pytest.mark.parametrize("which", ["flood", "stats"])
def test_launchers_do_not_warn_about_their_small_grids(monkeypatch, which):
    rng = np.random.default_rng(0)
    markers = np.zeros((5, 6, 7), np.int32)
    markers[1, 1, 1], markers[3, 4, 5] = 1, 2
    kernel = WarningKernel()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if which == "flood":
            monkeypatch.setattr(watershed_levels, "_sweep_cuda", kernel)
            key = -rng.integers(0, 4, (5, 6, 7)).astype(np.int32)
            watershed_levels.flood_levels_cuda(key, markers, np.ones((5, 6, 7), bool), np, threads=64)
        else:
            monkeypatch.setattr(region_stats, "_stats_cuda", kernel)
            region_stats.region_stats_cuda(markers, 2, np, threads=64)
    assert kernel.calls > 0 and all(c[0] < 128 for c in kernel.configs)
