"""Evaluation math: hand-computed cases for both rules, brute-force parity on seeded random picks, aggregation,
report structure. No copick here (see test_evaluate_e2e.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from pipeline.errors import ConfigError
from pipeline.evaluate import (
    SUMMARY_KEYS,
    Counts,
    final_score,
    object_fbeta,
    resolve_threshold_scale,
    score_object,
    score_picks,
    summarize_runs,
)
from pipeline.evaluate_report import average_metrics_document, format_table, metrics_document, write_reports
from pipeline.objects import ParticleObject, select_objects

# ------------------------------------------------------------------------------------------------------------
# brute force: dense distance matrices, written straight from the rules' definitions


def brute_octopi(pred, gt, t):
    pred, gt = np.asarray(pred, float).reshape(-1, 3), np.asarray(gt, float).reshape(-1, 3)
    if len(gt) == 0:
        return Counts(0, len(pred), 0)
    if len(pred) == 0:
        return Counts(0, 0, len(gt))
    d = cdist(pred, gt)
    tp = int(np.sum(d.min(axis=1) < t))
    fp = int(np.sum(d.min(axis=1) >= t))
    fn = int(np.sum(d.min(axis=0) >= t))
    return Counts(tp, fp, fn)


def brute_czii(pred, gt, t):
    pred, gt = np.asarray(pred, float).reshape(-1, 3), np.asarray(gt, float).reshape(-1, 3)
    if len(gt) == 0:
        return Counts(0, len(pred), 0)
    if len(pred) == 0:
        return Counts(0, 0, len(gt))
    d = cdist(pred, gt)
    matched_gt = {j for i in range(len(pred)) for j in range(len(gt)) if d[i, j] <= t}
    tp = len(matched_gt)
    return Counts(tp, len(pred) - tp, len(gt) - tp)


def brute(metric, pred, gt, t):
    return brute_octopi(pred, gt, t) if metric == "octopi" else brute_czii(pred, gt, t)


def random_case(rng, n_max=40):
    """GT in a (37, 64, 51) box; predictions = jittered copies of some GT (some twice), plus strays; sometimes
    on the integer grid so that distances hit the threshold exactly."""
    n_gt = int(rng.integers(0, n_max))
    gt = rng.uniform(0, 1, (n_gt, 3)) * [37, 64, 51]
    radius_vox = float(rng.uniform(2, 10))
    n_copy = int(rng.integers(0, n_gt + 1))
    copies = gt[rng.integers(0, max(n_gt, 1), n_copy)] if n_gt else np.zeros((0, 3))
    copies = copies + rng.normal(0, radius_vox * 0.5, copies.shape)
    strays = rng.uniform(0, 1, (int(rng.integers(0, n_max // 2)), 3)) * [37, 64, 51]
    pred = np.vstack([copies, strays])
    if rng.random() < 0.4:  # integer grid: many exact ties with integer thresholds
        gt, pred = np.round(gt), np.round(pred)
        radius_vox = float(rng.integers(2, 10))
    return rng.permutation(pred), gt, radius_vox


# ------------------------------------------------------------------------------------------------------------
# hand-computed cases


def test_duplicates_near_one_particle_octopi_counts_all_czii_counts_once():
    gt = [[10, 10, 10]]
    pred = [[10, 10, 10], [10, 10, 11], [10, 11, 10]]
    # radius 5 voxels: octopi threshold 4, czii threshold 2.5; all three predictions lie within 1 voxel
    assert score_object(pred, gt, 5.0, "octopi") == Counts(3, 0, 0)
    assert score_object(pred, gt, 5.0, "czii") == Counts(1, 2, 0)


def test_no_ground_truth_every_prediction_is_fp():
    pred = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 1, 1]]
    for metric in ("octopi", "czii"):
        assert score_object(pred, np.zeros((0, 3)), 5.0, metric) == Counts(0, 4, 0)
        assert score_object(pred, None, 5.0, metric) == Counts(0, 4, 0)


def test_no_prediction_every_gt_is_fn():
    gt = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    for metric in ("octopi", "czii"):
        assert score_object(np.zeros((0, 3)), gt, 5.0, metric) == Counts(0, 0, 3)
        assert score_object([], gt, 5.0, metric) == Counts(0, 0, 3)
    assert score_object([], [], 5.0, "octopi") == Counts(0, 0, 0)


def test_distance_exactly_at_threshold_octopi_strict_czii_inclusive():
    gt = [[20, 20, 20]]
    pred = [[20, 23, 24]]  # distance exactly 5 = 10 voxels x 0.5
    assert score_object(pred, gt, 10.0, "octopi", 0.5) == Counts(0, 1, 1)
    assert score_object(pred, gt, 10.0, "czii", 0.5) == Counts(1, 0, 0)
    # just inside
    pred_in = [[20, 23, 23.99]]
    assert score_object(pred_in, gt, 10.0, "octopi", 0.5) == Counts(1, 0, 0)
    # czii default scale 0.5, octopi default 0.8: 5 < 8 so octopi matches with its default
    assert score_object(pred, gt, 10.0, "octopi") == Counts(1, 0, 0)
    assert score_object(pred, gt, 10.0, "czii") == Counts(1, 0, 0)
    # just outside for czii
    pred_out = [[20, 23, 24.01]]
    assert score_object(pred_out, gt, 10.0, "czii") == Counts(0, 1, 1)


def test_octopi_not_one_to_one_fn_uses_nearest_prediction():
    # two GT 10 apart; one prediction next to the first; the second GT's nearest prediction is 9 away -> FN
    gt = [[0, 0, 0], [0, 0, 10]]
    pred = [[0, 0, 1]]
    assert score_object(pred, gt, 5.0, "octopi") == Counts(1, 0, 1)
    assert score_object(pred, gt, 5.0, "czii") == Counts(1, 0, 1)


def test_czii_one_prediction_between_two_close_gt_keeps_the_challenge_numbers():
    # overlapping GT (2 voxels apart), one prediction 1 voxel from both: both GT matched, FP = 1 - 2 = -1
    gt = [[0, 0, 0], [0, 0, 2]]
    pred = [[0, 0, 1]]
    assert score_object(pred, gt, 4.0, "czii") == Counts(2, -1, 0)
    assert score_object(pred, gt, 4.0, "octopi") == Counts(1, 0, 0)


def test_final_score_weighted_mean_and_weight_zero_objects():
    counts = {"a": Counts(2, 2, 0), "b": Counts(0, 3, 4), "z": Counts(5, 0, 0)}
    # a: P 0.5, R 1 -> F4 = 17 * 0.5 / (16 * 0.5 + 1) = 8.5 / 9; b: 0; z: 1 but weight 0
    assert final_score(counts, {"a": 1, "b": 2, "z": 0}) == pytest.approx((8.5 / 9) / 3, rel=1e-12)
    # the weight-0 object changes nothing whatever its score
    assert final_score(counts, {"a": 1, "b": 2, "z": 0}) == final_score(
        {"a": counts["a"], "b": counts["b"], "z": Counts(0, 9, 9)}, {"a": 1, "b": 2, "z": 0}
    )
    assert final_score(counts, {"a": 0, "b": 0, "z": 0}) == 0
    # a missing weight defaults to 1 (octopi's metadata default)
    assert final_score({"a": Counts(1, 0, 0)}, {}) == 1.0


def test_object_fbeta_zero_denominators_are_zero():
    assert object_fbeta(Counts(0, 0, 0)) == (0, 0, 0)
    assert object_fbeta(Counts(0, 5, 0)) == (0, 0, 0)
    assert object_fbeta(Counts(0, 0, 5)) == (0, 0, 0)
    p, r, f = object_fbeta(Counts(3, 1, 2), beta=1)
    assert (p, r) == (0.75, 0.6)
    assert f == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6))


def test_per_run_metrics_and_summary_follow_octopi():
    objects = [ParticleObject("a", 1, 50.0, 1.0), ParticleObject("b", 2, 50.0, 2.0)]
    gt = np.array([[10, 10, 10], [30, 30, 30]], float)
    picks = {
        # run1 a: 1 TP + 1 FP, 1 FN; b: no predictions
        "run1": {"a": (np.array([[10, 10, 11], [50, 50, 50]], float), gt), "b": (None, gt)},
        # run2 a: perfect; b: predictions but no GT
        "run2": {"a": (gt.copy(), gt), "b": (np.array([[1, 1, 1]], float), None)},
    }
    result = score_picks(picks, objects, 10.0)  # radius 5 vox, threshold 4
    m = result.per_run["run1"]["a"]
    assert (m["true_positives"], m["false_positives"], m["false_negatives"]) == (1, 1, 1)
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["accuracy"] == pytest.approx(1 / 3)
    assert m["fbeta_score"] == pytest.approx(17 * 0.25 / (16 * 0.5 + 0.5))
    # one side empty: octopi's short dict (no f1/accuracy)
    assert result.per_run["run1"]["b"] == {
        "precision": 0, "recall": 0, "fbeta_score": 0,
        "true_positives": 0, "false_positives": 0, "false_negatives": 2,
    }  # fmt: skip
    assert "accuracy" not in result.per_run["run2"]["b"]
    # summary over the runs with both sides only: a has 2 such runs, b none -> NaN
    s = result.summary["a"]["recall"]
    assert s["mean"] == pytest.approx(0.75) and s["std"] == pytest.approx(0.25)
    assert all(math.isnan(result.summary["b"][k]["mean"]) for k in SUMMARY_KEYS)
    # aggregated counts include the one-sided runs
    assert result.aggregated == {"a": Counts(3, 1, 1), "b": Counts(0, 1, 2)}
    fa = object_fbeta(Counts(3, 1, 1))[2]
    assert result.final_fbeta_score == pytest.approx(fa / 3)


def test_summarize_runs_population_std():
    rows = [
        {k: v for k in SUMMARY_KEYS} for v in (1.0, 2.0, 4.0)
    ] + [{"precision": 100}]  # an incomplete (one-sided) row is left out
    s = summarize_runs(rows)
    assert s["precision"]["mean"] == pytest.approx(7 / 3)
    assert s["precision"]["std"] == pytest.approx(np.std([1.0, 2.0, 4.0]))


def test_threshold_scale_defaults_and_errors():
    assert resolve_threshold_scale("octopi", None) == 0.8
    assert resolve_threshold_scale("czii", None) == 0.5
    assert resolve_threshold_scale("czii", 0.7) == 0.7
    with pytest.raises(ConfigError, match="metric 'kaggle'"):
        resolve_threshold_scale("kaggle", None)
    with pytest.raises(ConfigError, match="> 0"):
        resolve_threshold_scale("octopi", -1)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        score_object(np.zeros((4, 2)), np.zeros((3, 3)), 5.0)


def test_select_objects():
    objs = [ParticleObject("a", 1, 50.0), ParticleObject("b", 2, 60.0), ParticleObject("c", 3, 70.0)]
    assert select_objects(objs, None) == objs
    assert [o.name for o in select_objects(objs, ["c", "a", "c"])] == ["c", "a"]
    with pytest.raises(ConfigError, match=r"\['nope'\].*known particle objects: a, b, c"):
        select_objects(objs, ["a", "nope"])


# ------------------------------------------------------------------------------------------------------------
# randomised parity against brute force


@pytest.mark.parametrize("metric", ["octopi", "czii"])
def test_score_object_matches_brute_force_seeded(metric):
    rng = np.random.default_rng(20261124 + (metric == "czii"))
    for _ in range(300):
        pred, gt, radius_vox = random_case(rng)
        scale = float(rng.choice([0.5, 0.8, 1.0, rng.uniform(0.2, 1.5)]))
        got = score_object(pred, gt, radius_vox, metric, scale)
        assert got == brute(metric, pred, gt, radius_vox * scale), (len(pred), len(gt), radius_vox, scale)


@settings(max_examples=150, deadline=None)
@given(
    pred=st.lists(st.tuples(*[st.integers(0, 12)] * 3), max_size=25),
    gt=st.lists(st.tuples(*[st.integers(0, 12)] * 3), max_size=25),
    threshold=st.integers(1, 6),
    metric=st.sampled_from(["octopi", "czii"]),
)
def test_score_object_matches_brute_force_integer_grid(pred, gt, threshold, metric):
    """Integer coordinates and thresholds: distances land exactly on the threshold often (3-4-5 etc.)."""
    pred = np.array(pred, float).reshape(-1, 3)
    gt = np.array(gt, float).reshape(-1, 3)
    assert score_object(pred, gt, float(threshold), metric, 1.0) == brute(metric, pred, gt, float(threshold))


def test_score_picks_aggregates_the_per_run_counts():
    rng = np.random.default_rng(7)
    objects = [ParticleObject(f"o{i}", i + 1, float(rng.uniform(40, 150)), float(rng.integers(0, 3))) for i in range(4)]
    picks = {}
    for r in range(6):
        picks[f"run{r}"] = {}
        for o in objects:
            pred, gt, _ = random_case(rng, n_max=30)
            picks[f"run{r}"][o.name] = (pred, gt)
    for metric in ("octopi", "czii"):
        result = score_picks(picks, objects, 10.0, metric=metric)
        scale = 0.8 if metric == "octopi" else 0.5
        for o in objects:
            expected = Counts(0, 0, 0)
            for r in picks:
                pred, gt = picks[r][o.name]
                c = brute(metric, pred, gt, o.radius / 10.0 * scale)
                assert result.per_run_counts[r][o.name] == c
                expected = expected + c
            assert result.aggregated[o.name] == expected
        weights = {o.name: o.weight for o in objects}
        num = sum(object_fbeta(result.aggregated[o.name])[2] * weights[o.name] for o in objects)
        den = sum(weights.values())
        assert result.final_fbeta_score == pytest.approx(num / den if den else 0, rel=1e-12)


# ------------------------------------------------------------------------------------------------------------
# reports


def _small_result():
    objects = [ParticleObject("apo", 1, 60.0, 1.0), ParticleObject("ribo", 2, 150.0, 0.0)]
    gt = np.array([[5, 5, 5], [20, 20, 20]], float)
    picks = {
        "TS_1": {"apo": (gt + 1, gt), "ribo": (gt[:1], gt)},
        "TS_2": {"apo": (np.zeros((0, 3)), gt), "ribo": (gt + 30, gt)},
    }
    result = score_picks(picks, objects, 10.0, metric="octopi")
    result.input_params = {
        "copick_config": "cfg.json", "ground_truth_user_id": "data-portal", "ground_truth_session_id": "0",
        "prediction_user_id": "octopi", "predict_session_id": "1",
    }  # fmt: skip
    return result


def test_reports_have_octopis_structure(tmp_path):
    result = _small_result()
    paths = write_reports(result, tmp_path / "scores")
    assert [p.name for p in paths] == ["average_metrics.yaml", "metrics.json", "scores.png"]
    avg = yaml.safe_load(paths[0].read_text())
    assert list(avg) == ["input", "final_fbeta_score", "aggregated_particle_scores", "summary_metrics", "parameters"]
    assert list(avg["input"]) == [
        "copick_config", "ground_truth_user_id", "ground_truth_session_id", "prediction_user_id", "predict_session_id",
    ]  # fmt: skip
    assert avg["final_fbeta_score"] == pytest.approx(result.final_fbeta_score)
    for o in result.objects:
        c = result.aggregated[o.name]
        assert avg["aggregated_particle_scores"][o.name] == {"tp": c.tp, "fp": c.fp, "fn": c.fn, "weight": o.weight}
        assert list(avg["summary_metrics"][o.name]) == list(SUMMARY_KEYS)
    assert avg["parameters"]["distance_threshold_scale"] == 0.8
    assert "runIDs" in avg["parameters"]
    detailed = json.loads(paths[1].read_text())
    assert list(detailed) == ["input", "metrics", "parameters"]
    assert detailed["metrics"]["TS_2"]["apo"]["false_negatives"] == 2
    assert detailed["metrics"] == json.loads(json.dumps(result.per_run))
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # documents are plain data (no numpy types leak into YAML)
    yaml.safe_dump(average_metrics_document(result))
    json.dumps(metrics_document(result))


def test_format_table_lists_every_object_and_the_final_score():
    result = _small_result()
    table = format_table(result)
    for o in result.objects:
        c = result.aggregated[o.name]
        row = next(line for line in table.splitlines() if line.startswith(o.name))
        assert row.split()[1:5] == [f"{o.weight:g}", str(c.tp), str(c.fp), str(c.fn)]
    assert table.splitlines()[-1].endswith(f"{result.final_fbeta_score:.4f}")


def test_format_table_says_when_the_per_run_mean_leaves_runs_out():
    # TS_2 has no apo picks: octopi's per-run mean takes only TS_1 there, and the table must say so
    result = _small_result()
    rows = {line.split()[0]: line for line in format_table(result).splitlines()[2:] if line.split()}
    assert rows["apo"].endswith("(1 of 2 runs)")
    assert "of 2 runs" not in rows["ribo"]
