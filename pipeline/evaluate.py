"""Evaluation: score predicted picks against ground truth with octopi's rule or the CZII Kaggle rule.

Two rules, named plainly (spec section 6):

``octopi`` (octopi 1.7 ``evaluate``), threshold ``t = radius_vox * distance_threshold_scale`` (default 0.8):
    TP = predictions whose nearest ground-truth point is ``< t`` (strict); FP = the other predictions;
    FN = ground-truth points whose nearest prediction is ``>= t``. Not one-to-one: two predictions on one
    particle are both TP.

``czii`` (the CZII cryo-ET object identification challenge metric), threshold ``t = radius_vox * 0.5``:
    TP = number of *distinct* ground-truth points that have some prediction at distance ``<= t`` (inclusive:
    the challenge metric collects matches with ``KDTree.query_ball_tree(r=t)``, which returns pairs at
    distance "at most r"); FP = predictions - TP; FN = ground truth - TP. As in the challenge, FP can go
    negative when one prediction lies within ``t`` of two ground-truth points (only possible for ground-truth
    centres closer than ``2 t = radius`` to each other, i.e. overlapping particles); we keep the challenge's
    numbers rather than invent a third rule. The challenge measured distances in Angstrom against
    ``0.5 * radius`` Angstrom; we measure in voxels against ``0.5 * radius / voxel_size`` (the same test up to
    the last bit of rounding), and normalise by the weights of the objects scored (the challenge by all six of
    its weights: the same when all six are scored).

Both: no ground truth -> every prediction is FP; no prediction -> every ground-truth point is FN. Per run and
object: precision, recall, F1, F-beta ``(1 + b^2) P R / (b^2 P + R)``, accuracy ``TP / (TP + FP + FN)``, each 0
when its denominator is 0. Final score: per object, TP/FP/FN summed over runs -> F-beta; then the mean weighted
by the objects' ``weight`` (0 when the weights sum to 0).

Like octopi, the per-run mean/std in ``summary_metrics`` are taken only over runs that have both ground truth and
predictions for the object (a run where one side is empty is left out of the means but counted in the final
score); an object with no such run gets NaN there. All coordinates here are (z, y, x) voxels; matching uses
KD-trees (no dense distance matrices).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.config import EvaluateConfig, choices, default
from pipeline.errors import ConfigError
from pipeline.objects import ParticleObject

log = logging.getLogger(__name__)

METRICS = choices("evaluate", "metric")
DEFAULT_THRESHOLD_SCALE = {"octopi": 0.8, "czii": 0.5}
DEFAULT_BETA = default(EvaluateConfig, "beta")  # the one default lives in pipeline/config.py
DEFAULT_METRIC = default(EvaluateConfig, "metric")

# Per-run metric names, in octopi's order (summary_metrics keys).
SUMMARY_KEYS = (
    "precision",
    "recall",
    "f1_score",
    "fbeta_score",
    "accuracy",
    "true_positives",
    "false_positives",
    "false_negatives",
)



@dataclass(frozen=True)
class Counts:
    """True positives, false positives and false negatives of one object (in one run, or summed over runs)."""

    tp: int
    fp: int
    fn: int

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)


ZERO = Counts(0, 0, 0)


# ---------------------------------------------------------------------------------------------------------------
# Pure math: plain arrays in, counts and scores out
# ---------------------------------------------------------------------------------------------------------------


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ConfigError(f"evaluation metric {metric!r} is not known; use one of {', '.join(METRICS)}")
    return metric


def resolve_threshold_scale(metric: str, distance_threshold_scale: float | None) -> float:
    """The scale of the radius that makes the match threshold: the rule's default (0.8 octopi, 0.5 czii) if None."""
    check_metric(metric)
    if distance_threshold_scale is None:
        return DEFAULT_THRESHOLD_SCALE[metric]
    scale = float(distance_threshold_scale)
    if not scale > 0 or not math.isfinite(scale):
        raise ConfigError(
            f"distance threshold scale must be a finite number > 0 (a fraction of the particle radius), "
            f"got {distance_threshold_scale!r}"
        )
    return scale


def _as_points(points, what: str) -> np.ndarray:
    arr = np.asarray(points if points is not None else np.zeros((0, 3)), dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 3), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{what}: expected an (N, 3) array of z, y, x voxel coordinates, got shape {arr.shape}")
    return arr


def nearest_distances(query_zyx: np.ndarray, reference_zyx: np.ndarray, upper_bound: float) -> np.ndarray:
    """Distance from each query point to its nearest reference point (KD-tree); ``inf`` where it is beyond
    ``upper_bound`` (a little slack is added so that distances equal to the bound are still reported exactly)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(reference_zyx)
    bound = np.nextafter(upper_bound, np.inf) * (1 + 1e-9) + 1e-12
    dist, _ = tree.query(query_zyx, k=1, distance_upper_bound=bound)
    return np.asarray(dist, dtype=np.float64)


def score_object(
    pred_zyx,
    gt_zyx,
    radius_vox: float,
    metric: str = DEFAULT_METRIC,
    threshold_scale: float | None = None,
) -> Counts:
    """TP/FP/FN of one object in one run. ``pred_zyx``, ``gt_zyx``: (N, 3) voxel coordinates; ``radius_vox``:
    the object's radius in voxels; ``threshold_scale``: fraction of the radius (None: the rule's default)."""
    check_metric(metric)
    scale = resolve_threshold_scale(metric, threshold_scale)
    pred = _as_points(pred_zyx, "predicted picks")
    gt = _as_points(gt_zyx, "ground-truth picks")
    n_pred, n_gt = len(pred), len(gt)
    if n_gt == 0:
        return Counts(0, n_pred, 0)
    if n_pred == 0:
        return Counts(0, 0, n_gt)
    threshold = float(radius_vox) * scale
    if metric == "octopi":
        d_pred = nearest_distances(pred, gt, threshold)  # each prediction -> nearest ground truth
        d_gt = nearest_distances(gt, pred, threshold)  # each ground truth -> nearest prediction
        tp = int(np.count_nonzero(d_pred < threshold))
        return Counts(tp, n_pred - tp, int(np.count_nonzero(d_gt >= threshold)))
    # czii: distinct ground-truth points with a prediction at distance <= threshold
    d_gt = nearest_distances(gt, pred, threshold)
    tp = int(np.count_nonzero(d_gt <= threshold))
    return Counts(tp, n_pred - tp, n_gt - tp)


def fbeta(precision: float, recall: float, beta: float) -> float:
    # octopi's exact expression and association, so the floats come out bit-identical
    denom = beta**2 * precision + recall
    return (1 + beta**2) * (precision * recall) / denom if denom > 0 else 0


def scores_from_counts(counts: Counts, beta: float = DEFAULT_BETA) -> dict:
    """octopi's per-run metric dict for one object where both ground truth and predictions exist."""
    tp, fp, fn = counts.tp, counts.fp, counts.fn
    precision = tp / (tp + fp) if tp + fp > 0 else 0
    recall = tp / (tp + fn) if tp + fn > 0 else 0
    f1 = 2 * (precision * recall) / (precision + recall) if precision + recall > 0 else 0
    accuracy = tp / (tp + fp + fn) if tp + fp + fn > 0 else 0
    return {
        "precision": precision,
        "recall": recall,
        "f1_score": f1,
        "fbeta_score": fbeta(precision, recall, beta),
        "accuracy": accuracy,
        "true_positives": int(tp),
        "false_positives": int(fp),
        "false_negatives": int(fn),
    }


def one_side_empty_scores(counts: Counts) -> dict:
    """octopi's per-run metric dict when ground truth or predictions are empty (no F1/accuracy keys)."""
    return {
        "precision": 0,
        "recall": 0,
        "fbeta_score": 0,
        "true_positives": int(counts.tp),
        "false_positives": int(counts.fp),
        "false_negatives": int(counts.fn),
    }


def summarize_runs(per_run: Sequence[dict]) -> dict:
    """Mean and (population) std over runs of each metric, from the per-run dicts that have every key
    (octopi leaves out runs where one side was empty). NaN when no run qualifies."""
    out = {}
    rows = [m for m in per_run if all(k in m for k in SUMMARY_KEYS)]
    for key in SUMMARY_KEYS:
        values = np.asarray([m[key] for m in rows], dtype=np.float64)
        if len(values):
            out[key] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
        else:
            out[key] = {"mean": float("nan"), "std": float("nan")}
    return out


def object_fbeta(counts: Counts, beta: float = DEFAULT_BETA) -> tuple[float, float, float]:
    """(precision, recall, F-beta) of counts summed over runs."""
    precision = counts.tp / (counts.tp + counts.fp) if counts.tp + counts.fp > 0 else 0
    recall = counts.tp / (counts.tp + counts.fn) if counts.tp + counts.fn > 0 else 0
    return precision, recall, fbeta(precision, recall, beta)


def final_score(aggregated: Mapping[str, Counts], weights: Mapping[str, float], beta: float = DEFAULT_BETA) -> float:
    """Weighted mean over objects of the F-beta of their summed counts; 0 when the weights sum to 0."""
    total, total_weight = 0.0, 0.0
    for name, counts in aggregated.items():
        weight = weights.get(name, 1)
        total += object_fbeta(counts, beta)[2] * weight
        total_weight += weight
    return total / total_weight if total_weight > 0 else 0


# ---------------------------------------------------------------------------------------------------------------
# Results over runs and objects
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class EvaluationResult:
    """Everything one evaluation produced; ``write_reports`` turns it into octopi's files."""

    metric: str
    beta: float
    distance_threshold_scale: float
    voxel_size: float
    objects: list[ParticleObject]
    run_ids: list[str]
    per_run: dict[str, dict[str, dict]]  # run -> object -> octopi's metric dict
    per_run_counts: dict[str, dict[str, Counts]]
    aggregated: dict[str, Counts]  # object -> counts summed over runs
    summary: dict[str, dict]  # object -> metric -> {"mean", "std"}
    final_fbeta_score: float
    input_params: dict = field(default_factory=dict)
    requested_run_ids: list[str] | None = None
    seconds: float = 0.0
    pr_curves: dict = field(default_factory=dict)  # object -> [(score level, precision, recall, F-beta)]
    min_score: float | None = None  # predicted picks scored lower were left out
    picks_read: dict = field(default_factory=dict)  # object -> (predicted picks read, kept by min_score)

    @property
    def picks_scope(self) -> str:
        """", picks scored >= S" after a ``min_score``, for the table's and the plot's title; else ""."""
        return "" if self.min_score is None else f", picks scored >= {self.min_score:g}"

    @property
    def weights(self) -> dict[str, float]:
        return {o.name: o.weight for o in self.objects}

    def object_scores(self) -> dict[str, tuple[float, float, float]]:
        """object -> (precision, recall, F-beta) of the counts summed over runs (what the final score uses)."""
        return {o.name: object_fbeta(self.aggregated[o.name], self.beta) for o in self.objects}


def score_picks(
    picks: Mapping[str, Mapping[str, tuple[np.ndarray | None, np.ndarray | None]]],
    objects: Sequence[ParticleObject],
    voxel_size: float,
    *,
    metric: str = DEFAULT_METRIC,
    beta: float = DEFAULT_BETA,
    distance_threshold_scale: float | None = None,
) -> EvaluationResult:
    """Score in-memory picks: ``picks[run][object_name] = (pred_zyx_vox, gt_zyx_vox)`` (either may be None or
    empty; a missing object counts as both empty). No I/O."""
    t0 = time.perf_counter()
    check_metric(metric)
    scale = resolve_threshold_scale(metric, distance_threshold_scale)
    if not voxel_size > 0:
        raise ConfigError(f"voxel size must be > 0 Angstrom, got {voxel_size!r}")
    per_run: dict[str, dict[str, dict]] = {}
    per_run_counts: dict[str, dict[str, Counts]] = {}
    aggregated = {o.name: ZERO for o in objects}
    for run_id, by_object in picks.items():
        per_run[run_id], per_run_counts[run_id] = {}, {}
        for obj in objects:
            pred, gt = by_object.get(obj.name, (None, None))
            pred = _as_points(pred, f"run {run_id!r}, object {obj.name!r}: predicted picks")
            gt = _as_points(gt, f"run {run_id!r}, object {obj.name!r}: ground-truth picks")
            counts = score_object(pred, gt, obj.radius / voxel_size, metric, scale)
            if len(gt) == 0 or len(pred) == 0:
                metrics = one_side_empty_scores(counts)
            else:
                metrics = scores_from_counts(counts, beta)
            per_run[run_id][obj.name] = metrics
            per_run_counts[run_id][obj.name] = counts
            aggregated[obj.name] = aggregated[obj.name] + counts
    summary = {o.name: summarize_runs([per_run[r][o.name] for r in per_run]) for o in objects}
    weights = {o.name: o.weight for o in objects}
    return EvaluationResult(
        metric=metric,
        beta=beta,
        distance_threshold_scale=scale,
        voxel_size=float(voxel_size),
        objects=list(objects),
        run_ids=list(picks.keys()),
        per_run=per_run,
        per_run_counts=per_run_counts,
        aggregated=aggregated,
        summary=summary,
        final_fbeta_score=final_score(aggregated, weights, beta),
        seconds=time.perf_counter() - t0,
    )
