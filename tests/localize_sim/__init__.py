"""Localization test volumes and the CUDA-simulator checks (run in their own process, see test_localize_cudasim.py)."""
