"""A project's picks through copick -> scores: read ground truth and predictions of every run and object, check
that the users and sessions asked for exist, score them (``pipeline.evaluate``), add precision-recall curves."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np

from pipeline.errors import ConfigError, ProjectError, RunError, name_list
from pipeline.evaluate import (
    DEFAULT_BETA,
    DEFAULT_METRIC,
    EvaluationResult,
    resolve_threshold_scale,
    score_picks,
)
from pipeline.objects import ParticleObject
from pipeline.progress import Progress

log = logging.getLogger(__name__)


def evaluate_project(
    root,
    objects: Sequence[ParticleObject],
    run_ids: Sequence[str] | None,
    *,
    ground_truth_user_id: str,
    ground_truth_session_id: str | None,
    pick_user_id: str,
    pick_session_id: str | None,
    voxel_size: float,
    metric: str = DEFAULT_METRIC,
    beta: float = DEFAULT_BETA,
    distance_threshold_scale: float | None = None,
    config_path: str | None = None,
    progress: bool = False,
    min_score: float | None = None,
) -> EvaluationResult:
    """Read ground-truth and predicted picks of every run and object through ``pipeline.copick_io`` and score
    them (see the module docstring for the rules). ``run_ids`` None: every run of the project. Missing picks
    count as empty. ``min_score``: predicted picks scored lower are left out. ``config_path`` only fills the
    ``input`` block of the reports; ``progress`` reports the runs read (reading picks through copick is most of
    the time) through ``pipeline.progress``: a bar on a terminal, log lines otherwise. The result carries
    precision-recall curves over the pick score (``pr_curves``)."""
    from pipeline import copick_io

    t0 = time.perf_counter()
    resolve_threshold_scale(metric, distance_threshold_scale)  # refuse bad values before reading anything
    objects = list(objects)
    if not objects:
        raise ConfigError("no particle objects to evaluate: the project has none, or none were selected")
    runs = list(run_ids) if run_ids else project_run_ids(root)
    if not runs:
        raise ProjectError(f"project {config_path or root!r} has no runs to evaluate")
    known = set(project_run_ids(root))
    missing = [r for r in runs if r not in known]
    if missing:
        raise RunError(
            f"runs {missing} are not in the project {config_path or ''}; it has {len(known)} runs "
            f"(e.g. {', '.join(sorted(known)[:5])}); check --run-ids"
        )
    check_pick_sets_exist(root, runs, {"ground truth": (ground_truth_user_id, ground_truth_session_id),
                                        "predicted": (pick_user_id, pick_session_id)}, config_path)

    picks: dict[str, dict[str, tuple]] = {}
    scored: dict[str, dict[str, tuple]] = {}
    n_gt = n_pred = 0
    picks_read = {obj.name: [0, 0] for obj in objects}  # read, kept by min_score
    all_scores_one = True  # copick reads a point without a score (octopi writes none) as 1.0
    # through pipeline.progress: a bar on a terminal only; a log file or a pipe gets log lines, never a bar's \r
    with Progress("evaluate: reading picks", total=len(runs), unit="run") if progress else nullcontext() as reporter:
        for run_id in runs:
            picks[run_id], scored[run_id] = {}, {}
            for obj in objects:
                # missing picks read as an empty array: octopi treats "none" and "empty" alike
                gt = copick_io.read_picks(root, run_id, obj.name, ground_truth_user_id, ground_truth_session_id,
                                          voxel_size)
                pred, scores = copick_io.read_scored_picks(root, run_id, obj.name, pick_user_id, pick_session_id,
                                                           voxel_size)
                picks_read[obj.name][0] += len(pred)
                all_scores_one = all_scores_one and bool(np.all(scores == 1.0))
                if min_score is not None:
                    pred, scores = pred[scores >= min_score], scores[scores >= min_score]
                picks_read[obj.name][1] += len(pred)
                n_gt += len(gt)
                n_pred += len(pred)
                picks[run_id][obj.name] = (pred, gt)
                scored[run_id][obj.name] = (pred, scores, gt)
            if reporter is not None:
                reporter.update()
    t_read = time.perf_counter() - t0
    if min_score is not None and min_score <= 1.0 and all_scores_one and any(read for read, _ in picks_read.values()):
        # (above 1 it drops them all, which its own warning says)
        log.warning("every predicted pick of %s/%s scores 1.0: picks written without scores (octopi's, for one) "
                    "read as 1.0, so --min-score %g leaves none out; it sorts picks only where the picker scored "
                    "them (tomopick's localize does)", pick_user_id,
                    pick_session_id if pick_session_id is not None else "*", min_score)
    _warn_runs_without_ground_truth(picks)
    _warn_runs_without_predictions(picks, copick_io.runs_with_pick_set(root, runs, pick_user_id, pick_session_id),
                                   f"{pick_user_id}/{pick_session_id if pick_session_id is not None else '*'}")
    result = score_picks(
        picks, objects, voxel_size, metric=metric, beta=beta, distance_threshold_scale=distance_threshold_scale
    )
    from pipeline.evaluate_curves import precision_recall_curves

    result.pr_curves = precision_recall_curves(scored, objects, voxel_size, metric, result.distance_threshold_scale,
                                               beta)
    result.min_score = min_score
    result.picks_read = {name: tuple(counts) for name, counts in picks_read.items()}
    result.input_params = {
        "copick_config": None if config_path is None else str(config_path),
        "ground_truth_user_id": ground_truth_user_id,
        "ground_truth_session_id": ground_truth_session_id,
        "prediction_user_id": pick_user_id,
        "predict_session_id": pick_session_id,
    }
    result.requested_run_ids = list(run_ids) if run_ids else None
    result.seconds = time.perf_counter() - t0
    log.info(
        "evaluate (%s rule): %d runs x %d objects, %d ground-truth and %d predicted picks, read %.2f s, "
        "scored %.2f s, final F-beta %.4f",
        metric, len(runs), len(objects), n_gt, n_pred, t_read, result.seconds - t_read, result.final_fbeta_score,
    )  # fmt: skip
    return result


def _warn_runs_without_ground_truth(picks: dict) -> None:
    """Runs with predictions but no ground truth of any object scored, beside runs with some: every pick there
    counts as a false positive (octopi's rule), which lowers the score for runs that were never annotated."""
    bare = [run_id for run_id, by_object in picks.items()
            if not any(len(gt) for _, gt in by_object.values()) and any(len(pred) for pred, _ in by_object.values())]
    if bare and len(bare) < len(picks):
        listing = name_list(bare)
        log.warning("%d of the %d runs scored have picks but no ground truth (%s): every pick there counts as a "
                    "false positive, as in octopi; to score only annotated runs, name them with -runs / --run-ids",
                    len(bare), len(picks), listing)


def _warn_runs_without_predictions(picks: dict, localized: list[str], pick_set: str) -> None:
    """Runs with ground truth but no pick file of the predicted user/session at all (a localize job that stopped
    early, runs left out of it): every particle there counts as missed, as in octopi; say so, as for the runs
    without ground truth."""
    bare = [run_id for run_id, by_object in picks.items()
            if run_id not in localized and any(len(gt) for _, gt in by_object.values())]
    if bare:
        listing = name_list(bare)
        log.warning("%d of the %d runs scored have ground truth but no picks of %s (%s): every particle there counts "
                    "as missed, as in octopi; localize them, or name the runs to score with -runs / --run-ids",
                    len(bare), len(picks), pick_set, listing)


def check_pick_sets_exist(root, runs, wanted: dict, config_path) -> None:
    """A user/session with no pick file in any run scored is a typo, not a score of 0: say what there is."""
    from pipeline import copick_io

    try:
        present = copick_io.pick_sets(root, set(runs))
    except Exception as exc:  # copick fails to list a Picks folder with a file it cannot parse
        raise ProjectError(f"project {config_path or ''}: copick cannot list the pick files: {type(exc).__name__}: "
                           f"{exc}; a file in a Picks folder is not named USER_SESSION_OBJECT.json") from None
    for what, (user, session) in wanted.items():
        if not any(u == user and (session is None or s == str(session)) for u, s in present):
            listing = ", ".join(f"{u}/{s} ({n} file{'s' if n > 1 else ''})" for (u, s), n in present.items())
            raise RunError(
                f"no {what} picks of user '{user}', session {session if session is not None else 'any'} in the "
                f"{len(runs)} run(s) scored of {config_path or 'the project'}; the picks there are (user/session): "
                f"{listing or 'none'}; check the user and session ids (-gtuid/-gtsid, -puid/-psid)"
            )


def project_run_ids(root) -> list[str]:
    """Names of every run in the project."""
    return [run.name for run in root.runs]
