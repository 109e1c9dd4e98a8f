"""pipeline/heap.py: freed memory is kept for reuse (fewer page faults), and the user's allocator choice wins."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the heap settings are glibc's")

# allocate, touch and free tensors the size of a segmentation window's activations, as the network does
CHURN = """
import json, resource, sys
import torch
from pipeline.heap import retain_freed_memory
applied = retain_freed_memory()
torch.set_num_threads(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    a = torch.ones((4, 16, 96, 48, 48))
    b = a * 2.0
    del a, b
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"applied": applied, "faults": after - before}))
"""


def _churn(**env_extra) -> dict:
    import json

    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("MALLOC_") or k in ("TOMOPICK_HEAP", "GLIBC_TUNABLES", "LD_PRELOAD"))}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", CHURN], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@glibc_only
def test_retained_heap_faults_far_fewer_pages_than_glibc_defaults():
    kept = _churn()
    system = _churn(TOMOPICK_HEAP="system")
    assert kept["applied"] is True and system["applied"] is False
    # each round touches 2 x 57 MB = ~28 k pages: above 32 MB glibc maps and unmaps each one by default
    assert system["faults"] > 100_000, system
    assert kept["faults"] < system["faults"] / 4, (kept, system)


@glibc_only
@pytest.mark.parametrize("env", [{"TOMOPICK_HEAP": "system"}, {"MALLOC_TOP_PAD_": "0"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"},
                                 {"LD_PRELOAD_NAME": ""}])
def test_the_users_allocator_settings_are_left_alone(env, monkeypatch):
    from pipeline import heap

    monkeypatch.setattr(heap, "_applied", None)
    for key in list(os.environ):
        if key.startswith("MALLOC_") or key in ("TOMOPICK_HEAP", "LD_PRELOAD", "GLIBC_TUNABLES"):
            monkeypatch.delenv(key)
    if "LD_PRELOAD_NAME" in env:  # a preloaded allocator, without actually preloading one into this process
        monkeypatch.setattr(heap.os, "environ", {**os.environ, "LD_PRELOAD": "/usr/lib/libjemalloc.so.2"})
    else:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
    assert heap._user_chose_allocator() is not None
    assert heap.retain_freed_memory() is False
