"""Tuning ``peaks`` on runs with ground truth: per-class threshold, smoothing and window for the best F-beta.

The peaks of a class do not depend on the threshold (it only drops those below it), so for each smoothing and
window the candidates are found once, at the lowest threshold of the grid, and every threshold is then a
filter: a sweep costs one localization per (smoothing, window) and run. Each class is tuned on its own (its
F-beta depends only on its own picks, and with the overlap check on the smaller classes' picks, which are
tuned first; the final score is their weighted mean). A leave-one-run-out estimate
(tune on all runs but one, score the one left out, counts summed) says whether the tuning generalizes.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass, field

import numpy as np

from pipeline.evaluate import Counts, object_fbeta, resolve_threshold_scale, score_object
from pipeline.localize.common import Candidates, Picks, Task, finalize, per_class, size_window
from pipeline.localize.overlaps import check_class, foreground_fill

log = logging.getLogger(__name__)

# A grid around the defaults, and a class leaves the settings given only for a clear gain on the runs tuned on:
# on the validation project (3 runs) a wider grid and any gain fitted those runs (leave-one-run-out below the
# defaults'; benchmarks/RESULTS.md)
THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(3, 10))  # 0.15 .. 0.45
SMOOTHINGS = (0.15, 0.25, 0.35)
WINDOWS = (0.75, 1.0, 1.5)
MIN_GAIN = 0.01  # F-beta a class must gain over the settings given to take other ones
# ... and it must have at least this many ground-truth particles in the runs tuned on: below, a 0.01 gain is a
# pick or two, and three settings fitted to them do not carry to other runs (validation project: 13
# beta-galactosidase and 16 beta-amylase; leave-one-run-out 0.8977 -> 0.9135 on compat's probabilities with this
# rule, any floor from 15 to 40 alike; benchmarks/RESULTS.md)
MIN_PARTICLES = 20


@dataclass
class RunData:
    """One run's probabilities and ground truth: ``gt[name]`` (N, 3) z, y, x voxels."""

    run_id: str
    probabilities: object  # (classes, z, y, x) float
    gt: dict


@dataclass
class ClassChoice:
    name: str
    smoothing: float
    peak_window: float
    threshold: float
    counts: Counts
    fbeta: float
    particles: int = 0  # ground-truth particles in the runs tuned on


@dataclass
class TuneResult:
    before: dict  # name -> (Counts, F-beta) with the settings given
    after: dict  # name -> ClassChoice
    final_before: float
    final_after: float
    leave_one_out: float | None = None  # final F-beta of the tuning, each run scored with settings from the others
    leave_one_out_per_class: dict = field(default_factory=dict)
    min_particles: int = MIN_PARTICLES
    overlap_check: bool = True  # tuned with the overlap check on (localize's default) or off

    def settings_block(self) -> dict:
        """The ``localize:`` YAML block that ``tomopick localize`` and run_all read."""
        return {
            "method": "peaks",
            "thresholds": {n: float(c.threshold) for n, c in self.after.items()},
            "smoothing": {n: float(c.smoothing) for n, c in self.after.items()},
            "peak_window": {n: float(c.peak_window) for n, c in self.after.items()},
            "overlap_check": bool(self.overlap_check),
        }


def _candidates(run: RunData, task: Task, settings, smoothing: float, window: float, floor: float) -> Candidates:
    from pipeline.localize.cpu import candidates_peaks

    tuned = dataclasses.replace(settings, smoothing={"default": smoothing}, peak_window={"default": window},
                                thresholds={"default": floor})
    return candidates_peaks(run.probabilities, task, tuned)


def _picks(cands: Candidates, threshold: float, shape, task: Task) -> Picks:
    keep = cands.sizes >= threshold
    return finalize(cands.centers_zyx_vox[keep], cands.sizes[keep], shape, task.window, "peak")


class _Fills:
    """foreground_fill of one run's probabilities, each (centre, sphere) counted once: a sweep asks for the same
    peaks at every threshold."""

    def __init__(self):
        self.cache: dict = {}

    def __call__(self, volume, center, radius):
        key = (tuple(np.round(np.asarray(center, np.float64), 6)), float(radius))
        if key not in self.cache:
            self.cache[key] = foreground_fill(volume, center, radius)
        return self.cache[key]


def _checked(picks: Picks, run: RunData, task: Task, others: list, fills) -> Picks:
    """``picks`` after the overlap check against ``others`` = [(centres, radius)], the picks of the run's other
    classes (none: no check)."""
    return check_class(picks, task.window.radius, others, run.probabilities, fills) if others else picks


def _class_table(runs, task: Task, settings, grid, metric, scale, others: list, fills: list):
    """{(smoothing, window, threshold): [Counts per run]} of one class over the grid; ``others[i]``: the other
    classes' picks in run i for the overlap check (empty: no check)."""
    thresholds = sorted(grid["thresholds"])
    table: dict = {}
    for smoothing, window in itertools.product(grid["smoothing"], grid["peak_window"]):
        for i, run in enumerate(runs):
            cands = _candidates(run, task, settings, smoothing, window, thresholds[0])
            shape = run.probabilities.shape[-3:]
            gt = run.gt.get(task.name, np.zeros((0, 3)))
            for t in thresholds:
                picks = _checked(_picks(cands, t, shape, task), run, task, others[i], fills[i])
                table.setdefault((smoothing, window, t), []).append(
                    score_object(picks.centers_zyx_vox, gt, task.window.radius, metric, scale))
    return table


def _run_picks(run: RunData, tasks: list[Task], settings, chosen: dict) -> dict:
    """{name: Picks} of every class of one run at the (smoothing, window, threshold) ``chosen`` for it, before
    the overlap check (the claims of other classes are read from these)."""
    out = {}
    for task in tasks:
        s, w, t = chosen[task.name]
        out[task.name] = _picks(_candidates(run, task, settings, s, w, t), t, run.probabilities.shape[-3:], task)
    return out


def _others(run_picks: dict, tasks: list[Task], name: str) -> list:
    return [(run_picks[t.name].centers_zyx_vox, float(t.window.radius)) for t in tasks if t.name != name]


def _best(table: dict, runs_idx, beta: float, given, min_particles: int = MIN_PARTICLES):
    """(key, Counts, F-beta) of the best grid point over the runs ``runs_idx`` (ties: the first in grid order);
    the settings given (``given``) unless the best beats them by ``MIN_GAIN`` on at least ``min_particles``
    ground-truth particles."""
    def scored(key):
        counts = sum((table[key][i] for i in runs_idx), Counts(0, 0, 0))
        return key, counts, object_fbeta(counts, beta)[2]

    kept = scored(given)
    if kept[1].tp + kept[1].fn < min_particles:
        return kept
    best = None
    for key in table:
        candidate = scored(key)
        if best is None or candidate[2] > best[2] + 1e-12:
            best = candidate
    return best if best[2] >= kept[2] + MIN_GAIN else kept


def tune(runs: list[RunData], objects, voxel_size: float, settings, *, metric: str, beta: float,
         distance_threshold_scale: float | None = None, grid: dict | None = None,
         min_particles: int = MIN_PARTICLES) -> TuneResult:
    """Best per-class (smoothing, peak_window, threshold) over ``grid`` (keys ``smoothing``, ``peak_window``,
    ``thresholds``), against the ``settings`` given (a LocalizeConfig) as "before"; a class with fewer than
    ``min_particles`` ground-truth particles in the runs keeps the settings given.

    With ``settings.overlap_check`` a class's picks depend on smaller classes' (a peak a smaller class claims
    may be dropped; never the other way), so classes are tuned smallest first, each against the smaller ones'
    picks at their tuned settings: "after" is what localize gives with the tuned block, "before" what it gives
    with the settings given. The leave-one-run-out estimate holds the smaller classes at the settings tuned on
    all runs."""
    grid = {"smoothing": SMOOTHINGS, "peak_window": WINDOWS, "thresholds": THRESHOLDS, **(grid or {})}
    for obj in objects:  # the settings given are always candidates, so tuning never scores below them
        grid = {**grid, "smoothing": tuple(sorted({*grid["smoothing"], per_class(settings.smoothing, obj.name)})),
                "thresholds": tuple(sorted({*grid["thresholds"], per_class(settings.thresholds, obj.name)})),
                "peak_window": tuple(sorted({*grid["peak_window"], per_class(settings.peak_window, obj.name)}))}
    scale = resolve_threshold_scale(metric, distance_threshold_scale)
    tasks = [Task(o.name, o.label, size_window(o, voxel_size, settings.radius_min_scale, settings.radius_max_scale))
             for o in objects]
    weights = {o.name: o.weight for o in objects}
    everyone = range(len(runs))
    given = {o.name: (per_class(settings.smoothing, o.name), per_class(settings.peak_window, o.name),
                      per_class(settings.thresholds, o.name)) for o in objects}
    check = bool(getattr(settings, "overlap_check", False))
    fills = [_Fills() for _ in runs]
    given_picks = [_run_picks(run, tasks, settings, given) if check else None for run in runs]
    tuned_picks: list[dict] = [{} for _ in runs]
    tables, before, chosen = {}, {}, {}
    for task in sorted(tasks, key=lambda t: t.window.radius):  # smaller classes' picks are settled first
        smaller = [t for t in tasks if t.window.radius < task.window.radius]
        others = [[(tuned_picks[i][t.name].centers_zyx_vox, float(t.window.radius)) for t in smaller]
                  if check else [] for i in everyone]
        tables[task.name] = _class_table(runs, task, settings, grid, metric, scale, others, fills)
        (s, w, t), counts, f = _best(tables[task.name], everyone, beta, given[task.name], min_particles)
        chosen[task.name] = ClassChoice(task.name, s, w, t, counts, f, counts.tp + counts.fn)
        counts = Counts(0, 0, 0)
        for i, run in enumerate(runs):
            picks = _picks(_candidates(run, task, settings, s, w, t), t, run.probabilities.shape[-3:], task)
            tuned_picks[i][task.name] = picks
            if check:  # "before": every class at the settings given, as localize would pick them
                mine = _checked(given_picks[i][task.name], run, task, _others(given_picks[i], tasks, task.name),
                                fills[i])
            else:
                mine = None
            counts = counts + (tables[task.name][given[task.name]][i] if mine is None else score_object(
                mine.centers_zyx_vox, run.gt.get(task.name, np.zeros((0, 3))), task.window.radius, metric, scale))
        before[task.name] = (counts, object_fbeta(counts, beta)[2])
    before = {o.name: before[o.name] for o in objects}
    after = {o.name: chosen[o.name] for o in objects}
    result = TuneResult(before, after, _weighted({n: v[1] for n, v in before.items()}, weights),
                        _weighted({n: c.fbeta for n, c in after.items()}, weights), min_particles=min_particles,
                        overlap_check=check)
    if len(runs) > 1:
        loo = {}
        for obj in objects:
            held = Counts(0, 0, 0)
            for i in everyone:
                key, _, _ = _best(tables[obj.name], [j for j in everyone if j != i], beta, given[obj.name],
                                  min_particles)
                held = held + tables[obj.name][key][i]
            loo[obj.name] = object_fbeta(held, beta)[2]
        result.leave_one_out_per_class = loo
        result.leave_one_out = _weighted(loo, weights)
    return result


def _weighted(fbetas: dict, weights: dict) -> float:
    total = sum(weights[n] for n in fbetas)
    return sum(fbetas[n] * weights[n] for n in fbetas) / total if total > 0 else 0.0


def format_result(result: TuneResult, metric: str, beta: float) -> str:
    lines = [f"{metric} rule, beta {beta:g}",
             f"{'object':<20} {'F before':>9} {'F after':>8}  {'threshold':>9} {'smoothing':>9} {'window':>6}"
             f"{'  F leave-one-run-out' if result.leave_one_out is not None else ''}"]
    for name, choice in result.after.items():
        loo = f"  {result.leave_one_out_per_class[name]:19.3f}" if result.leave_one_out is not None else ""
        lines.append(f"{name:<20} {result.before[name][1]:9.3f} {choice.fbeta:8.3f}  {choice.threshold:9.2f} "
                     f"{choice.smoothing:9.2f} {choice.peak_window:6.2f}{loo}")
    few = [f"{c.name} ({c.particles})" for c in result.after.values() if c.particles < result.min_particles]
    if few:
        lines.append(f"kept as given, fewer than {result.min_particles} ground-truth particles in these runs: "
                     + ", ".join(few))
    lines.append(f"final weighted F{beta:g}: before {result.final_before:.4f}, after {result.final_after:.4f}"
                 + (f", leave-one-run-out {result.leave_one_out:.4f}" if result.leave_one_out is not None else ""))
    return "\n".join(lines)
