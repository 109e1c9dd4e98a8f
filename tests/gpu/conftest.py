"""Real-GPU tests compare CUDA results with the CPU's float32: switch off TF32, which PyTorch allows for cuDNN
convolutions by default (10-bit mantissas on Ampere and later: ~1e-3 differences that are not ours)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def ieee_float32():
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    yield
    cudnn.allow_tf32, matmul.allow_tf32 = saved
