"""tests/gpu: every test here needs a real CUDA GPU. This conftest marks them ``gpu`` and skips them, with the
reason, where torch sees none; nothing else in these files decides that.

Real-GPU tests compare CUDA results with the CPU's float32: switch off TF32, which PyTorch allows for cuDNN
convolutions by default (10-bit mantissas on Ampere and later: ~1e-3 differences that are not ours)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch sees none)")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available():
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def ieee_float32():
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    yield
    cudnn.allow_tf32, matmul.allow_tf32 = saved
