"""The driver on a real GPU against the CPU driver (tests/gpu/conftest.py skips it without CUDA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "models"



def test_gpu_driver_matches_cpu_driver(synth_project_copy, tmp_path):
    pytest.importorskip("cupy")
    from pipeline import copick_io
    from pipeline.config import config_from_dict
    from pipeline.run import run_pipeline

    results = {}
    for device in ("cpu", "cuda"):
        project = synth_project_copy(device)
        cfg = config_from_dict({
            "copick_config": str(project), "device": device,
            "model": {"configs": [str(DEMO / "demo_unet.yaml")], "weights": [str(DEMO / "demo_unet.pth")]},
            "segment": {"mode": "fast", "ntta": 4, "precision": "fp32"},
            "evaluate": {}, "output": {"dir": str(tmp_path / f"out_{device}")},
        }, source=f"gpu-test-{device}")
        result = run_pipeline(cfg, progress=False)
        assert [r.status for r in result.records] == ["done", "done"]
        root = copick_io.open_project(project)
        results[device] = (result, {
            (r, o.name): copick_io.read_picks(root, r, o.name, "octopi", "1", 10.0)
            for r in ("TS_7_0", "TS_7_1") for o in copick_io.particle_objects(root)
        })
    cpu_result, cpu_picks = results["cpu"]
    gpu_result, gpu_picks = results["cuda"]
    assert gpu_result.device.is_cuda
    # fp32 on both sides: the label maps agree to rounding, so the picks agree up to a rare plateau tie
    n_same = n_all = 0
    for key, cpu_pts in cpu_picks.items():
        gpu_pts = gpu_picks[key]
        n_all += max(len(cpu_pts), len(gpu_pts))
        if len(cpu_pts) == len(gpu_pts) and len(cpu_pts):
            d = np.linalg.norm(np.sort(cpu_pts, axis=0) - np.sort(gpu_pts, axis=0), axis=1)
            n_same += int(np.sum(d <= 0.5))
    assert n_all > 0 and n_same >= 0.95 * n_all
    assert abs(gpu_result.evaluation.final_fbeta_score - cpu_result.evaluation.final_fbeta_score) <= 0.05
