"""The whole job, whoever started it (run_all.py, ``tomopick run|segment|localize``): open the project, check
the models, choose the runs, hand them to an executor, write the reports, evaluate."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.device import DeviceChoice, cuda_device_count, resolve_device
from pipeline.errors import name_list
from pipeline.run.context import WorkerContext
from pipeline.run.executors import LocalExecutor, ProcessExecutor
from pipeline.run.outputs import RunOutputs
from pipeline.run.reports import (
    SKIPPED_DONE,
    JobResult,
    RunRecord,
    keep_or_write_shard_report,
    localize_log_params,
    manifest_path,
    report_path,
    segmentation_log_params,
    shard_suffix,
    update_report_evaluation,
    warn_split_differs,
    write_manifest,
    write_report,
)
from pipeline.run.select import prepare_project, run_is_done, select_runs, written_segmentation

log = logging.getLogger(__name__)


def output_dir(cfg: RunConfig, root) -> Path:
    from pipeline import copick_io

    return Path(cfg.output.dir) if cfg.output.dir else copick_io.overlay_root(root) / "tomopick"


def worker_devices(cfg: RunConfig, device: DeviceChoice) -> list[str]:
    """One device per worker: every visible GPU for ``auto``/``cuda``, else the one device asked for."""
    spec = (cfg.device or "auto").lower()
    if device.is_cuda and spec in ("auto", "cuda"):
        return [f"cuda:{i}" for i in range(cuda_device_count())]
    return [device.torch_device]


def _write_parameter_logs(cfg: RunConfig, ctx: WorkerContext) -> None:
    from pipeline import overlay_files

    seg = written_segmentation(cfg)
    if seg is not None:
        overlay_files.write_segmentation_log(ctx.root, seg, segmentation_log_params(cfg, ctx.ensemble, ctx.device))
    if cfg.has("localize"):
        loc = cfg.localize
        overlay_files.write_overlay_log(ctx.root, f"localize-{loc.pick_user_id}_{loc.pick_session_id}.yaml",
                                    localize_log_params(cfg, ctx.objects))


def run_pipeline(cfg: RunConfig, progress: bool = True, workers: list[str] | None = None) -> JobResult:
    """Run every selected run through the config's stages, then evaluate when the config says so.

    ``workers`` overrides the per-device worker list (tests use it to exercise the multi-worker path on the CPU).
    """
    from pipeline import copick_io

    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    log.info("device %s (%s)", device.torch_device, device.reason)
    root = prepare_project(cfg)
    devices = workers or worker_devices(cfg, device)
    on_ray = cfg.executor == "ray"
    if on_ray:  # Ray missing: said before the models load
        from pipeline.run.ray_connect import import_ray

        import_ray()
    # the job's own context validates models and labels before any work, also when workers do the runs
    ctx = WorkerContext.open(cfg, device if len(devices) == 1 and not on_ray else resolve_device("cpu"), root=root)
    run_ids, skipped_missing, split = select_runs(cfg, root)
    if cfg.evaluate is not None and cfg.stages:
        _check_ground_truth_exists(cfg, root)

    todo, records = [], []
    for run_id in run_ids if cfg.stages else []:  # no stage (stages: [] with evaluate): only the scoring
        if not cfg.output.overwrite and run_is_done(cfg, root, run_id, ctx.objects):
            records.append(RunRecord(run_id, status=SKIPPED_DONE))
        else:
            todo.append(run_id)
    if records:
        log.info("%d run(s) are done already and are skipped (--overwrite / output.overwrite: true redoes them)",
                 len(records))
        _warn_unsaved_probabilities(cfg, [r.run_id for r in records])
        _warn_picked_otherwise(cfg, root, [r.run_id for r in records])
    outputs = RunOutputs(root, cfg, ctx.objects)
    if not cfg.output.overwrite:
        _refuse_foreign_outputs(cfg, outputs, todo)
        _refuse_replacing_finished_segmentations(cfg, root, todo)
    out_dir = output_dir(cfg, root)
    result = JobResult(records, 0.0, device, skipped_missing=skipped_missing, split=split)
    if split is not None:
        warn_split_differs(cfg, split, out_dir)
    if todo and cfg.stages:
        check_writable(copick_io.overlay_root(root), out_dir)
        _write_parameter_logs(cfg, ctx)
        # before the reports' try: an executor that cannot start (Ray missing or unreachable, a cluster too small)
        # ran nothing, and leaves the earlier job's reports as they were
        if on_ray:
            from pipeline.run.ray_executor import RayExecutor

            executor = RayExecutor(cfg, cleanup=outputs.remove_partial, root=root)
            executor.prepare(len(todo))
            ctx.ensemble = None  # the actors load their own
        elif len(devices) > 1 and len(todo) > 1:
            ctx.ensemble = None  # the workers load their own
            executor = ProcessExecutor(cfg, devices, cleanup=outputs.remove_partial)
        else:
            executor = LocalExecutor(ctx)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="runs", unit="run", disable=None)
        finished: dict[str, RunRecord] = {}

        def on_record(rec: RunRecord) -> None:
            finished[rec.run_id] = rec
            if bar is not None:
                bar.update(1)

        try:
            records += executor.run(todo, on_record=on_record)
        except BaseException as exc:
            records += finished.values()  # interrupted or stopped: the runs that finished are reported
            result.stopped = {"by": stop_reason(exc), "runs_not_done": [r for r in todo if r not in finished]}
            raise
        finally:  # also on Ctrl-C / SIGTERM: what was done is reported
            if bar is not None:
                bar.close()
            result.wall_seconds = time.perf_counter() - t_start
            result.report_path = write_report(cfg, result, out_dir)
            result.manifest_path = write_manifest(cfg, result, out_dir)
    else:
        # nothing ran: the reports of the job that did the work stay (and nothing is written to the overlay)
        result.report_path, result.manifest_path = report_path(cfg, out_dir), manifest_path(cfg, out_dir)
        if not cfg.stages:  # the reports there are another job's: not this one's to name
            result.report_path = result.manifest_path = None
            log.info("no stage to run: scoring the picks %s/%s of %d run(s)", cfg.localize.pick_user_id,
                     cfg.localize.pick_session_id, len(run_ids))
        elif split is None:  # a shard that ran leaves its report below: tomopick report counts it
            kept = report_path(cfg, out_dir).is_file()
            log.info("nothing to run%s", f"; the earlier reports in {out_dir} are kept" if kept else
                     " (every run is done already; the reports of the job that did them are in its output.dir)")

    for rec in result.failed:
        log.warning("run %s was skipped after an error: %s", rec.run_id, rec.error)
    if cfg.evaluate is not None:
        evaluated = [r.run_id for r in records if r.status in ("done", SKIPPED_DONE)] if cfg.stages else run_ids
        if evaluated:
            result.evaluation, result.evaluation_table, _ = evaluate_runs(cfg, root, ctx.objects, evaluated, out_dir)
            if not todo and split is None and cfg.stages:  # the kept report must not show the earlier scores
                update_report_evaluation(result.report_path, result.evaluation)
        elif run_ids:  # a shard with no run (an array rounded up) has said so: not a warning
            log.warning("no run has picks to evaluate")
    result.wall_seconds = time.perf_counter() - t_start
    if todo and cfg.stages:
        result.report_path = write_report(cfg, result, out_dir)
    elif split is not None and cfg.stages:  # after the evaluation, as the report of a shard that ran
        keep_or_write_shard_report(cfg, result, out_dir)
    log.info("finished %d run(s) in %.1f s (%d failed, %d already done)", len(todo), result.wall_seconds,
             len(result.failed), sum(r.status == SKIPPED_DONE for r in records))
    return result


def stop_reason(exc: BaseException) -> str:
    """What stopped a job, in the words of its report (``stopped.by``)."""
    from pipeline.errors import RunFailed, Terminated

    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(exc, Terminated):
        return str(exc)  # "stopped by signal 15"
    if isinstance(exc, RunFailed):
        return f"a run failed with output.on_error: raise ({exc})"
    return f"{type(exc).__name__}: {exc}"


def check_writable(*folders: Path) -> None:
    """Stop before any work, naming the folder, where this job could not write its outputs (a read-only file
    system, no permission), rather than after the first run's segmentation."""
    import errno
    import os

    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            code = errno.EROFS if os.statvfs(folder).f_flag & os.ST_RDONLY else errno.EACCES
            raise OSError(code, os.strerror(code), str(folder))


def _refuse_foreign_outputs(cfg: RunConfig, outputs: RunOutputs, todo: list[str]) -> None:
    """Outputs this job would replace that no tomopick job of this output left behind: never without --overwrite."""
    from pipeline.errors import RunError

    foreign = {run_id: found for run_id in todo if (found := outputs.foreign(run_id))}
    if foreign:
        elsewhere = []  # only the ways this job's command has
        if cfg.has("localize"):
            elsewhere.append("another pick session: -psid, localize.pick_session_id")
        if written_segmentation(cfg) is not None:
            elsewhere.append("another segmentation: -seginfo, segment.write_segmentation")
        listing = _first_runs([f"{run_id}: {', '.join(found)}" for run_id, found in foreign.items()])
        raise RunError(
            f"{cfg.copick_config}: {len(foreign)} run(s) already have outputs that this job would replace and that "
            f"tomopick did not write: {listing}. Pass --overwrite (output.overwrite: true) to replace them, or "
            f"write elsewhere ({'; '.join(elsewhere)})"
        )


def _first_runs(parts: list[str], shown: int = 5) -> str:
    """The first runs of a refusal's list, and how many more there are."""
    more = f" (and {len(parts) - shown} more runs)" if len(parts) > shown else ""
    return "; ".join(parts[:shown]) + more


def _check_ground_truth_exists(cfg: RunConfig, root) -> None:
    """A misspelled ground-truth user or session stops the job before any work, not after the last run."""
    from pipeline.errors import ConfigError, RunError
    from pipeline.evaluate_io import check_pick_sets_exist, project_run_ids

    ev = cfg.evaluate
    try:
        check_pick_sets_exist(root, project_run_ids(root),
                              {"ground truth": (ev.ground_truth_user_id, ev.ground_truth_session_id)},
                              cfg.copick_config)
    except RunError as exc:
        raise ConfigError(f"{cfg.source}: {exc} (in a run config: evaluate.ground_truth_user_id / "
                          "ground_truth_session_id)") from None


def _warn_picked_otherwise(cfg: RunConfig, root, skipped: list[str]) -> None:
    """Runs skipped as done keep outputs made with other settings (a tuned file, another method, other models or
    segmentation settings): say so."""
    from pipeline.run.select import picked_otherwise

    other = picked_otherwise(cfg, root, skipped)
    if other:
        keys = sorted({k for ks in other.values() for k in ks})
        if cfg.has("localize"):
            log.warning("%d run(s) skipped as done were picked with other settings (%s differ); their picks stay "
                        "as they are: --overwrite (output.overwrite: true) does them again with these, or write to "
                        "another pick session (-psid, localize.pick_session_id)", len(other), ", ".join(keys))
        else:
            log.warning("%d run(s) skipped as done were segmented with other settings (%s differ); their "
                        "segmentations stay as they are: --overwrite (output.overwrite: true) segments them again "
                        "with these, or write another segmentation (-seginfo, segment.write_segmentation)",
                        len(other), ", ".join(keys))


def _warn_unsaved_probabilities(cfg: RunConfig, skipped: list[str]) -> None:
    """Runs skipped as done save no probabilities: say so, rather than leave the folder without them."""
    folder = cfg.segment.save_probabilities if cfg.has("segment") else None
    if not folder:
        return
    from pipeline.probability_files import probability_path

    missing = [run_id for run_id in skipped if not probability_path(folder, run_id).is_file()]
    if missing:
        listing = name_list(missing)
        log.warning("%d run(s) skipped as done have no probabilities in %s (%s): their segmentation is not redone; "
                    "--overwrite (output.overwrite: true) segments them again and saves them", len(missing), folder,
                    listing)


def _refuse_replacing_finished_segmentations(cfg: RunConfig, root, todo: list[str]) -> None:
    """A job that picks would segment again, and replace, a segmentation another tomopick job finished (a
    `tomopick segment` job, or a full job with other picks): never without --overwrite."""
    if not (cfg.has("segment") and cfg.has("localize")):
        return
    from pipeline import overlay_files
    from pipeline.errors import RunError
    from pipeline.run.select import _describe_key, marker_key, segmentation_finished_by

    key = marker_key(cfg)
    finished = {run_id: by for run_id in todo
                if not overlay_files.writing_marker(root, run_id, key).is_file()
                and (by := segmentation_finished_by(cfg, root, run_id))}
    if finished:
        seg = written_segmentation(cfg)
        listing = _first_runs([f"{run_id} (by {_describe_key(by)})" for run_id, by in finished.items()])
        from pipeline.localize.methods import PROBABILITIES, get_method

        if get_method(cfg.localize.method).needs == PROBABILITIES:  # a segmentation alone keeps no probabilities
            reuse = (f"; {cfg.localize.method} picks from class probabilities, which that segmentation does not keep: "
                     "to pick from it, use a method that reads labels (localize-only: stages: [localize] with "
                     "localize.segmentation, or `tomopick localize -sinfo`)")
        else:
            reuse = ("; or pick from that one without segmenting (stages: [localize] with localize.segmentation, "
                     "or `tomopick localize -sinfo`)")
        raise RunError(
            f"{cfg.copick_config}: {len(finished)} run(s) have the segmentation {seg.uri()} finished by an earlier "
            f"tomopick job, which this job would segment again and replace: {listing}. Pass --overwrite "
            "(output.overwrite: true) to replace it; write another segmentation (segment.write_segmentation, "
            f"-seginfo){reuse}"
        )


def warn_min_score_drops(result, pick_user_id: str, pick_session_id) -> None:
    """One warning when ``evaluate.min_score`` leaves an object class (or everything) without picks: its F-beta
    is then 0 because of the cut, not the picks, and the scales differ by method."""
    if result.min_score is None:
        return
    emptied = [(name, read) for name, (read, kept) in result.picks_read.items() if read and not kept]
    if not emptied:
        return
    total = sum(read for _, read in emptied)
    every = len(emptied) == len(result.picks_read)
    which = f"all {total} picks" if every else "every pick of " + ", ".join(f"{name} ({n})" for name, n in emptied)
    log.warning(
        "--min-score %g drops %s of %s/%s, so %s 0: peaks scores lie in 0-1 (a peak probability), "
        "watershed/com scores are region size over sphere volume (well below 1)", result.min_score, which,
        pick_user_id, pick_session_id, "every class scores" if every else
        "those classes score" if len(emptied) > 1 else "that class scores")


def evaluate_runs(cfg: RunConfig, root, objects, run_ids: list[str] | None, out_dir: Path | None,
                  progress: bool = False):
    """Score the picks ``localize.pick_user_id/pick_session_id`` of ``run_ids`` (None: every run) against the
    ground truth of ``cfg.evaluate``; write the reports to ``evaluate.save_path`` (relative to ``out_dir``, or
    the working directory without one). Returns (EvaluationResult, table, paths written)."""
    from pipeline.evaluate_io import evaluate_project
    from pipeline.evaluate_report import format_table, write_reports
    from pipeline.objects import select_objects

    ev, loc = cfg.evaluate, cfg.localize
    if ev.object_names:
        objects = select_objects(objects, ev.object_names)
    result = evaluate_project(
        root, objects, run_ids, ground_truth_user_id=ev.ground_truth_user_id,
        ground_truth_session_id=ev.ground_truth_session_id, pick_user_id=loc.pick_user_id,
        pick_session_id=loc.pick_session_id, voxel_size=cfg.voxel_size, metric=ev.metric, beta=ev.beta,
        distance_threshold_scale=ev.distance_threshold_scale, config_path=cfg.copick_config, progress=progress,
        min_score=ev.min_score,
    )
    warn_min_score_drops(result, loc.pick_user_id, loc.pick_session_id)
    save_path = Path(ev.save_path)
    save_path = save_path.with_name(save_path.name + shard_suffix(cfg))  # a shard scores only its own runs
    if not save_path.is_absolute() and out_dir is not None:
        save_path = out_dir / save_path
    return result, format_table(result), write_reports(result, save_path)
