"""The evaluation's files and table: ``average_metrics.yaml`` and ``metrics.json`` in octopi's structure,
``scores.png`` (per-object precision, recall and F-beta) and the printed per-object table."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from pipeline.evaluate import SUMMARY_KEYS, EvaluationResult

AVERAGE_METRICS_FILE = "average_metrics.yaml"
METRICS_FILE = "metrics.json"
PLOT_FILE = "scores.png"

log = logging.getLogger(__name__)


def _plain(value):
    """numpy scalars -> Python numbers, recursively, so YAML/JSON stay plain."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def average_metrics_document(result: EvaluationResult) -> dict:
    """octopi's ``average_metrics.yaml`` content (same keys, same order) plus our own ``parameters``."""
    return _plain(
        {
            "input": result.input_params,
            "final_fbeta_score": result.final_fbeta_score,
            "aggregated_particle_scores": {
                o.name: {
                    "tp": result.aggregated[o.name].tp,
                    "fp": result.aggregated[o.name].fp,
                    "fn": result.aggregated[o.name].fn,
                    "weight": o.weight,
                }
                for o in result.objects
            },
            "summary_metrics": result.summary,
            "parameters": parameters_block(result),
        }
    )


def parameters_block(result: EvaluationResult) -> dict:
    # octopi's two keys first (same names), then what else decides the numbers.
    return {
        "distance_threshold_scale": result.distance_threshold_scale,
        "runIDs": result.requested_run_ids,
        "metric": result.metric,
        "beta": result.beta,
        "voxel_size": result.voxel_size,
        **({"min_score": result.min_score} if result.min_score is not None else {}),
    }


def metrics_document(result: EvaluationResult) -> dict:
    """octopi's ``metrics.json`` content: input, per-run per-object metrics, parameters."""
    return _plain({"input": result.input_params, "metrics": result.per_run, "parameters": parameters_block(result)})


def write_reports(result: EvaluationResult, save_path) -> list[Path]:
    """Write ``average_metrics.yaml``, ``metrics.json`` (octopi's structure) and ``scores.png`` (per-object
    precision, recall and F-beta) into ``save_path`` (created). Returns their paths. Nothing is rewritten when
    the numbers are those already there (a re-evaluation of finished runs from a read-only overlay works)."""
    import yaml

    from pipeline import atomic, plots

    out_dir = Path(save_path)
    yaml_text = yaml.safe_dump(average_metrics_document(result), indent=4, default_flow_style=False, sort_keys=False)
    json_text = json.dumps(metrics_document(result), indent=4)
    paths = [out_dir / AVERAGE_METRICS_FILE, out_dir / METRICS_FILE, out_dir / PLOT_FILE]
    unchanged = paths[2].is_file() and all(
        p.is_file() and p.read_text() == text for p, text in ((paths[0], yaml_text), (paths[1], json_text))
    )
    if unchanged:
        log.info("evaluation reports in %s are unchanged", out_dir)
        return paths
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(paths[0], yaml_text)
    atomic.write_text(paths[1], json_text)
    plots.plot_scores(result, paths[2])
    log.info("evaluation reports written to %s", out_dir)
    return paths


def format_table(result: EvaluationResult) -> str:
    """Per-object table (summed counts, precision, recall, F-beta, weight; mean +- std F-beta over runs) and
    the final weighted score."""
    scores = result.object_scores()
    width = max([len("object")] + [len(o.name) for o in result.objects])
    header = (
        f"{'object':<{width}}  {'weight':>6}  {'TP':>6}  {'FP':>6}  {'FN':>6}  {'precision':>9}  {'recall':>6}  "
        f"{'F' + format(result.beta, 'g'):>6}  {'F-beta per run (mean +- std)':>28}"
    )
    lines = [
        f"{result.metric} rule, threshold {result.distance_threshold_scale:g} x radius, beta {result.beta:g}, "
        f"{len(result.run_ids)} runs{result.picks_scope}",
        header,
        "-" * len(header),
    ]
    for o in result.objects:
        c = result.aggregated[o.name]
        p, r, f = scores[o.name]
        fb = result.summary[o.name]["fbeta_score"]
        per_run = "n/a" if math.isnan(fb["mean"]) else f"{fb['mean']:.3f} +- {fb['std']:.3f}"
        # octopi's mean leaves out runs where one side (picks or ground truth) is empty: say how many it took
        n_in = sum(1 for r in result.per_run if all(k in result.per_run[r].get(o.name, {}) for k in SUMMARY_KEYS))
        if 0 < n_in < len(result.per_run):
            per_run = f"{per_run} ({n_in} of {len(result.per_run)} runs)"
        lines.append(
            f"{o.name:<{width}}  {o.weight:>6g}  {c.tp:>6d}  {c.fp:>6d}  {c.fn:>6d}  {p:>9.3f}  {r:>6.3f}  "
            f"{f:>6.3f}  {per_run:>28}"
        )
    lines.append("-" * len(header))
    lines.append(f"final weighted F{result.beta:g} score: {result.final_fbeta_score:.4f}")
    return "\n".join(lines)
