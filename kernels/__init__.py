"""numba kernels, each with one public launcher.

The GPU localization path has CUDA kernels with njit twins (``watershed_levels``, ``region_stats``); the
CPU-only kernels (``label_scan``, ``opened``, ``edt``, ``peaks``, ``watershed_heap``) stand where the GPU path
calls CuPy / cuCIM (labelling, opening, distance transform, maximum filter).
"""
