"""Flat-index helpers shared by the njit kernels (the CUDA kernels keep their own device-side copies)."""

from numba import njit


@njit(cache=True, nogil=True, inline="always")
def unravel(j, sz, nx):
    """Flat C-order index -> (z, y, x) for a volume with ``sz = ny * nx`` and row length ``nx``."""
    z = j // sz
    rem = j - z * sz
    y = rem // nx
    return z, y, rem - y * nx
