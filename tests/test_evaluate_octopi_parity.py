"""Parity with octopi 1.7's own evaluator on the same picks: every per-run metric, the aggregated TP/FP/FN, the
summary means/stds and the final score must be identical.

octopi is not a dependency (its wheel pulls a CUDA torch, mlflow, optuna ...), but ``octopi.processing.evaluate``
needs only octopi's and copick-utils' pure-Python sources beside this environment's copick, scipy and yaml. So
octopi's evaluator runs in a child Python whose PYTHONPATH starts with ``TOMOPICK_OCTOPI_PATH`` (os.pathsep
separated folders), and this process never imports octopi. .ci/run sets it up like this:

    pip install --no-deps --target /tmp/octopi-side octopi==1.7.0 copick-utils==1.10.2
    TOMOPICK_OCTOPI_PATH=/tmp/octopi-side pytest tests/test_evaluate_octopi_parity.py

Without it (and without octopi installed) the tests skip; with ``TOMOPICK_REQUIRE=octopi`` (CI) a skip fails.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from pipeline import copick_io, synthetic
from pipeline.evaluate_io import evaluate_project
from pipeline.evaluate_report import write_reports

pytestmark = pytest.mark.requires("octopi")

VOXEL_SIZE = 10.0
GT = ("gt-mixed", "0")  # a ground truth with gaps: missing and empty pick sets
PRED = ("octopi", "1")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    out = tmp_path_factory.mktemp("parity")
    config = synthetic.make_synthetic_project(out / "proj", runs=4, shape=(64, 160, 144), seed=5, density=4.0)
    root = copick_io.open_project(config)
    objects = copick_io.particle_objects(root)
    runs = [r.name for r in root.runs]
    rng = np.random.default_rng(99)
    for run_id in runs:
        for obj in objects:
            gt = copick_io.read_picks(root, run_id, obj.name, "data-portal", "0", VOXEL_SIZE)
            r_vox = obj.radius / VOXEL_SIZE
            roll = rng.random()
            if roll < 0.12:
                pass  # no ground-truth picks at all for this run/object
            elif roll < 0.2:
                copick_io.write_picks(root, run_id, obj.name, np.zeros((0, 3)), VOXEL_SIZE, *GT)  # empty set
            else:
                copick_io.write_picks(root, run_id, obj.name, gt, VOXEL_SIZE, *GT)
            if rng.random() < 0.12:
                continue  # no predictions
            keep = gt[rng.random(len(gt)) < 0.8]
            # offsets around the thresholds, including 0.8 r and 0.5 r exactly (in voxels, before the Angstrom trip)
            frac = rng.choice([0.0, 0.3, 0.5, 0.79, 0.8, 0.81, 1.2], size=len(keep))
            direction = rng.normal(size=(len(keep), 3))
            direction /= np.linalg.norm(direction, axis=1, keepdims=True)
            axis_aligned = rng.random(len(keep)) < 0.5
            direction[axis_aligned] = [0.0, 0.0, 1.0]
            pred = keep + direction * (frac * r_vox)[:, None]
            dup = keep[: len(keep) // 3] + rng.normal(0, 0.2 * r_vox, (len(keep) // 3, 3))
            strays = rng.uniform(0, 1, (int(rng.integers(0, 4)), 3)) * [64, 160, 144]
            copick_io.write_picks(root, run_id, obj.name, np.vstack([pred, dup, strays]), VOXEL_SIZE, *PRED)
    return config, objects, runs


# runs in the child: octopi 1.7's evaluator on the arguments in argv[1] (JSON)
OCTOPI_RUNNER = """
import json, sys, warnings
import numpy as np
from octopi.processing import evaluate
a = json.loads(sys.argv[1])
ev = evaluate.evaluator(a["config"], a["gt_user"], a["gt_session"], a["pred_user"], a["pred_session"],
                        voxel_size=a["voxel_size"], beta=a["beta"], object_names=a["object_names"])
with np.errstate(all="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore")  # octopi's np.mean([]) for objects with no scored run
    ev.run(save_path=a["save_path"], distance_threshold_scale=a["scale"], runIDs=a["run_ids"])
"""


@pytest.fixture(scope="module")
def octopi_env():
    """The environment of a child Python that imports octopi 1.7's evaluator; skips where none does."""
    side = os.environ.get("TOMOPICK_OCTOPI_PATH", "")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (side, os.environ.get("PYTHONPATH")) if p))
    probe = subprocess.run(
        [sys.executable, "-c", "import octopi, octopi.processing.evaluate; print(octopi.__version__)"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"octopi.processing.evaluate does not import (TOMOPICK_OCTOPI_PATH={side!r}): {last}")
    version = probe.stdout.strip()
    if not version.startswith("1.7."):
        pytest.skip(f"octopi {version} found; parity is defined against octopi 1.7")
    return env


def _same(a, b, where=""):
    """Equal data, NaN == NaN, ints and floats compared by value (octopi writes weight 1 or 1.0 alike)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} vs {list(b)}"
        for k in a:
            _same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"{where}: {a} vs {b}"
    else:
        assert a == b, f"{where}: octopi {a!r} vs ours {b!r}"


@pytest.mark.parametrize(
    "object_names, run_subset, scale",
    [(None, None, 0.8), (["ribosome", "apo-ferritin", "beta-amylase"], 2, 0.5), (None, None, 1.0)],
)
def test_same_numbers_as_octopi(octopi_env, project, tmp_path, object_names, run_subset, scale):
    config, objects, runs = project
    run_ids = runs[:run_subset] if run_subset else None
    args = {
        "config": str(config), "gt_user": GT[0], "gt_session": GT[1], "pred_user": PRED[0],
        "pred_session": PRED[1], "voxel_size": VOXEL_SIZE, "beta": 4, "object_names": object_names,
        "save_path": str(tmp_path / "octopi"), "scale": scale, "run_ids": run_ids,
    }  # fmt: skip
    child = subprocess.run(
        [sys.executable, "-c", OCTOPI_RUNNER, json.dumps(args)],
        env=octopi_env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert child.returncode == 0, f"octopi's evaluator failed:\n{child.stdout[-2000:]}{child.stderr[-4000:]}"

    root = copick_io.open_project(config)
    chosen = objects if object_names is None else [next(o for o in objects if o.name == n) for n in object_names]
    result = evaluate_project(
        root, chosen, run_ids, ground_truth_user_id=GT[0], ground_truth_session_id=GT[1], pick_user_id=PRED[0],
        pick_session_id=PRED[1], voxel_size=VOXEL_SIZE, metric="octopi", beta=4, distance_threshold_scale=scale,
        config_path=str(config),
    )  # fmt: skip
    write_reports(result, tmp_path / "ours")

    theirs = yaml.unsafe_load((tmp_path / "octopi" / "average_metrics.yaml").read_text())
    ours = yaml.safe_load((tmp_path / "ours" / "average_metrics.yaml").read_text())
    assert ours["final_fbeta_score"] == theirs["final_fbeta_score"]
    _same(theirs["aggregated_particle_scores"], ours["aggregated_particle_scores"], "aggregated")
    _same(theirs["summary_metrics"], ours["summary_metrics"], "summary")
    _same(theirs["input"], ours["input"], "input")
    for key, value in theirs["parameters"].items():
        _same(value, ours["parameters"][key], f"parameters/{key}")
    theirs_json = json.loads((tmp_path / "octopi" / "metrics.json").read_text())
    ours_json = json.loads((tmp_path / "ours" / "metrics.json").read_text())
    _same(theirs_json["metrics"], ours_json["metrics"], "metrics")
    # the comparison is not vacuous: matches, misses and strays all occur
    agg = ours["aggregated_particle_scores"]
    assert sum(v["tp"] for v in agg.values()) > 0
    assert sum(v["fp"] for v in agg.values()) > 0 and sum(v["fn"] for v in agg.values()) > 0

