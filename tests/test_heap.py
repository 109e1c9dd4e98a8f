"""pipeline/heap.py: freed memory is kept for reuse (fewer page faults), and the user's allocator choice wins."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import clear_allocator_settings, is_allocator_setting

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


def _churn(script: str = CHURN, **env_extra) -> dict:
    import json

    env = {k: v for k, v in os.environ.items() if not is_allocator_setting(k)}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
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
    clear_allocator_settings(monkeypatch)
    if "LD_PRELOAD_NAME" in env:  # a preloaded allocator, without actually preloading one into this process
        monkeypatch.setattr(heap.os, "environ", {**os.environ, "LD_PRELOAD": "/usr/lib/libjemalloc.so.2"})
    else:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
    assert heap._user_chose_allocator() is not None
    assert heap.retain_freed_memory() is False


# the same churn in a thread other than the main one, as a Ray actor's run loop segments
CHURN_IN_THREAD = """
import json, resource, threading
import torch
from pipeline.heap import retain_freed_memory
applied = retain_freed_memory()
torch.set_num_threads(1)
faults = []

def churn():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(30):
        a = torch.ones((4, 16, 96, 48, 48))
        b = a * 2.0
        del a, b
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

t = threading.Thread(target=churn)
t.start()
t.join()
print(json.dumps({"applied": applied, "faults": faults[0]}))
"""


@glibc_only
def test_one_arena_lets_a_thread_reuse_the_kept_heap(monkeypatch):
    from pipeline import heap

    clear_allocator_settings(monkeypatch)
    env = heap.one_arena_env()
    assert env == {"MALLOC_ARENA_MAX": "1"}
    own_arena = _churn(script=CHURN_IN_THREAD)
    one_arena = _churn(script=CHURN_IN_THREAD, **env)
    assert own_arena["applied"] is True and one_arena["applied"] is True
    # a thread's own arena grows in 64 MB heaps: window-sized tensors are mapped and unmapped every round
    assert own_arena["faults"] > 100_000, own_arena
    assert one_arena["faults"] < own_arena["faults"] / 3, (one_arena, own_arena)  # measured: 151 k against 830 k


@glibc_only
@pytest.mark.parametrize("env", [{"TOMOPICK_HEAP": "system"}, {"MALLOC_ARENA_MAX": "4"}, {"MALLOC_TOP_PAD_": "0"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}])
def test_one_arena_is_not_forced_on_a_user_who_chose(env, monkeypatch):
    from pipeline import heap

    clear_allocator_settings(monkeypatch)
    assert heap.one_arena_env() == {"MALLOC_ARENA_MAX": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert heap.one_arena_env() == {}


def test_describe_says_what_the_process_runs_with(monkeypatch):
    from pipeline import heap

    monkeypatch.setattr(heap, "_applied", True)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "1")
    assert heap.describe() == "freed memory kept, MALLOC_ARENA_MAX=1"
    monkeypatch.setattr(heap, "_applied", False)
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert heap.describe() == "system settings"


def test_lacks_one_arena_reads_describe():
    from pipeline.heap import lacks_one_arena

    assert lacks_one_arena("freed memory kept")
    assert not lacks_one_arena("freed memory kept, MALLOC_ARENA_MAX=1")
    assert not lacks_one_arena("freed memory kept, MALLOC_ARENA_MAX=4")  # the user's own choice
    assert not lacks_one_arena("system settings")
    assert not lacks_one_arena(None)
