"""What a job writes about itself: per-run records, throughput.json, run_manifest.json and the parameter logs
octopi keeps in ``<overlay_root>/logs`` (segment-*.yaml, which octopi's ``localize`` needs, and localize-*.yaml).

Every file goes through ``pipeline.atomic``: written aside and renamed, with the umask's file mode.
"""

from __future__ import annotations

import json
import logging
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline import atomic
from pipeline.config import RunConfig, config_to_dict
from pipeline.device import DeviceChoice
from pipeline.errors import name_list
from pipeline.selectors import parse_seg_info

log = logging.getLogger(__name__)

DONE, FAILED, SKIPPED_DONE, CLAIMED = "done", "failed", "skipped-done", "claimed-elsewhere"


@dataclass
class RunRecord:
    run_id: str
    status: str = "pending"  # done | failed | skipped-done | claimed-elsewhere
    shape_zyx: tuple | None = None
    seconds: dict = field(default_factory=dict)  # stage -> seconds
    picks: dict = field(default_factory=dict)  # object -> count
    error: str | None = None
    worker: str = ""
    segment_stats: dict = field(default_factory=dict)  # windows, precision and why, ... (segment stage)

    @classmethod
    def from_dict(cls, doc: dict) -> RunRecord:
        doc = dict(doc)
        if doc.get("shape_zyx") is not None:
            doc["shape_zyx"] = tuple(doc["shape_zyx"])
        return cls(**doc)


@dataclass
class JobResult:
    records: list
    wall_seconds: float
    device: DeviceChoice
    report_path: Path | None = None
    manifest_path: Path | None = None
    evaluation: object | None = None  # pipeline.evaluate.EvaluationResult
    evaluation_table: str | None = None
    skipped_missing: dict = field(default_factory=dict)  # run -> why it had no input
    split: dict | None = None  # a shard: what the split was made from (select.split_basis)
    stopped: dict | None = None  # a job stopped before its runs were done: by what, and the runs not done

    @property
    def failed(self) -> list:
        return [r for r in self.records if r.status == FAILED]


def worker_count(records: list[RunRecord]) -> int:
    """How many workers (devices, Ray actors) did the done runs; each runs a stage on one run at a time."""
    return max(1, len({r.worker for r in records if r.status == DONE}))


def throughput_summary(records: list[RunRecord], wall_seconds: float, *, worker_seconds: float | None = None) -> dict:
    """Counts and rates of one job. ``worker_seconds``: the time the workers had, the denominator of the busy
    fraction (default ``wall_seconds`` x the workers that did runs; merged shards give the sum of theirs).

    Stage seconds add up over runs and workers, so they are compared with worker seconds, never with the wall
    time alone: a stage of one worker is busy at most the whole wall time (busy fraction <= 1), and
    ``wall_over_slowest_stage`` (>= 1) says how far the job is from being bound by its slowest stage (1: the
    other stages hide behind it entirely)."""
    done = [r for r in records if r.status == DONE]
    voxels = sum(int(np.prod(r.shape_zyx)) for r in done if r.shape_zyx)
    stage_totals: dict[str, float] = {}
    for r in done:
        for k, v in r.seconds.items():
            stage_totals[k] = stage_totals.get(k, 0.0) + v
    if worker_seconds is None:
        worker_seconds = wall_seconds * worker_count(records)
    minutes = wall_seconds / 60 if wall_seconds > 0 else float("nan")
    slowest = max(stage_totals, key=stage_totals.get) if stage_totals else None
    return {
        "runs_done": len(done),
        "runs_failed": sum(r.status == FAILED for r in records),
        "runs_already_done": sum(r.status == SKIPPED_DONE for r in records),
        "runs_claimed_elsewhere": sum(r.status == CLAIMED for r in records),
        "wall_seconds": wall_seconds,
        "worker_seconds": worker_seconds,
        "tomograms_per_minute": len(done) / minutes if done else 0.0,
        "voxels_per_second": voxels / wall_seconds if wall_seconds > 0 else 0.0,
        "stage_seconds_total": stage_totals,
        # share of the workers' time the segmentation stage (the GPU, on a GPU) was busy
        "segment_busy_fraction": stage_totals.get("segment", 0.0) / worker_seconds if worker_seconds > 0 else 0.0,
        "slowest_stage": slowest,
        "wall_over_slowest_stage": (worker_seconds / stage_totals[slowest]
                                    if slowest and stage_totals[slowest] else None),
    }


def summary_line(result: JobResult) -> str:
    s = throughput_summary(result.records, result.wall_seconds)
    elsewhere = f", {s['runs_claimed_elsewhere']} being done by another driver" if s["runs_claimed_elsewhere"] else ""
    return (f"{s['runs_done']} run(s) done, {s['runs_already_done']} already done, {s['runs_failed']} failed"
            f"{elsewhere} in {s['wall_seconds']:.1f} s on {result.device.torch_device} "
            f"({s['tomograms_per_minute']:.2f} tomograms/min, {s['voxels_per_second'] / 1e6:.2f} Mvoxel/s)")


def shard_suffix(cfg: RunConfig) -> str:
    """``-shard{K}of{N}`` for a shard's own report files (shards run at once must not overwrite each other's)."""
    shard = cfg.shard_index()
    return _shard_suffix(*shard) if shard else ""


def _shard_suffix(k: int, n: int) -> str:
    return f"-shard{k}of{n}"


def report_path(cfg: RunConfig, out_dir: Path) -> Path:
    path = Path(cfg.output.report)
    path = path.with_name(f"{path.stem}{shard_suffix(cfg)}{path.suffix}")
    return path if path.is_absolute() else out_dir / path


def manifest_path(cfg: RunConfig, out_dir: Path) -> Path:
    return out_dir / f"run_manifest{shard_suffix(cfg)}.json"


def shard_manifest_path(out_dir: Path, k: int, n: int) -> Path:
    """The manifest of shard K/N in ``out_dir`` (``manifest_path`` of that shard's job)."""
    return out_dir / f"run_manifest{_shard_suffix(k, n)}.json"


def write_report(cfg: RunConfig, result: JobResult, out_dir: Path) -> Path:
    finished = time.time()
    doc = {
        "config": cfg.source,
        "device": {"name": result.device.torch_device, "reason": result.device.reason},
        "summary": throughput_summary(result.records, result.wall_seconds),
        # when the job ran, so that merging shards can tell those that ran at once from those one after another
        "started_unix_s": finished - result.wall_seconds,
        "finished_unix_s": finished,
        "runs": [asdict(r) for r in result.records],
        "runs_without_input": result.skipped_missing,
    }
    if result.split is not None:
        doc["split"] = result.split
    if result.stopped is not None:  # not a complete job: a rerun without --overwrite does the runs not done
        doc["stopped"] = result.stopped
    if result.evaluation is not None:
        doc["evaluation"] = evaluation_summary(result.evaluation)
    return atomic.write_json(report_path(cfg, out_dir), doc)


SHARD_REPORT_STEM = re.compile(r"-shard(\d+)of(\d+)$")  # throughput-shard{K}of{N}: see shard_suffix


def evaluation_summary(evaluation) -> dict:
    """The report's ``evaluation``: the final score with the rule, beta and distance threshold it was taken with."""
    return {"metric": evaluation.metric, "beta": evaluation.beta,
            "distance_threshold_scale": evaluation.distance_threshold_scale,
            "final_fbeta_score": evaluation.final_fbeta_score, "evaluated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def update_report_evaluation(path: Path, evaluation) -> None:
    """A job with nothing to run keeps the report of the job that did the work, but scores again (perhaps by
    another rule or beta): the kept report's ``evaluation`` is the new one, so it agrees with scores/."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return  # no earlier report (a new output.dir): scores/ alone says it
    if not isinstance(doc, dict):
        return
    new = evaluation_summary(evaluation)
    old = doc.get("evaluation") if isinstance(doc.get("evaluation"), dict) else {}
    # the same scores again: the file stays as it is (a resume writes nothing)
    if {k: v for k, v in old.items() if k != "evaluated"} != {k: v for k, v in new.items() if k != "evaluated"}:
        doc["evaluation"] = new
        atomic.write_json(path, doc)


def shard_report_paths(cfg: RunConfig, out_dir: Path) -> list[Path]:
    """The shards' ``throughput-shard*of*.json`` in ``out_dir`` (any N), sorted; possibly none."""
    base = Path(cfg.output.report)
    return sorted(out_dir.glob(f"{base.stem}-shard*of*{base.suffix}"))


def find_shard_reports(cfg: RunConfig, out_dir: Path) -> list[Path]:
    """The shards' ``throughput-shard*of*.json`` in ``out_dir``; none is an error that says what to run."""
    from pipeline.errors import RunError

    base = Path(cfg.output.report)
    parts = shard_report_paths(cfg, out_dir)
    if not parts:
        raise RunError(f"no shard reports {base.stem}-shardKofN{base.suffix} in {out_dir}; run the shards first "
                       "(run_all.py CONFIG --shard K/N)")
    return parts


def read_shard_report(part: Path) -> tuple[dict, list[RunRecord], float, tuple[float, float] | None]:
    """(document, run records, wall seconds, (start, end) or None) of one shard's throughput report; a file that
    is not one (not JSON, or without its summary and runs) is an error naming it."""
    from pipeline.errors import RunError

    try:
        doc = json.loads(part.read_text())
        if not isinstance(doc, dict) or not isinstance(doc.get("summary"), dict) or not isinstance(doc.get("runs"),
                                                                                                   list):
            raise ValueError("it has no 'summary' and 'runs'")
        wall = float(doc["summary"].get("wall_seconds", 0.0))
        records = [RunRecord.from_dict(rec) for rec in doc["runs"]]
        span = doc.get("started_unix_s"), doc.get("finished_unix_s")
        span = (float(span[0]), float(span[1])) if None not in span else None
    except (ValueError, TypeError, AttributeError) as exc:
        raise RunError(f"shard report {part}: not a tomopick throughput report ({type(exc).__name__}: {exc}); "
                       "run that shard again, or delete the file") from None
    return doc, records, wall, span


def covered_seconds(intervals: list[tuple[float, float]]) -> float:
    """Seconds during which at least one of the (start, end) intervals was running."""
    total, reached = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total


def keep_or_write_shard_report(cfg: RunConfig, result: JobResult, out_dir: Path) -> None:
    """A shard with nothing to run (its runs done already, or no run in its share) leaves a report all the same:
    without one, `tomopick report` takes it for a shard that never ran. Its earlier report in ``out_dir`` is
    kept when it accounts for every run of this share as done (it carries the timings of the work); otherwise
    a new one records the runs as skipped-done (with the manifest of this job)."""
    path = report_path(cfg, out_dir)
    if _accounts_for(path, result):
        log.info("nothing to run; shard %s's earlier report %s accounts for its %d run(s) and is kept",
                 cfg.shard, path, len(result.records))
        return
    try:
        write_report(cfg, result, out_dir)
    except OSError as exc:  # the job's work (none) is done: say what tomopick report will miss
        log.warning("nothing to run, and shard %s could not write its report %s (%s): tomopick report will "
                    "count it as a shard that did not run", cfg.shard, path, exc.strerror or exc)
        return
    try:
        write_manifest(cfg, result, out_dir)
    except OSError as exc:
        log.warning("shard %s could not write its manifest %s (%s): tomopick report cannot compare its settings "
                    "with the other shards'", cfg.shard, manifest_path(cfg, out_dir), exc.strerror or exc)
    share = f"its {len(result.records)} run(s) done already" if result.records else "no run in its share"
    log.info("nothing to run; wrote %s (shard %s: %s) for tomopick report", path, cfg.shard, share)


def _accounts_for(path: Path, result: JobResult) -> bool:
    """Whether the shard report at ``path`` records every run of ``result`` as done, for the same split."""
    try:
        doc = json.loads(path.read_text())
        status = {rec["run_id"]: rec.get("status") for rec in doc["runs"]}
    except (OSError, ValueError, TypeError, KeyError):
        return False  # none, or unreadable: replaced
    if doc.get("split") is not None and doc.get("split") != result.split:
        return False  # the project changed since: it names other runs
    return all(status.get(rec.run_id) in (DONE, SKIPPED_DONE) for rec in result.records)


def warn_split_differs(cfg: RunConfig, split: dict, out_dir: Path) -> None:
    """At a shard's start: one warning when the other shards of its split that have reported in ``out_dir``
    split another run list (a run imported or removed since they ran), so the shares no longer add up."""
    from pipeline.errors import RunError

    k, n = cfg.shard_index()
    mine = (split["runs_selected"], split["run_ids_sha256"])
    others = {}
    for part in shard_report_paths(cfg, out_dir):
        match = SHARD_REPORT_STEM.search(part.stem)
        if not match or int(match[2]) != n or int(match[1]) == k:
            continue
        try:
            theirs = read_shard_report(part)[0].get("split")
        except (OSError, RunError):
            continue  # unreadable here is not this shard's business: tomopick report names it
        if isinstance(theirs, dict) and (theirs.get("runs_selected"), theirs.get("run_ids_sha256")) != mine:
            others[f"{match[1]}/{n}"] = theirs.get("runs_selected")
    if others:
        listing = ", ".join(f"{label} split {count}" for label, count in sorted(others.items(), key=lambda item:
                                                                                    _shard_order(item[0])))
        log.warning("shard %s splits %d selected run(s), but the reports in %s say shard %s: the project changed "
                    "between them, so runs may fall to no shard (or to two); once it is settled, run every shard "
                    "again (runs done are skipped)", split["shard"], split["runs_selected"], out_dir, listing)


def merge_shard_reports(cfg: RunConfig, out_dir: Path, run_ids: list[str] | None = None,
                        done: set[str] | None = None, shards: int | None = None) -> tuple[Path, dict]:
    """The shards' ``throughput-shard*of*.json`` -> one report: each run's latest record, totals over all, each
    shard's own figures (``shards``), and what is missing (``missing``: shards K/N with no report, and each run
    of ``run_ids``, the job's runs, that is not in ``done``, with why).

    Only the reports of one split are merged: ``shards`` N, else the set whose newest report is the newest;
    those of other splits (an older job's, left in the folder) are listed under ``ignored``. Shards that split
    different run lists (the project changed between them) and shards that ran with settings that change the
    picks are named (``split_warning``, ``settings_warning`` in the returned summary).

    Shards may run at once (an array on several nodes) or one after another, so the merged wall time is the time
    during which any shard ran (from their start and end times; reports written before those were recorded:
    the longest shard's, as if at once). Busy fractions divide by the shards' worker seconds summed: stage times
    summed over the shards against the wall time of one would exceed 1 (see throughput_summary)."""
    parts, n, ignored = _one_split(cfg, out_dir, shards)
    latest: dict[str, RunRecord] = {}
    latest_from: dict[str, str] = {}  # run -> the shard ("K/N") whose record it is
    figures_of: dict[str, dict] = {}
    splits: dict[str, dict] = {}  # shard -> what it split (reports from before this was recorded have none)
    present: set[tuple[int, int]] = set()
    intervals: list[tuple[float, float]] | None = []
    longest = worker_seconds = 0.0
    for k, part in parts:
        doc, part_records, wall, span = read_shard_report(part)
        label = f"{k}/{n}"
        present.add((k, n))
        if isinstance(doc.get("split"), dict):
            splits[label] = doc["split"]
        figures = throughput_summary(part_records, wall)
        figures_of[label] = {"report": part.name, **figures}
        worker_seconds += figures["worker_seconds"]
        longest = max(longest, wall)
        intervals = intervals + [span] if intervals is not None and span is not None else None
        for rec in part_records:
            if rec.status != SKIPPED_DONE or rec.run_id not in latest:
                latest[rec.run_id], latest_from[rec.run_id] = rec, label
    records = sorted(latest.values(), key=lambda r: r.run_id)
    wall = covered_seconds(intervals) if intervals else longest
    summary = throughput_summary(records, wall, worker_seconds=worker_seconds)
    summary["wall_seconds_from"] = ("the times any shard ran" if intervals else
                                    "the longest shard (as if all ran at once: its report has no start time)")
    split_warning = split_differences(splits, run_ids)
    missing_shards, missing = missing_runs(run_ids, done, latest, latest_from, present,
                                           split_changed=split_warning is not None)
    settings = settings_differences({f"{k}/{n}": shard_manifest_path(out_dir, k, n) for k, _ in parts})
    if run_ids is not None:
        summary["runs_selected"] = len(run_ids)
        summary["runs_missing"] = len(missing)
    doc = {"config": cfg.source, "merged_from": [p.name for _, p in parts], "ignored": ignored, "summary": summary,
           "missing": {"shards": missing_shards, "runs": missing}, "splits": splits, "settings_differ": settings,
           "shards": figures_of, "runs": [asdict(r) for r in records]}
    path = atomic.write_json(report_path(cfg, out_dir), doc)
    return path, {**summary, "shards": len(parts), "shard_count": n, "missing_shards": missing_shards,
                  "missing_runs": missing, "ignored_reports": ignored, "split_warning": split_warning,
                  "settings_warning": describe_settings(settings)}


def _one_split(cfg: RunConfig, out_dir: Path, shards: int | None) -> tuple[list[tuple[int, Path]], int, list[str]]:
    """([(K, report)] of the split merged, its N, the names of the other shard reports, which are not merged)."""
    from pipeline.errors import RunError

    by_n: dict[int, list[tuple[int, Path]]] = {}
    ignored = []
    for part in find_shard_reports(cfg, out_dir):
        match = SHARD_REPORT_STEM.search(part.stem)
        if match and int(match[1]) < int(match[2]):
            by_n.setdefault(int(match[2]), []).append((int(match[1]), part))
        else:  # throughput-shard0of2-old.json and the like: not a shard's name
            ignored.append(part.name)
    base = Path(cfg.output.report)
    if shards is not None and shards not in by_n:
        have = ", ".join(str(n) for n in sorted(by_n)) or "none"
        raise RunError(f"no shard reports {base.stem}-shardKof{shards}{base.suffix} in {out_dir} (reports of N = "
                       f"{have} shards are there); run the {shards} shards first, or give --shards N of those")
    if not by_n:
        raise RunError(f"no shard reports {base.stem}-shardKofN{base.suffix} in {out_dir} (only {', '.join(ignored)}); "
                       "run the shards first (run_all.py CONFIG --shard K/N)")
    # the newest set: the split of the shard report written last
    n = shards if shards is not None else max(by_n, key=lambda n: max(p.stat().st_mtime for _, p in by_n[n]))
    ignored += [p.name for other, group in sorted(by_n.items()) if other != n for _, p in sorted(group)]
    return sorted(by_n[n]), n, ignored


def split_differences(splits: dict[str, dict], run_ids: list[str] | None) -> str | None:
    """Why shards' shares do not add up to the job's runs, when they split different run lists (the project
    changed between them, or since: a run imported, one removed), else None. ``splits``: shard -> the split
    it recorded; ``run_ids``: the runs selected now."""
    groups: dict[tuple, list[str]] = {}
    for label, split in sorted(splits.items(), key=lambda item: _shard_order(item[0])):
        groups.setdefault((split.get("runs_selected"), split.get("run_ids_sha256")), []).append(label)
    way_on = ("run the shards again (runs done are skipped), or the missing runs alone (run_ids: [...] in the run "
              "config; -runs/--run-ids with tomopick segment / localize)")
    if len(groups) > 1:
        if all(len(labels) == 1 for labels in groups.values()):  # (5 vs 6 runs)
            counts = " vs ".join(str(count) for count, _ in groups) + " runs"
        else:  # (5 runs in 0/3 and 1/3 vs 6 runs in 2/3)
            counts = " vs ".join(f"{count} runs in {_and(labels)}" for (count, _), labels in groups.items())
        same = ", with other names" if len({count for count, _ in groups}) == 1 else ""
        labels = [label for group in groups.values() for label in group]
        return (f"shards {_and(labels)} split different run lists ({counts}{same}): the project "
                f"changed between them, so runs may have fallen to no shard (or to two); {way_on}")
    if len(groups) == 1 and run_ids is not None:
        from pipeline.run.select import split_basis

        (count, digest), = groups
        now = split_basis(run_ids)
        if (count, digest) != (now["runs_selected"], now["run_ids_sha256"]):
            other = " with other names" if count == now["runs_selected"] else ""
            return (f"the shards split {count} runs, the project has {now['runs_selected']} selected runs now"
                    f"{other}: it changed since they ran, and runs added are in no shard's share; {way_on}")
    return None


def _shard_order(label: str) -> tuple[int, int]:
    k, n = label.split("/")
    return int(n), int(k)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def settings_differences(manifests: dict[str, Path]) -> dict[str, dict]:
    """{setting: {shard: value}} for the settings that change the outputs (select.output_settings, as each
    shard's manifest records them) and differ between the shards (``shard -> its run_manifest``; a shard without
    a readable one, or one from before they were recorded, is left out)."""
    from pipeline.run.select import recorded_before_overlap_check

    settings = {}
    for label, path in manifests.items():
        try:
            recorded = json.loads(path.read_text())["output_settings"]  # manifests from before 2026-12-03: none
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if isinstance(recorded, dict):
            settings[label] = recorded_before_overlap_check(recorded, "localize.")
    keys = sorted({key for s in settings.values() for key in s})
    return {key: {label: s.get(key) for label, s in settings.items()} for key in keys
            if len({json.dumps(s.get(key), sort_keys=True) for s in settings.values()}) > 1}


def describe_settings(differ: dict[str, dict]) -> str | None:
    """``segment.ntta (0/2: 1; 1/2: 2); localize.method (...)``: the differing settings and what each shard had."""
    if not differ:
        return None
    shards = sorted({label for values in differ.values() for label in values}, key=_shard_order)
    listing = "; ".join(f"{key} ({', '.join(f'{label}: {json.dumps(value)}' for label, value in values.items())})"
                        for key, values in differ.items())
    return (f"shards {_and(shards)} ran with settings that change the picks, so their scores are not of one "
            f"job: {listing} (from their run_manifest-shardKofN.json); run the shards again with one config and "
            "--overwrite, or give each config its own output.dir and pick session (localize.pick_session_id)")


def missing_runs(run_ids: list[str] | None, done: set[str] | None, latest: dict[str, RunRecord],
                 latest_from: dict[str, str], present: set[tuple[int, int]],
                 split_changed: bool = False) -> tuple[list[str], dict[str, str]]:
    """(shards "K/N" with no report, {run: why it is not done}) of a sharded job.

    ``run_ids``: the job's runs in selection order (None: only the shards are checked), which is how shards
    split them (run i goes to shard i mod N); ``done``: those done on disk (None: as the reports say);
    ``split_changed``: the shards split another run list than ``run_ids`` (then i mod N says nothing)."""
    splits = sorted({n for _, n in present})
    missing_shards = [f"{k}/{n}" for n in splits for k in range(n) if (k, n) not in present]
    if run_ids is None:
        return missing_shards, {}
    if done is None:
        done = {r for r, rec in latest.items() if rec.status in (DONE, SKIPPED_DONE)}
    why: dict[str, str] = {}
    for i, run_id in enumerate(run_ids):
        if run_id in done:
            continue
        rec, shard = latest.get(run_id), latest_from.get(run_id)
        absent = [f"{i % n}/{n}" for n in splits if (i % n, n) not in present]
        if rec is not None and rec.status == FAILED:
            # the whole first line: the advice comes at its end
            why[run_id] = f"failed in shard {shard}: {(rec.error or 'no error recorded').splitlines()[0]}"
        elif rec is not None and rec.status == CLAIMED:
            why[run_id] = f"shard {shard} left it to another driver, which has not finished it"
        elif rec is not None and rec.status in (DONE, SKIPPED_DONE):
            why[run_id] = f"shard {shard} reported it done, but its outputs are not all there now"
        elif rec is None and split_changed:
            why[run_id] = "in no shard's share: the shards split another run list"
        elif absent:
            why[run_id] = f"shard {' and '.join(absent)} has no report"
        elif rec is not None:
            why[run_id] = f"{rec.status} in the report of shard {shard}"
        else:
            why[run_id] = "in no shard's report"
    return missing_shards, why


def describe_missing(missing: dict[str, str], limit: int = 5) -> str:
    """``TS_1, TS_3 (shard 1/2 has no report); TS_4 (failed in shard 0/2: ...)``: runs grouped by why."""
    by_reason: dict[str, list[str]] = {}
    for run_id, reason in missing.items():
        by_reason.setdefault(reason, []).append(run_id)
    groups = []
    for reason, runs in by_reason.items():
        groups.append(f"{name_list(runs, limit)} ({reason})")
    return "; ".join(groups)


def package_versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    # CuPy and cuCIM are distributed per CUDA major version (cupy-cuda12x / cupy-cuda13x, cucim-cu12 / cucim-cu13),
    # numba's CUDA target as numba-cuda: whichever of them is installed is recorded
    for name in ("tomopick", "torch", "monai", "copick", "numpy", "scipy", "numba", "numba-cuda", "zarr",
                 "cupy-cuda12x", "cupy-cuda13x", "cupy", "cucim-cu12", "cucim-cu13", "scikit-image"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _segment_choices(records: list[RunRecord]) -> dict:
    """What segmentation chose at run time (precision and why, ...), as the runs report it."""
    seen: dict[str, set] = {}
    for r in records:
        for key in ("precision", "precision_reason", "mode", "runtime", "channels_last", "window_shape"):
            if key in r.segment_stats:
                seen.setdefault(key, set()).add(str(r.segment_stats[key]))
    return {k: sorted(v)[0] if len(v) == 1 else sorted(v) for k, v in seen.items()}


def write_manifest(cfg: RunConfig, result: JobResult, out_dir: Path) -> Path:
    from pipeline.run.select import output_settings

    doc = {
        "config_file": cfg.source,
        "resolved_config": config_to_dict(cfg),
        "output_settings": output_settings(cfg),
        "versions": package_versions(),
        "device": {"name": result.device.torch_device, "reason": result.device.reason},
        "segmentation": _segment_choices(result.records),
        "host": platform.node(),
        "stage_seconds_total": throughput_summary(result.records, result.wall_seconds)["stage_seconds_total"],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - result.wall_seconds)),
    }
    return atomic.write_json(manifest_path(cfg, out_dir), doc)


def segmentation_log_params(cfg: RunConfig, ensemble, device: DeviceChoice) -> dict:
    """octopi's segment log (``labels`` is what its ``localize`` reads), plus what tomopick ran."""
    from pipeline import __version__

    seg, s = parse_seg_info(cfg.segment.write_segmentation), cfg.segment
    return {
        "inputs": {"config": cfg.copick_config, "tomo_alg": cfg.tomo_alg, "voxel_size": cfg.voxel_size},
        "labels": dict(ensemble.labels),
        "model": {"configs": ensemble.config_paths, "weights": ensemble.weight_paths,
                  "architectures": [c.architecture for c in ensemble.configs], "dim_in": ensemble.dim_in,
                  "num_classes": ensemble.num_classes},
        "parameters": {"sw_bs": s.window_batch, "overlap": s.overlap, "ntta": s.ntta},
        "outputs": {"seg_name": seg.name, "seg_user_id": seg.user_id, "seg_session_id": seg.session_id},
        "tomopick": {"version": __version__, "mode": s.mode, "precision": s.precision,
                     "device": device.torch_device, "device_reason": device.reason},
    }


def localize_log_params(cfg: RunConfig, objects) -> dict:
    from pipeline import __version__
    from pipeline.run.select import input_probabilities

    loc = cfg.localize
    probabilities = input_probabilities(cfg)  # a localize-only peaks job reads these, no segmentation
    source = None if cfg.has("segment") or probabilities else parse_seg_info(loc.segmentation)
    if source is None and cfg.has("segment") and cfg.segment.write_segmentation:
        source = parse_seg_info(cfg.segment.write_segmentation)
    return {
        "input": {"config": cfg.copick_config, "voxel_size": float(cfg.voxel_size),
                  "seg_name": source.name if source else None, "seg_user_id": source.user_id if source else None,
                  "seg_session_id": source.session_id if source else None,
                  **({"probabilities": str(probabilities)} if probabilities else {})},
        "output": {"pick_session_id": loc.pick_session_id, "pick_user_id": loc.pick_user_id},
        "parameters": {"method": loc.method, "radius_min_scale": loc.radius_min_scale,
                       "radius_max_scale": loc.radius_max_scale, "filter_size": loc.filter_size,
                       **({"thresholds": loc.thresholds, "smoothing": loc.smoothing, "peak_window": loc.peak_window,
                           "probabilities": loc.probabilities} if loc.method == "peaks" else {})},
        "labels": {o.name: o.label for o in objects},
        "tomopick": {"version": __version__, "device": cfg.device,
                     "score": "the peak's smoothed class probability" if loc.method == "peaks" else
                     "voxels of the pick's region(s) / voxels of a sphere of the object's radius"},
    }
