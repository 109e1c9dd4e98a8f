"""Evaluation speed: scoring in memory (the math) and reading picks through copick (the I/O), separately.

Math: RUNS x 6 objects x PICKS ground-truth picks (predictions: 80 % of them jittered, some twice, plus strays)
scored with ``score_picks`` (KD-trees) under both rules, against the dense reference that octopi runs (cdist per
run and object, octopi's ``compute_metrics`` when its source is importable, else the same code written here).
Counts must agree; the script exits 1 when they do not.

I/O: a picks-only copick project of IO_RUNS runs, scored with ``evaluate_project`` (reads 2 x 6 pick files per run).

    python benchmarks/bench_evaluate.py                    # 500 runs x 6 objects x 300 picks, 20 I/O runs
    python benchmarks/bench_evaluate.py --runs 50 --io-runs 5
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.spatial.distance import cdist

from pipeline.evaluate import score_picks
from pipeline.objects import ParticleObject

VOXEL_SIZE = 10.0
SHAPE_ZYX = np.array([184, 630, 630])
CZII = [
    ("apo-ferritin", 60.0, 1.0),
    ("beta-amylase", 65.0, 0.0),
    ("beta-galactosidase", 90.0, 2.0),
    ("ribosome", 150.0, 1.0),
    ("thyroglobulin", 130.0, 2.0),
    ("virus-like-particle", 135.0, 1.0),
]


def make_picks(rng, n_runs: int, n_picks: int, objects):
    picks = {}
    for r in range(n_runs):
        picks[f"TS_{r}"] = {}
        for obj in objects:
            r_vox = obj.radius / VOXEL_SIZE
            gt = rng.uniform(0, 1, (n_picks, 3)) * SHAPE_ZYX
            keep = gt[rng.random(n_picks) < 0.8]
            pred = np.vstack([
                keep + rng.normal(0, 0.4 * r_vox, keep.shape),
                keep[: len(keep) // 10] + rng.normal(0, 0.3 * r_vox, (len(keep) // 10, 3)),
                rng.uniform(0, 1, (n_picks // 10, 3)) * SHAPE_ZYX,
            ])  # fmt: skip
            picks[f"TS_{r}"][obj.name] = (pred, gt)
    return picks


def dense_reference(picks, objects, scale: float):
    """octopi's compute_metrics (dense cdist) per run and object; returns run -> object -> (tp, fp, fn)."""
    try:
        from octopi.processing.evaluate import evaluator

        class _Self:
            beta = 4

        def counts(gt, pred, t):
            m = evaluator.compute_metrics(_Self(), gt, pred, t)
            return m["true_positives"], m["false_positives"], m["false_negatives"]

        source = "octopi 1.7 evaluator.compute_metrics"
    except ImportError:

        def counts(gt, pred, t):
            d = cdist(pred, gt)
            near_pred, near_gt = d.min(axis=1), d.min(axis=0)
            return int(np.sum(near_pred < t)), int(np.sum(near_pred >= t)), int(np.sum(near_gt >= t))

        source = "dense cdist (octopi's code, written here)"
    out = {}
    for run_id, by_object in picks.items():
        out[run_id] = {}
        for obj in objects:
            pred, gt = by_object[obj.name]
            out[run_id][obj.name] = counts(gt, pred, obj.radius / VOXEL_SIZE * scale)
    return out, source


def bench_math(n_runs: int, n_picks: int, seed: int) -> bool:
    objects = [ParticleObject(n, i + 1, r, w) for i, (n, r, w) in enumerate(CZII)]
    picks = make_picks(np.random.default_rng(seed), n_runs, n_picks, objects)
    n_gt = sum(len(g) for by in picks.values() for _, g in by.values())
    n_pred = sum(len(p) for by in picks.values() for p, _ in by.values())
    print(f"math: {n_runs} runs x {len(objects)} objects, {n_gt} ground-truth and {n_pred} predicted picks")
    ok = True
    times = {}
    for metric in ("octopi", "czii"):
        t0 = time.perf_counter()
        result = score_picks(picks, objects, VOXEL_SIZE, metric=metric)
        times[metric] = time.perf_counter() - t0
        print(f"  ours ({metric} rule, KD-tree): {times[metric]:.2f} s, final F4 {result.final_fbeta_score:.4f}")
    t0 = time.perf_counter()
    reference, source = dense_reference(picks, objects, 0.8)
    t_ref = time.perf_counter() - t0
    print(f"  reference ({source}): {t_ref:.2f} s")
    result = score_picks(picks, objects, VOXEL_SIZE, metric="octopi")
    for run_id in picks:
        for obj in objects:
            c = result.per_run_counts[run_id][obj.name]
            if (c.tp, c.fp, c.fn) != tuple(reference[run_id][obj.name]):
                print(f"  MISMATCH {run_id} {obj.name}: ours {c} vs reference {reference[run_id][obj.name]}")
                ok = False
    print(f"  octopi rule: ours / reference = {times['octopi']:.2f} / {t_ref:.2f} s = {times['octopi'] / t_ref:.2f}x"
          f"; counts {'identical' if ok else 'DIFFER'}")  # fmt: skip
    return ok


def bench_io(n_runs: int, n_picks: int, seed: int) -> None:
    from pipeline import copick_io
    from pipeline.evaluate_io import evaluate_project
    from pipeline.synthetic import copick_config_dict

    objects_cfg = [dict(name=n, label=i + 1, radius=r, weight=w) for i, (n, r, w) in enumerate(CZII)]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        import json

        config.write_text(json.dumps(copick_config_dict(Path(tmp) / "overlay", objects_cfg)))
        root = copick_io.open_project(config)
        objects = copick_io.particle_objects(root)
        picks = make_picks(np.random.default_rng(seed), n_runs, n_picks, objects)
        t0 = time.perf_counter()
        for run_id, by_object in picks.items():
            root.new_run(run_id, exist_ok=True)
            for name, (pred, gt) in by_object.items():
                copick_io.write_picks(root, run_id, name, gt, VOXEL_SIZE, "data-portal", "0")
                copick_io.write_picks(root, run_id, name, pred, VOXEL_SIZE, "octopi", "1")
        t_write = time.perf_counter() - t0
        root = copick_io.open_project(config)  # fresh root: no cached picks
        t0 = time.perf_counter()
        result = evaluate_project(
            root, objects, None, ground_truth_user_id="data-portal", ground_truth_session_id="0", pick_user_id="octopi",
            pick_session_id="1", voxel_size=VOXEL_SIZE,
        )  # fmt: skip
        t_eval = time.perf_counter() - t0
        t_math = score_picks(picks, objects, VOXEL_SIZE).seconds
    print(f"I/O: {n_runs} runs x {len(objects)} objects x 2 pick files ({n_picks} GT picks each): "
          f"write {t_write:.2f} s; evaluate_project {t_eval:.2f} s ({t_eval / n_runs * 1000:.0f} ms/run), "
          f"of which scoring ~{t_math:.2f} s; final F4 {result.final_fbeta_score:.4f}")  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--picks", type=int, default=300)
    p.add_argument("--io-runs", type=int, default=20, help="runs in the copick I/O part (0 to skip)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()}, python "
          f"{platform.python_version()}, numpy {np.__version__}")  # fmt: skip
    ok = bench_math(args.runs, args.picks, args.seed)
    if args.io_runs > 0:
        bench_io(args.io_runs, args.picks, args.seed)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
