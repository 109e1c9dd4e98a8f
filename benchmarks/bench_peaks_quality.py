"""Quality of the peaks method against watershed on saved class probabilities, and a uniform-settings grid.

Input: a copick project with ground truth and the folder that ``tomopick segment --save-probabilities DIR``
wrote for its runs. For each folder: watershed on the probabilities' argmax (octopi's way), then the peaks
method over a grid of (smoothing, window, threshold) applied to every class alike, with localize's overlap
check (``--compare-overlap-check``: with and without it); prints the final F-beta of
watershed, of the shipped defaults and of the best grid points, with the per-run scores (a uniform setting
needs no held-out runs; ``tomopick tune`` does per-class tuning with leave-one-run-out).

    python benchmarks/bench_peaks_quality.py VAL/config.json PROBS_DIR [PROBS_DIR ...] --metric czii --beta 4
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

GRID = {"thresholds": (0.2, 0.25, 0.3, 0.35, 0.4, 0.5), "smoothing": (0.15, 0.25, 0.35),
        "peak_window": (0.75, 1.0, 1.5)}


def _uniform_table(data, objects, voxel_size, settings, grid, metric, scale, check):
    """{(smoothing, window, threshold): {name: [Counts per run]}}: every class at the same grid point, as
    localize picks them (the overlap check, when on, across the classes' picks at that point)."""
    import itertools

    from pipeline.evaluate import score_object
    from pipeline.localize.common import Task, finalize, size_window
    from pipeline.localize.cpu import candidates_peaks
    from pipeline.localize.overlaps import drop_claimed_by_smaller

    tasks = [Task(o.name, o.label, size_window(o, voxel_size, settings.radius_min_scale, settings.radius_max_scale))
             for o in objects]
    thresholds = sorted(grid["thresholds"])
    out = {}
    for smoothing, window in itertools.product(grid["smoothing"], grid["peak_window"]):
        at = dataclasses.replace(settings, smoothing={"default": smoothing}, peak_window={"default": window},
                                 thresholds={"default": thresholds[0]})
        for d in data:
            shape = d.probabilities.shape[-3:]
            cands = {t.name: candidates_peaks(d.probabilities, t, at) for t in tasks}
            for th in thresholds:
                picks = {t.name: finalize(cands[t.name].centers_zyx_vox[cands[t.name].sizes >= th],
                                          cands[t.name].sizes[cands[t.name].sizes >= th], shape, t.window, "peak")
                         for t in tasks}
                if check:
                    picks = drop_claimed_by_smaller(picks, tasks, d.probabilities)[0]
                cell = out.setdefault((smoothing, window, th), {t.name: [] for t in tasks})
                for t in tasks:
                    cell[t.name].append(score_object(picks[t.name].centers_zyx_vox, d.gt[t.name], t.window.radius,
                                                     metric, scale))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("copick_config")
    ap.add_argument("probabilities", nargs="+", help="folders written by tomopick segment --save-probabilities")
    ap.add_argument("--user-id", default="data-portal", help="ground truth user id")
    ap.add_argument("--session-id", default="0", help="ground truth session id")
    ap.add_argument("--voxel-size", type=float, default=10.0)
    ap.add_argument("--metric", default="czii", choices=("czii", "octopi"))
    ap.add_argument("--beta", type=float, default=4.0)
    ap.add_argument("--n-procs", type=int, default=2)
    ap.add_argument("--top", type=int, default=10, help="grid points to print")
    ap.add_argument("--compare-overlap-check", action="store_true",
                    help="score every grid point with the overlap check on and off")
    args = ap.parse_args(argv)

    from pipeline import copick_io
    from pipeline.config import LocalizeConfig, config_from_dict
    from pipeline.evaluate import Counts, object_fbeta, resolve_threshold_scale, score_picks
    from pipeline.localize import localize
    from pipeline.probability_files import probability_path, read_labels, read_probabilities
    from pipeline.run.select import objects_for_segmentation
    from pipeline.tune import RunData

    root = copick_io.open_project(args.copick_config)
    runs = [r.name for r in root.runs]
    cfg = config_from_dict({"copick_config": args.copick_config, "stages": ["localize"],
                            "localize": {"method": "peaks", "probabilities": args.probabilities[0]}},
                           check_files=False)
    defaults = LocalizeConfig(method="peaks")
    default_key = (defaults.smoothing["default"], defaults.peak_window["default"], defaults.thresholds["default"])
    scale = resolve_threshold_scale(args.metric, None)
    for folder in args.probabilities:
        objects = objects_for_segmentation(cfg, copick_io.particle_objects(root),
                                           read_labels(probability_path(folder, runs[0])))
        weights = {o.name: o.weight for o in objects}
        data = [RunData(r, read_probabilities(probability_path(folder, r)),
                        {o.name: copick_io.read_picks(root, r, o.name, args.user_id, args.session_id,
                                                      args.voxel_size) for o in objects}) for r in runs]
        t0 = time.perf_counter()
        picks = {}
        for d in data:
            label_map = np.argmax(d.probabilities, axis=0).astype(np.uint8)
            found = localize(label_map, objects, args.voxel_size, method="watershed", backend="cpu",
                             n_procs=args.n_procs)
            picks[d.run_id] = {o.name: (found[o.name].centers_zyx_vox, d.gt[o.name]) for o in objects}
        ws = score_picks(picks, objects, args.voxel_size, metric=args.metric, beta=args.beta)
        print(f"== {folder}: watershed on the argmax: F{args.beta:g} {ws.final_fbeta_score:.4f} "
              f"({time.perf_counter() - t0:.1f} s)", {n: round(v[2], 3) for n, v in ws.object_scores().items()})

        grid = dict(GRID)
        for key, value in zip(("smoothing", "peak_window", "thresholds"), default_key):
            grid[key] = tuple(sorted(set(grid[key]) | {value}))
        rows = []
        for check in ((True, False) if args.compare_overlap_check else (defaults.overlap_check,)):
            table = _uniform_table(data, objects, args.voxel_size, defaults, grid, args.metric, scale, check)
            for key, counts in table.items():  # counts[name][run]
                per_class = {o.name: object_fbeta(sum(counts[o.name], Counts(0, 0, 0)), args.beta)[2]
                             for o in objects}
                final = sum(per_class[n] * weights[n] for n in per_class) / sum(weights.values())
                per_run = []
                for i in range(len(data)):
                    run_class = {o.name: object_fbeta(counts[o.name][i], args.beta)[2] for o in objects}
                    per_run.append(sum(run_class[n] * weights[n] for n in run_class) / sum(weights.values()))
                rows.append((final, key + (check,), per_class, per_run))
        rows.sort(key=lambda row: -row[0])

        def show(label, row):
            final, key, per_class, per_run = row
            print(f"  {label} smoothing={key[0]:.2f} window={key[1]:.2f} threshold={key[2]:.2f} "
                  f"overlap_check={'on' if key[3] else 'off'}: "
                  f"F{args.beta:g} {final:.4f} per run {[round(x, 3) for x in per_run]}",
                  {n: round(v, 3) for n, v in per_class.items()})

        for row in rows:
            if row[1][:3] == default_key:
                show("defaults", row)
        for row in rows[:args.top]:
            show("grid", row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
