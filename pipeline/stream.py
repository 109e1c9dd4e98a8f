"""The streaming driver: reader -> segment -> localize -> writer, one run after another, bounded queues.

On a GPU each tomogram stays on the device from load to picks: the reader prefetches the next tomogram into
pinned host memory while the current one is segmented; segmentation returns the label map on the device and
localization runs there too; only picks (and the label map, if it is to be written) come back to the host,
and writing happens in the background.

Without a GPU, segmentation runs on the CPU with torch in this process while the previous run is localized in
a background thread (which spreads objects over ``localize.n_procs`` processes) and written by the writer.

On a node with several GPUs (``device: auto`` or ``cuda``) one worker process per GPU takes the runs
round-robin. A failing run is reported and, per ``output.on_error``, aborts the job or is skipped; either way
its partial output is removed. Runs whose picks exist already are skipped unless ``output.overwrite``.
"""

from __future__ import annotations

import json
import logging
import platform
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import RunConfig, config_to_dict
from pipeline.device import DeviceChoice, cuda_device_count, make_current, resolve_device
from pipeline.errors import TomopickError
from pipeline.objects import ParticleObject
from pipeline.selectors import parse_seg_info

log = logging.getLogger(__name__)

_STOP = object()


class RunFailed(TomopickError):
    """A run failed and ``output.on_error`` is ``raise``."""


@dataclass
class RunRecord:
    run_id: str
    status: str = "pending"  # done | failed | skipped-done
    shape_zyx: tuple | None = None
    seconds: dict = field(default_factory=dict)  # stage -> seconds
    picks: dict = field(default_factory=dict)  # object -> count
    error: str | None = None
    worker: str = ""


@dataclass
class PipelineResult:
    records: list
    wall_seconds: float
    device: DeviceChoice
    report_path: Path | None
    manifest_path: Path | None
    evaluation: object | None = None  # pipeline.evaluate.EvaluationResult
    evaluation_table: str | None = None
    skipped_missing: dict = field(default_factory=dict)  # run -> reason it had no tomogram

    @property
    def failed(self) -> list:
        return [r for r in self.records if r.status == "failed"]


# ----------------------------------------------------------------------------------------------------------------
# set-up


def prepare_project(cfg: RunConfig):
    """Open the project, making the synthetic one first when the config asks for it and it is absent."""
    from pipeline import copick_io

    if cfg.synthetic is not None and not Path(cfg.copick_config).is_file():
        from pipeline.synthetic import make_synthetic_project

        s = cfg.synthetic
        log.info("making synthetic project %s (%d runs of %s, seed %d)", s.out, s.runs, tuple(s.shape), s.seed)
        make_synthetic_project(s.out, runs=s.runs, shape=tuple(s.shape), seed=s.seed, snr=s.snr, density=s.density)
    return copick_io.open_project(cfg.copick_config)


def pick_objects_for(cfg: RunConfig, project_objects: list[ParticleObject], model_labels: dict[str, int]):
    """The particle objects to pick: those the model segments (its label ids win), optionally restricted."""
    from pipeline.errors import ConfigError

    by_name = {o.name: o for o in project_objects}
    wanted = cfg.localize.pick_objects
    if wanted:
        unknown = [n for n in wanted if n not in by_name or n not in model_labels]
        if unknown:
            raise ConfigError(
                f"{cfg.source}: 'localize.pick_objects' names {unknown}, which are not both particle objects of the "
                f"project ({', '.join(by_name)}) and labels of the model ({', '.join(model_labels)})"
            )
    names = wanted or [n for n in by_name if n in model_labels]
    return [ParticleObject(n, int(model_labels[n]), by_name[n].radius, by_name[n].weight) for n in names]


def select_runs(cfg: RunConfig, root) -> tuple[list[str], dict[str, str]]:
    from pipeline import copick_io

    runs, skipped = copick_io.runs_with_tomogram(root, cfg.voxel_size, cfg.tomo_alg, cfg.run_ids)
    for run_id, reason in skipped.items():
        log.warning("run %s skipped: %s", run_id, reason)
    shard = cfg.shard_index()
    if shard is not None:
        k, n = shard
        runs = runs[k::n]
        log.info("shard %d/%d: %d run(s)", k, n, len(runs))
    return runs, skipped


def run_is_done(cfg: RunConfig, root, run_id: str, objects) -> bool:
    from pipeline import copick_io

    loc = cfg.localize
    if not copick_io.run_done_marker(root, run_id, loc.pick_user_id, loc.pick_session_id).is_file():
        return False  # never finished (or written before markers existed): redo it
    if not all(copick_io.picks_exist(root, run_id, o.name, loc.pick_user_id, loc.pick_session_id) for o in objects):
        return False
    if cfg.segment.write_segmentation:
        seg = parse_seg_info(cfg.segment.write_segmentation)
        return copick_io.segmentation_exists(root, run_id, cfg.voxel_size, seg)
    return True


def output_dir(cfg: RunConfig, root) -> Path:
    from pipeline import copick_io

    return Path(cfg.output.dir) if cfg.output.dir else copick_io.overlay_root(root) / "tomopick"


# ----------------------------------------------------------------------------------------------------------------
# one device: the streaming loop


class _Reader(threading.Thread):
    """Reads tomograms ahead of the compute stage into a bounded queue (prefetch depth 1)."""

    def __init__(self, root, cfg: RunConfig, run_ids, device: DeviceChoice):
        super().__init__(name="tomopick-reader", daemon=True)
        self.root, self.cfg, self.run_ids, self.device = root, cfg, run_ids, device
        self.out: queue.Queue = queue.Queue(maxsize=1)
        self.stop_event = threading.Event()

    def run(self):
        from pipeline import copick_io

        for run_id in self.run_ids:
            if self.stop_event.is_set():
                break
            t0 = time.perf_counter()
            try:
                volume = copick_io.read_tomogram(self.root, run_id, self.cfg.voxel_size, self.cfg.tomo_alg)
                if self.device.is_cuda:
                    import torch

                    # pinned memory makes the host-to-device copy asynchronous and fast
                    volume = torch.from_numpy(volume).pin_memory()
                item = (run_id, volume, None, time.perf_counter() - t0)
            except Exception as exc:  # reported per run by the consumer
                item = (run_id, None, exc, time.perf_counter() - t0)
            while not self.stop_event.is_set():
                try:
                    self.out.put(item, timeout=0.5)
                    break
                except queue.Full:
                    continue
        self.out.put(_STOP)


class _RunOutputs:
    """Writes a run's segmentation and picks, and removes them again for a run that failed."""

    def __init__(self, root, cfg: RunConfig, objects):
        self.root, self.cfg, self.objects = root, cfg, objects
        self.seg = parse_seg_info(cfg.segment.write_segmentation) if cfg.segment.write_segmentation else None

    def write(self, run_id: str, picks: dict, label_map_host: np.ndarray | None) -> None:
        from pipeline import copick_io

        loc = self.cfg.localize
        # a failure here reaches process_runs' fail(), which removes whatever of this run was written; a kill
        # leaves no marker, so the run is redone next time
        copick_io.clear_run_done(self.root, run_id, loc.pick_user_id, loc.pick_session_id)
        if self.seg is not None and label_map_host is not None:
            copick_io.write_segmentation(self.root, run_id, label_map_host, self.cfg.voxel_size, self.seg)
        for obj in self.objects:
            p = picks[obj.name]
            copick_io.write_picks(self.root, run_id, obj.name, p.centers_zyx_vox, self.cfg.voxel_size,
                                  loc.pick_user_id, loc.pick_session_id, scores=p.scores)
        copick_io.mark_run_done(self.root, run_id, loc.pick_user_id, loc.pick_session_id, {
            "run": run_id, "picks": {name: int(len(p.centers_zyx_vox)) for name, p in picks.items()},
            "segmentation": self.seg.uri() if self.seg is not None else None,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })

    def remove(self, run_id: str) -> None:
        """Undo a run's outputs so a failed run never looks complete."""
        from pipeline import copick_io

        loc = self.cfg.localize
        try:
            copick_io.clear_run_done(self.root, run_id, loc.pick_user_id, loc.pick_session_id)
            if self.seg is not None:
                copick_io.remove_segmentation(self.root, run_id, self.cfg.voxel_size, self.seg)
            for obj in self.objects:
                copick_io.remove_picks(self.root, run_id, obj.name, loc.pick_user_id, loc.pick_session_id)
        except Exception as exc:
            log.error("run %s: could not remove partial output: %s", run_id, exc)


def _localize(label_map, objects, cfg: RunConfig, backend: str):
    from pipeline.localize import localize

    loc = cfg.localize
    return localize(
        label_map, objects, cfg.voxel_size, method=loc.method, filter_size=loc.filter_size,
        radius_min_scale=loc.radius_min_scale, radius_max_scale=loc.radius_max_scale, backend=backend,
        n_procs=loc.n_procs,
    )


def _save_probabilities(cfg: RunConfig, run_id: str, probabilities, labels) -> None:
    from pipeline.segment import save_probabilities

    folder = Path(cfg.segment.save_probabilities)
    folder.mkdir(parents=True, exist_ok=True)
    save_probabilities(folder / f"{run_id}.h5", probabilities, labels)


def process_runs(cfg: RunConfig, root, run_ids: list[str], objects, device: DeviceChoice, ensemble,
                 progress: bool = True, worker: str = "") -> list[RunRecord]:
    """The streaming loop on one device. Returns one record per run (done or failed)."""
    from pipeline.localize import choose_backend
    from pipeline.segment import segment_volume

    make_current(device)
    records: dict[str, RunRecord] = {r: RunRecord(r, worker=worker) for r in run_ids}
    outputs = _RunOutputs(root, cfg, objects)
    reader = _Reader(root, cfg, run_ids, device)
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tomopick-writer")
    # localize run i on the host in the background while run i+1 is segmented (GPU: only without CuPy)
    localizer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tomopick-localize")
    pending: list[tuple[str, Future]] = []
    failure: list[BaseException] = []
    s = cfg.segment

    def fail(run_id: str, exc: BaseException) -> None:
        rec = records[run_id]
        rec.status, rec.error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("run %s failed: %s", run_id, rec.error)
        outputs.remove(run_id)
        if cfg.output.on_error == "raise" and not failure:
            failure.append(exc)

    def localize_and_write(run_id: str, label_map, backend: str):
        rec = records[run_id]
        t0 = time.perf_counter()
        picks = _localize(label_map, objects, cfg, backend)
        rec.seconds["localize"] = time.perf_counter() - t0
        rec.picks = {name: int(len(p.centers_zyx_vox)) for name, p in picks.items()}
        host_map = None
        if outputs.seg is not None:
            host_map = label_map if isinstance(label_map, np.ndarray) else label_map.cpu().numpy()
        return picks, host_map

    def write(run_id: str, picks, host_map):
        rec = records[run_id]
        t0 = time.perf_counter()
        outputs.write(run_id, picks, host_map)
        rec.seconds["write"] = time.perf_counter() - t0
        rec.status = "done"
        log.info("run %s: %s picks in %.1f s (%s)", run_id, sum(rec.picks.values()),
                 sum(rec.seconds.values()), ", ".join(f"{k} {v:.2f}s" for k, v in rec.seconds.items()))

    def chain_write(run_id: str, fut: Future) -> Future:
        def task():
            picks, host_map = fut.result()
            write(run_id, picks, host_map)
        return writer.submit(task)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(run_ids), desc=f"runs{' ' + worker if worker else ''}", unit="run", disable=None)

    def settle(block: bool) -> None:
        """Collect finished background work; record failures."""
        still = []
        for run_id, fut in pending:
            if block or fut.done():
                try:
                    fut.result()
                except BaseException as exc:  # noqa: BLE001 - reported per run, re-raised per on_error
                    fail(run_id, exc)
                if bar is not None:
                    bar.update(1)
            else:
                still.append((run_id, fut))
        pending[:] = still

    reader.start()
    try:
        while True:
            item = reader.out.get()
            if item is _STOP:
                break
            run_id, volume, read_error, read_seconds = item
            rec = records[run_id]
            rec.seconds["read"] = read_seconds
            if read_error is not None:
                fail(run_id, read_error)
                if bar is not None:
                    bar.update(1)
            else:
                rec.shape_zyx = tuple(int(x) for x in volume.shape)
                try:
                    t0 = time.perf_counter()
                    result = segment_volume(volume, ensemble, s, device=device.torch_device,
                                            return_probabilities=bool(s.save_probabilities))
                    label_map = result.label_map
                    if device.is_cuda:
                        import torch

                        torch.cuda.synchronize(device.torch_device)  # timing only: localize needs it anyway
                    rec.seconds["segment"] = time.perf_counter() - t0
                    if s.save_probabilities:
                        _save_probabilities(cfg, run_id, result.probabilities, ensemble.labels)
                    del volume, result
                    if choose_backend(label_map)[0] == "gpu":
                        import torch

                        # hand torch's cached blocks (logits, stitch buffers) to CuPy, which has its own pool
                        torch.cuda.empty_cache()
                        done = Future()
                        done.set_result(localize_and_write(run_id, label_map, "gpu"))
                        pending.append((run_id, chain_write(run_id, done)))
                    else:  # one host copy, localized in the background while the next run is segmented
                        host_map = label_map.cpu().numpy() if hasattr(label_map, "cpu") else np.asarray(label_map)
                        fut = localizer.submit(localize_and_write, run_id, host_map, "cpu")
                        pending.append((run_id, chain_write(run_id, fut)))
                except Exception as exc:  # noqa: BLE001 - this run fails; the job goes on per on_error
                    fail(run_id, exc)
                    if bar is not None:
                        bar.update(1)
            settle(block=False)
            if failure:
                break
        settle(block=True)
    finally:
        reader.stop_event.set()
        localizer.shutdown(wait=True)
        writer.shutdown(wait=True)
        settle(block=True)
        if bar is not None:
            bar.close()
    if failure:
        raise RunFailed(
            f"a run failed and output.on_error is 'raise': {failure[0]}; its partial output was removed. "
            "Set output.on_error: skip to go on with the other runs"
        ) from failure[0]
    return [records[r] for r in run_ids if records[r].status != "pending"]


# ----------------------------------------------------------------------------------------------------------------
# several GPUs: one worker process per device


def _worker_main(config_dict: dict, source: str, device_spec: str, run_ids: list[str], worker: str) -> list[dict]:
    from pipeline.config import config_from_dict

    cfg = config_from_dict(config_dict, source=source, check_files=False)
    cfg.device, cfg.evaluate = device_spec, None  # the parent evaluates once all workers are done
    device = resolve_device(device_spec)
    root, objects, ensemble = _open_all(cfg, device)
    return [asdict(r) for r in process_runs(cfg, root, run_ids, objects, device, ensemble, progress=False,
                                            worker=worker)]


def _open_all(cfg: RunConfig, device: DeviceChoice):
    from pipeline import copick_io
    from pipeline.models import check_labels, load_ensemble

    root = copick_io.open_project(cfg.copick_config)
    ensemble = load_ensemble(cfg.model.configs, cfg.model.weights, device=device.torch_device)
    project_objects = copick_io.particle_objects(root)
    check_labels(ensemble.labels, project_objects, where=", ".join(cfg.model.configs))
    return root, pick_objects_for(cfg, project_objects, ensemble.labels), ensemble


def worker_devices(cfg: RunConfig, device: DeviceChoice) -> list[str]:
    """One device per worker: every visible GPU for ``auto``/``cuda``, else the one device asked for."""
    spec = (cfg.device or "auto").lower()
    if device.is_cuda and spec in ("auto", "cuda"):
        return [f"cuda:{i}" for i in range(cuda_device_count())]
    return [device.torch_device]


def process_runs_parallel(cfg: RunConfig, run_ids: list[str], devices: list[str]) -> list[RunRecord]:
    """Runs split round-robin over one spawned worker process per device."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    shares = [(i, d, run_ids[i::len(devices)]) for i, d in enumerate(devices)]
    config_dict = config_to_dict(cfg)
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    records: list[RunRecord] = []
    errors = []
    with ProcessPoolExecutor(max_workers=len(devices), mp_context=ctx) as pool:
        futures = [
            (d, pool.submit(_worker_main, config_dict, cfg.source, d, share, f"w{i}:{d}"))
            for i, d, share in shares if share
        ]
        for d, fut in futures:
            try:
                records += [RunRecord(**{**r, "shape_zyx": tuple(r["shape_zyx"]) if r["shape_zyx"] else None})
                            for r in fut.result()]
            except Exception as exc:  # noqa: BLE001 - collected, re-raised after the other workers finish
                errors.append((d, exc))
    if errors:
        d, exc = errors[0]
        raise RunFailed(f"worker on {d} stopped: {exc}") from exc
    order = {r: i for i, r in enumerate(run_ids)}
    return sorted(records, key=lambda r: order[r.run_id])


# ----------------------------------------------------------------------------------------------------------------
# the whole job


def run_pipeline(cfg: RunConfig, progress: bool = True, workers: list[str] | None = None) -> PipelineResult:
    """Segment, localize, write and (optionally) evaluate every selected run. ``workers`` overrides the
    per-device worker list (tests use it to exercise the multi-worker path on the CPU)."""
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    log.info("device %s (%s)", device.torch_device, device.reason)
    root = prepare_project(cfg)
    devices = workers or worker_devices(cfg, device)
    # the parent loads the models once even with workers: it validates configs and labels before any work
    root, objects, ensemble = _open_all(cfg, device if len(devices) == 1 else resolve_device("cpu"))
    run_ids, skipped_missing = select_runs(cfg, root)

    todo, records = [], []
    for run_id in run_ids:
        if not cfg.output.overwrite and run_is_done(cfg, root, run_id, objects):
            records.append(RunRecord(run_id, status="skipped-done"))
        else:
            todo.append(run_id)
    if records:
        log.info("%d run(s) already have picks %s/%s and are skipped (output.overwrite: true redoes them)",
                 len(records), cfg.localize.pick_user_id, cfg.localize.pick_session_id)

    if cfg.segment.write_segmentation:
        _write_segmentation_log(cfg, root, ensemble)

    out_dir = output_dir(cfg, root)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        if len(devices) > 1 and len(todo) > 1:
            del ensemble
            records += process_runs_parallel(cfg, todo, devices)
        elif todo:
            records += process_runs(cfg, root, todo, objects, device, ensemble, progress=progress)
    finally:
        wall = time.perf_counter() - t_start
        result = PipelineResult(records, wall, device, None, None, skipped_missing=skipped_missing)
        result.report_path = write_report(cfg, result, out_dir)
        result.manifest_path = write_manifest(cfg, result, out_dir)

    for rec in result.failed:
        log.warning("run %s was skipped after an error: %s", rec.run_id, rec.error)
    if cfg.evaluate is not None:
        evaluated = [r.run_id for r in records if r.status in ("done", "skipped-done")]
        if evaluated:
            result.evaluation, result.evaluation_table = _evaluate(cfg, root, objects, evaluated, out_dir)
        else:
            log.warning("no run has picks to evaluate")
    result.wall_seconds = time.perf_counter() - t_start
    result.report_path = write_report(cfg, result, out_dir)
    log.info("finished %d run(s) in %.1f s (%d failed, %d already done)", len(todo), result.wall_seconds,
             len(result.failed), sum(r.status == "skipped-done" for r in records))
    return result


def _write_segmentation_log(cfg: RunConfig, root, ensemble) -> None:
    from pipeline import copick_io

    seg = parse_seg_info(cfg.segment.write_segmentation)
    s = cfg.segment
    params = {
        "labels": dict(ensemble.labels),
        "model": {"configs": list(cfg.model.configs), "weights": list(cfg.model.weights),
                  "num_classes": ensemble.num_classes, "dim_in": ensemble.dim_in},
        "inference": {"tomo_alg": cfg.tomo_alg, "voxel_size": cfg.voxel_size, "ntta": s.ntta, "overlap": s.overlap,
                      "sliding_window_batch_size": s.window_batch, "mode": s.mode, "precision": s.precision,
                      "seg_info": seg.info(), "tool": "tomopick"},
    }
    copick_io.write_segmentation_log(root, seg, params)


def _evaluate(cfg: RunConfig, root, objects, run_ids: list[str], out_dir: Path):
    from pipeline.evaluate import evaluate_project, format_table, write_reports

    ev, loc = cfg.evaluate, cfg.localize
    result = evaluate_project(
        root, objects, run_ids, gt_user_id=ev.ground_truth_user_id, gt_session_id=ev.ground_truth_session_id,
        pred_user_id=loc.pick_user_id, pred_session_id=loc.pick_session_id, voxel_size=cfg.voxel_size,
        metric=ev.metric, beta=ev.beta, distance_threshold_scale=ev.distance_threshold_scale,
        config_path=cfg.copick_config,
    )
    save_path = Path(ev.save_path)
    save_path = save_path if save_path.is_absolute() else out_dir / save_path
    write_reports(result, save_path)
    return result, format_table(result)


# ----------------------------------------------------------------------------------------------------------------
# reports


def throughput_summary(records: list[RunRecord], wall_seconds: float) -> dict:
    done = [r for r in records if r.status == "done"]
    voxels = sum(int(np.prod(r.shape_zyx)) for r in done if r.shape_zyx)
    stage_totals: dict[str, float] = {}
    for r in done:
        for k, v in r.seconds.items():
            stage_totals[k] = stage_totals.get(k, 0.0) + v
    minutes = wall_seconds / 60 if wall_seconds > 0 else float("nan")
    slowest = max(stage_totals, key=stage_totals.get) if stage_totals else None
    return {
        "runs_done": len(done),
        "runs_failed": sum(r.status == "failed" for r in records),
        "runs_already_done": sum(r.status == "skipped-done" for r in records),
        "wall_seconds": wall_seconds,
        "tomograms_per_minute": len(done) / minutes if done else 0.0,
        "voxels_per_second": voxels / wall_seconds if wall_seconds > 0 else 0.0,
        "stage_seconds_total": stage_totals,
        # share of the wall time the segmentation stage (the GPU, on a GPU) was busy
        "segment_busy_fraction": stage_totals.get("segment", 0.0) / wall_seconds if wall_seconds > 0 else 0.0,
        "slowest_stage": slowest,
        "wall_over_slowest_stage": wall_seconds / stage_totals[slowest] if slowest and stage_totals[slowest] else None,
    }


def write_report(cfg: RunConfig, result: PipelineResult, out_dir: Path) -> Path:
    path = Path(cfg.output.report)
    path = path if path.is_absolute() else out_dir / path
    doc = {
        "config": cfg.source,
        "device": {"name": result.device.torch_device, "reason": result.device.reason},
        "summary": throughput_summary(result.records, result.wall_seconds),
        "runs": [asdict(r) for r in result.records],
        "runs_without_tomogram": result.skipped_missing,
    }
    if result.evaluation is not None:
        doc["evaluation"] = {"metric": result.evaluation.metric,
                             "final_fbeta_score": result.evaluation.final_fbeta_score}
    _write_json(path, doc)
    return path


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


def write_manifest(cfg: RunConfig, result: PipelineResult, out_dir: Path) -> Path:
    doc = {
        "config_file": cfg.source,
        "resolved_config": config_to_dict(cfg),
        "versions": package_versions(),
        "device": {"name": result.device.torch_device, "reason": result.device.reason},
        "host": platform.node(),
        "stage_seconds_total": throughput_summary(result.records, result.wall_seconds)["stage_seconds_total"],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - result.wall_seconds)),
    }
    path = out_dir / "run_manifest.json"
    _write_json(path, doc)
    return path


def _write_json(path: Path, doc: dict) -> None:
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2, default=str)
    os.replace(tmp, path)
