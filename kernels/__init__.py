"""numba kernels: each has one public launcher, a CPU (njit) and a CUDA twin."""
