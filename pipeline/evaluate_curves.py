"""Precision and recall over the pick score, per object: what keeping only picks scored >= s would give.

For each object, ``points`` score levels spread over the quantiles of its predicted picks' scores; at each
level the predictions below it are dropped and the counts (summed over runs, with the evaluation's rule) give
precision, recall and F-beta. Drawn in scores.png; ``tomopick evaluate --min-score`` applies one such level.
"""

from __future__ import annotations

import numpy as np

from pipeline.evaluate import Counts, object_fbeta, score_object


def precision_recall_curves(scored: dict, objects, voxel_size: float, metric: str, scale: float, beta: float,
                            points: int = 25) -> dict:
    """``scored[run][name] = (pred_zyx_vox, pred_scores, gt_zyx_vox)`` -> ``{name: [(level, P, R, F), ...]}``
    (levels ascending; objects without predictions are left out)."""
    curves = {}
    for obj in objects:
        runs = [by_obj[obj.name] for by_obj in scored.values() if obj.name in by_obj]
        all_scores = np.concatenate([s for _, s, _ in runs]) if runs else np.zeros(0)
        if all_scores.size == 0:
            continue
        levels = np.unique(np.quantile(all_scores, np.linspace(0, 1, points)))
        radius_vox = obj.radius / voxel_size
        curve = []
        for level in levels:
            counts = Counts(0, 0, 0)
            for pred, scores, gt in runs:
                counts = counts + score_object(pred[scores >= level], gt, radius_vox, metric, scale)
            p, r, f = object_fbeta(counts, beta)
            curve.append((float(level), p, r, f))
        curves[obj.name] = curve
    return curves
