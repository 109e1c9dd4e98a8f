"""Segment tomograms with octopi models: test-time augmentation, sliding windows, model ensembles.

For every run with the tomogram (others are skipped with a warning) writes the multilabel segmentation
NAME/USER_ID/SESSION_ID, and <overlay_root>/logs/segment-{user}_{session}_{name}.yaml with the labels, models and
settings (octopi's localize needs that file). Modes: fast (default; windows spread evenly with the least overlap,
Gaussian-blended, the transforms of a window in one forward pass: ~3x fewer windows than octopi) and compat
(octopi 1.7's MONAI windows at 50 % overlap, bit for bit on the CPU).
With several GPUs (--device auto or cuda): one worker process per GPU, runs dealt round-robin.

Examples:
  tomopick segment -c config.json -mc model.yaml -mw best_model.pth -alg wbp -vs 10 -seginfo predict,octopi,1
  tomopick segment -c config.json -mc model.yaml -mw a.pth,b.pth --tomo-uri wbp@10.0 --seg-uri predict:octopi/1
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pipeline.cli.common import add_config_arg, add_device_arg, add_run_ids_arg, add_tomo_args

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    add_config_arg(p)
    p.add_argument("-mc", "--model-config", required=True,
                   help="octopi model config YAML(s), comma-separated; one config may serve several weights")
    p.add_argument("-mw", "--model-weights", required=True,
                   help="model weights (.pth state_dict), comma-separated for an ensemble (logits averaged)")
    add_tomo_args(p)
    p.add_argument("-seginfo", "--seg-info", default=None,
                   help="output segmentation NAME,USER_ID,SESSION_ID (default predict,octopi,1)")
    p.add_argument("--seg-uri", default=None, help="octopi 1.7 spelling of --seg-info, e.g. predict:octopi/1")
    add_run_ids_arg(p)
    p.add_argument("--tomo-batch-size", type=int, default=1,
                   help="tomograms read ahead while the current one is segmented (default 1)")
    p.add_argument("-swbs", "--sliding-window-batch-size", dest="window_batch", type=int, default=4,
                   help="windows per forward pass (compat); fast mode runs max(1, this // ntta) windows x ntta "
                        "transforms per pass (default 4)")
    p.add_argument("--overlap", type=float, default=0.5,
                   help="overlap of MONAI's sliding windows, compat mode (default 0.5)")
    p.add_argument("--ntta", type=int, default=4, help="test-time transforms, 1..8, octopi's order (default 4)")
    add_device_arg(p)
    p.add_argument("--mode", choices=("fast", "compat"), default="fast",
                   help="fast (default) or compat (octopi 1.7's windows and blending)")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                   help="network precision: auto = fp16 autocast on CUDA (as octopi), fp32 on the CPU; fp32 on "
                        "CUDA keeps PyTorch's default of TF32 convolutions on Ampere and newer GPUs")
    p.add_argument("--save-probabilities", default=None, metavar="FOLDER",
                   help="also write per-class probabilities to FOLDER/<run>.h5 (float16, gzip; for napari/Python)")


def _settings(args) -> dict:
    return {
        "mode": args.mode, "ntta": args.ntta, "overlap": args.overlap, "window_batch": args.window_batch,
        "precision": args.precision,
    }


@dataclass(frozen=True)
class Job:
    """What every worker needs (picklable for spawned GPU workers)."""

    config_path: str
    model_configs: list
    model_weights: list
    tomo: object  # TomoSelector
    seg: object  # SegSelector
    settings: dict
    prefetch: int = 1
    probabilities_dir: str | None = None


def _segment_runs(job: Job, run_ids: list[str], device: str, progress: bool = True, worker: str = "") -> dict:
    """Segment ``run_ids`` on one device; returns {run: seconds}. Used in-process and by each GPU worker."""
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from tqdm import tqdm

    from pipeline import copick_io
    from pipeline.config import SegmentConfig
    from pipeline.models import load_ensemble
    from pipeline.segment import save_probabilities, segment_volume

    tomo, seg, probabilities_dir, prefetch = job.tomo, job.seg, job.probabilities_dir, job.prefetch
    root = copick_io.open_project(job.config_path)
    ensemble = load_ensemble(job.model_configs, job.model_weights, device=device)
    times = {}
    with ThreadPoolExecutor(max_workers=1) as reader:
        def read(rid):
            return copick_io.read_tomogram(root, rid, tomo.voxel_size, tomo.tomo_alg)

        pending = [reader.submit(read, rid) for rid in run_ids[:max(1, prefetch)]]
        bar = tqdm(run_ids, desc=f"segment {worker}".strip(), unit="run", disable=not progress)
        for i, rid in enumerate(bar):
            t0 = time.perf_counter()
            volume = pending.pop(0).result()
            nxt = i + max(1, prefetch)
            if nxt < len(run_ids):
                pending.append(reader.submit(read, run_ids[nxt]))
            t_read = time.perf_counter() - t0
            result = segment_volume(volume, ensemble, SegmentConfig(**job.settings), device=device,
                                    return_probabilities=probabilities_dir is not None)
            label_map = result.label_map.cpu().numpy()
            copick_io.write_segmentation(root, rid, label_map, tomo.voxel_size, seg)
            if probabilities_dir is not None:
                save_probabilities(Path(probabilities_dir) / f"{rid}.h5", result.probabilities, ensemble.labels)
            times[rid] = time.perf_counter() - t0
            present = {int(v): int(c) for v, c in zip(*_unique(label_map)) if v}
            log.info("%s: %s segmented in %.1fs (read %.1fs, network %.1fs, %s, %s, %d windows); "
                     "voxels per label %s", rid, "x".join(map(str, volume.shape)), times[rid], t_read,
                     result.stats["seconds"], result.stats["mode"], result.stats["device"],
                     result.stats["windows"], present)
    return times


def _unique(label_map):
    import numpy as np

    counts = np.bincount(label_map.reshape(-1), minlength=1)
    values = np.flatnonzero(counts)
    return values, counts[values]


def shard_round_robin(run_ids: list[str], n: int) -> list[list[str]]:
    """Deal runs to ``n`` workers like cards, as octopi's multi-GPU predictor does."""
    return [run_ids[i::n] for i in range(n)]


def _worker(rank: int, verbose: int, job: Job, run_ids: list[str]) -> dict:
    """One process per GPU (spawned): cuda:rank, its round-robin share of the runs."""
    import torch

    from pipeline.cli.common import setup_logging

    setup_logging(verbose)
    torch.cuda.set_device(rank)
    return _segment_runs(job, run_ids, f"cuda:{rank}", progress=False, worker=f"cuda:{rank}")


def run(args) -> int:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    import pipeline
    from pipeline import copick_io
    from pipeline.device import cuda_device_count, resolve_device
    from pipeline.errors import ConfigError, RunError
    from pipeline.models import check_labels, load_ensemble, split_paths
    from pipeline.selectors import parse_run_ids, resolve_seg, resolve_tomo
    from pipeline.tta import effective_ntta

    tomo = resolve_tomo(args.voxel_size, args.tomo_alg, args.tomo_uri)
    seg = resolve_seg(args.seg_info, args.seg_uri)
    if args.tomo_batch_size < 1:
        raise ConfigError(f"--tomo-batch-size {args.tomo_batch_size}: must be >= 1")
    if not 1 <= args.ntta <= 8:
        log.warning("--ntta %d: octopi uses 1..8; using %d", args.ntta, effective_ntta(args.ntta))
    choice = resolve_device(args.device)
    log.info("device %s (%s)", choice.torch_device, choice.reason)
    model_configs, model_weights = split_paths(args.model_config), split_paths(args.model_weights)

    root = copick_io.open_project(args.config)
    ensemble = load_ensemble(model_configs, model_weights, device="cpu")  # fail fast, before any worker starts
    check_labels(ensemble.labels, copick_io.particle_objects(root), where=f"model config {model_configs[0]!r}")
    run_ids, skipped = copick_io.runs_with_tomogram(root, tomo.voxel_size, tomo.tomo_alg, parse_run_ids(args.run_ids))
    for rid, why in skipped.items():
        log.warning("skipping run %s: %s", rid, why)
    if not run_ids:
        raise RunError(f"no run of {args.config} has tomogram {tomo.uri()}; check --tomo-alg / --voxel-size / --run-ids")

    settings = _settings(args)
    n_workers = cuda_device_count() if choice.is_cuda and args.device.strip().lower() in ("auto", "cuda") else 1
    n_workers = max(1, min(n_workers, len(run_ids)))
    params = {
        "inputs": {"config": args.config, "tomo_alg": tomo.tomo_alg, "voxel_size": tomo.voxel_size},
        "labels": dict(ensemble.labels),
        "model": {"configs": ensemble.config_paths, "weights": ensemble.weight_paths,
                  "architectures": [c.architecture for c in ensemble.configs], "dim_in": ensemble.dim_in,
                  "num_classes": ensemble.num_classes},
        "parameters": {"sw_bs": args.window_batch, "overlap": args.overlap, "ntta": effective_ntta(args.ntta)},
        "outputs": {"seg_name": seg.name, "seg_user_id": seg.user_id, "seg_session_id": seg.session_id},
        "tomopick": {"version": pipeline.__version__, "mode": args.mode, "precision": args.precision,
                     "device": choice.torch_device if n_workers == 1 else f"{n_workers} GPUs",
                     "device_reason": choice.reason, "tomo_batch_size": args.tomo_batch_size,
                     "runs": list(run_ids), "skipped": dict(skipped)},
    }
    log_path = copick_io.write_segmentation_log(root, seg, params)
    log.info("segmenting %d run(s) into %s with %d model(s), %s mode, ntta %d; parameters in %s",
             len(run_ids), seg.uri(), len(ensemble.models), args.mode, effective_ntta(args.ntta), log_path)
    del ensemble

    t0 = time.perf_counter()
    job = Job(args.config, model_configs, model_weights, tomo, seg, settings, args.tomo_batch_size,
              args.save_probabilities)
    if n_workers == 1:
        times = _segment_runs(job, run_ids, choice.torch_device)
    else:
        shards = shard_round_robin(run_ids, n_workers)
        verbose = getattr(args, "verbose", 0)
        times = {}
        with ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_worker, rank, verbose, job, shard) for rank, shard in enumerate(shards) if shard]
            for f in futures:
                times.update(f.result())
    log.info("segmented %d run(s) in %.1fs (%s)", len(times), time.perf_counter() - t0,
             ", ".join(f"{k} {v:.1f}s" for k, v in times.items()))
    return 0
