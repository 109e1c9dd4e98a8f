"""What a job writes about itself: per-run records, throughput.json, run_manifest.json and the parameter logs
octopi keeps in ``<overlay_root>/logs`` (segment-*.yaml, which octopi's ``localize`` needs, and localize-*.yaml).

Every file goes through ``pipeline.atomic``: written aside and renamed, with the umask's file mode.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline import atomic
from pipeline.config import RunConfig, config_to_dict
from pipeline.device import DeviceChoice
from pipeline.selectors import parse_seg_info

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

    @property
    def failed(self) -> list:
        return [r for r in self.records if r.status == FAILED]


def throughput_summary(records: list[RunRecord], wall_seconds: float) -> dict:
    done = [r for r in records if r.status == DONE]
    voxels = sum(int(np.prod(r.shape_zyx)) for r in done if r.shape_zyx)
    stage_totals: dict[str, float] = {}
    for r in done:
        for k, v in r.seconds.items():
            stage_totals[k] = stage_totals.get(k, 0.0) + v
    minutes = wall_seconds / 60 if wall_seconds > 0 else float("nan")
    slowest = max(stage_totals, key=stage_totals.get) if stage_totals else None
    return {
        "runs_done": len(done),
        "runs_failed": sum(r.status == FAILED for r in records),
        "runs_already_done": sum(r.status == SKIPPED_DONE for r in records),
        "runs_claimed_elsewhere": sum(r.status == CLAIMED for r in records),
        "wall_seconds": wall_seconds,
        "tomograms_per_minute": len(done) / minutes if done else 0.0,
        "voxels_per_second": voxels / wall_seconds if wall_seconds > 0 else 0.0,
        "stage_seconds_total": stage_totals,
        # share of the wall time the segmentation stage (the GPU, on a GPU) was busy
        "segment_busy_fraction": stage_totals.get("segment", 0.0) / wall_seconds if wall_seconds > 0 else 0.0,
        "slowest_stage": slowest,
        "wall_over_slowest_stage": wall_seconds / stage_totals[slowest] if slowest and stage_totals[slowest] else None,
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
    return f"-shard{shard[0]}of{shard[1]}" if shard else ""


def report_path(cfg: RunConfig, out_dir: Path) -> Path:
    path = Path(cfg.output.report)
    path = path.with_name(f"{path.stem}{shard_suffix(cfg)}{path.suffix}")
    return path if path.is_absolute() else out_dir / path


def manifest_path(cfg: RunConfig, out_dir: Path) -> Path:
    return out_dir / f"run_manifest{shard_suffix(cfg)}.json"


def write_report(cfg: RunConfig, result: JobResult, out_dir: Path) -> Path:
    doc = {
        "config": cfg.source,
        "device": {"name": result.device.torch_device, "reason": result.device.reason},
        "summary": throughput_summary(result.records, result.wall_seconds),
        "runs": [asdict(r) for r in result.records],
        "runs_without_input": result.skipped_missing,
    }
    if result.evaluation is not None:
        doc["evaluation"] = {"metric": result.evaluation.metric,
                             "final_fbeta_score": result.evaluation.final_fbeta_score}
    return atomic.write_json(report_path(cfg, out_dir), doc)


def merge_shard_reports(cfg: RunConfig, out_dir: Path) -> tuple[Path, dict]:
    """The shards' ``throughput-shard*of*.json`` -> one report: each run's latest record, totals over all.

    The wall time of the merged report is the longest shard's (they ran at once)."""
    import json

    from pipeline.errors import RunError

    base = Path(cfg.output.report)
    parts = sorted(out_dir.glob(f"{base.stem}-shard*of*{base.suffix}"))
    if not parts:
        raise RunError(f"no shard reports {base.stem}-shardKofN{base.suffix} in {out_dir}; run the shards first "
                       "(run_all.py CONFIG --shard K/N)")
    latest: dict[str, RunRecord] = {}
    wall = 0.0
    for part in parts:
        try:
            doc = json.loads(part.read_text())
            wall = max(wall, float(doc.get("summary", {}).get("wall_seconds", 0.0)))
            part_records = [RunRecord.from_dict(rec) for rec in doc.get("runs", [])]
        except (ValueError, TypeError, AttributeError) as exc:
            raise RunError(f"shard report {part}: not a tomopick throughput report ({type(exc).__name__}: {exc}); "
                           "run that shard again, or delete the file") from None
        for rec in part_records:
            if rec.status != SKIPPED_DONE or rec.run_id not in latest:
                latest[rec.run_id] = rec
    records = sorted(latest.values(), key=lambda r: r.run_id)
    summary = throughput_summary(records, wall)
    doc = {"config": cfg.source, "merged_from": [p.name for p in parts], "summary": summary,
           "runs": [asdict(r) for r in records]}
    path = atomic.write_json(report_path(cfg, out_dir), doc)
    return path, {**summary, "shards": len(parts)}


def package_versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("tomopick", "torch", "monai", "copick", "numpy", "scipy", "numba", "zarr", "cupy-cuda12x",
                 "cucim-cu12", "scikit-image"):
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
    doc = {
        "config_file": cfg.source,
        "resolved_config": config_to_dict(cfg),
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

    loc = cfg.localize
    source = None if cfg.has("segment") else parse_seg_info(loc.segmentation)
    if source is None and cfg.segment.write_segmentation:
        source = parse_seg_info(cfg.segment.write_segmentation)
    return {
        "input": {"config": cfg.copick_config, "voxel_size": float(cfg.voxel_size),
                  "seg_name": source.name if source else None, "seg_user_id": source.user_id if source else None,
                  "seg_session_id": source.session_id if source else None},
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
