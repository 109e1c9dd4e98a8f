"""Launch configuration of the CUDA kernels, shared by their launchers."""

from __future__ import annotations

import warnings

# numba-cuda warns (NumbaPerformanceWarning, numba/cuda/dispatcher.py _LaunchConfiguration) at every launch
# configuration under 128 blocks, naming the grid size: our grids are sized by the data (one thread per voxel
# still to flood, per labelled voxel), so small crops and the last levels of a flood launch small grids by
# design, and each new size would print another warning line.
LOW_OCCUPANCY = r"Grid size \d+ will likely result in GPU under-utilization"


def configure(kernel, blocks: int, threads: int, stream=0):
    """``kernel[blocks, threads]`` (with ``stream`` when not 0; the simulator takes only 0), without numba-cuda's
    low-occupancy warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=LOW_OCCUPANCY)
        return kernel[blocks, threads, stream] if stream else kernel[blocks, threads]
