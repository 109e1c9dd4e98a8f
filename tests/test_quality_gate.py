"""The quality gate in CI: the default segmentation settings keep compat's (octopi's) picks on the validation project.

A model trained octopi's way and runs it never saw (../shared/validation, read its README). Its 3 runs at ntta 1
keep this to about half a minute on 2 cores; benchmarks/bench_quality.py measures them at ntta 4
(benchmarks/RESULTS.md). One run alone was too noisy a judge: at ntta 1 the per-run gap default - compat spread
from -0.010 to +0.020 (CZII rule), while over the 3 runs the default scores +0.027 and the former default
(windows that touch without overlap) -0.023, which this test refuses.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import SegmentConfig

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 0.005  # the gate: default >= compat - 0.005


def validation_dir() -> Path | None:
    """$TOMOPICK_VALIDATION_DIR, else <repo>/../shared/validation, else /work/shared/validation."""
    candidates = [os.environ.get("TOMOPICK_VALIDATION_DIR"), REPO.parent / "shared" / "validation",
                  "/work/shared/validation"]
    for c in candidates:
        if c and (Path(c) / "make_config.py").is_file():
            return Path(c)
    return None


def _bench_quality():
    spec = importlib.util.spec_from_file_location("bench_quality", REPO / "benchmarks" / "bench_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    folder = validation_dir()
    if folder is None:
        pytest.skip("no validation project: set TOMOPICK_VALIDATION_DIR, or put it at ../shared/validation")
    overlay = tmp_path_factory.mktemp("validation_overlay")  # the validation folder is read-only
    subprocess.run([sys.executable, str(folder / "make_config.py"), str(overlay)], check=True, capture_output=True)
    from pipeline.models import load_ensemble

    bench = _bench_quality()
    objects, tomograms, truth = bench.load_project(overlay / "config.json", 10.0, "wbp", None,
                                                   "data-portal", "0")
    ensemble = load_ensemble(str(folder / "model" / "model_config.yaml"),
                             str(folder / "model" / "model_weights.pth"), device="cpu")

    def score(settings: SegmentConfig) -> dict:
        return bench.evaluate_setting(settings, ensemble, objects, tomograms, truth, 10.0)["scores"]

    return score


def test_default_settings_keep_compats_picks(gate):
    compat = gate(SegmentConfig(mode="compat", ntta=1))
    default = gate(SegmentConfig(ntta=1))
    for rule in ("czii", "octopi"):
        assert default[rule]["final"] >= compat[rule]["final"] - TOLERANCE, (
            f"{rule} rule, F4: default settings {default[rule]['final']:.4f} < compat {compat[rule]['final']:.4f} "
            f"- {TOLERANCE}; per object default {default[rule]['objects']}, compat {compat[rule]['objects']}")
