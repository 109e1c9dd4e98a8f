"""The quality gate of segmentation: picks and seconds of each setting against compat, in one process.

For each setting: segment every run (timed) -> localize (cpu backend, watershed, the project's objects) ->
score against the ground truth in memory with octopi's rule and the CZII rule (beta 4). Prints per-object and
final F-beta, segment seconds per run, network windows per run, and the speed ratio to compat measured in the
same invocation (compat is added first when not given). A setting is ``default`` (``SegmentConfig()`` as
shipped) or ``key=value`` pairs laid over it, comma-separated (``mode=compat``, ``margin=16,precision=fp32``).

    python benchmarks/bench_quality.py VAL/config.json --model-config ../shared/validation/model/model_config.yaml \\
        --model-weights ../shared/validation/model/model_weights.pth --settings default --settings margin=0
    python benchmarks/bench_quality.py --peak-rss 184,630,630 --settings default     # VmHWM of a fresh process

``--peak-rss Z,Y,X``: each setting segments one synthetic tomogram of that shape in a fresh process, which
reports its peak resident memory (VmHWM) and the baseline before segmenting (imports, the tomogram, the model).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.config import SegmentConfig  # noqa: E402

RULES = ("octopi", "czii")


def parse_setting(text: str, ntta: int | None = None) -> SegmentConfig:
    """``default`` or ``key=value,...`` over ``SegmentConfig()``; values typed as the field's default."""
    settings = SegmentConfig()
    if text.strip() not in ("", "default"):
        fields = {f.name: f for f in dataclasses.fields(SegmentConfig)}
        for part in text.split(","):
            key, _, value = part.strip().partition("=")
            if key not in fields or not _:
                raise SystemExit(f"--settings {text!r}: {part!r} is not KEY=VALUE with KEY one of {', '.join(fields)}")
            default = getattr(SegmentConfig(), key)
            if value.lower() in ("none", "null"):
                typed = None
            elif isinstance(default, bool):
                typed = value.lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                typed = int(value)
            elif isinstance(default, float):
                typed = float(value)
            else:
                typed = value
            setattr(settings, key, typed)
    if ntta is not None:
        settings.ntta = ntta
    return settings


def cpu_description() -> str:
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    from pipeline.runtimes import cpu_bf16_hardware

    return (f"{model}, {torch.get_num_threads()} threads, bf16 hardware: {cpu_bf16_hardware() or 'none'}, "
            f"torch {torch.__version__}")


def load_project(config_path, voxel_size: float, tomo_alg: str, run_ids, gt_user: str, gt_session: str):
    """(objects, {run: tomogram}, {run: {object: gt_zyx_vox}}), read once for every setting."""
    from pipeline import copick_io

    root = copick_io.open_project(str(config_path))
    objects = copick_io.particle_objects(root)
    runs, skipped = copick_io.runs_with_tomogram(root, voxel_size, tomo_alg, run_ids)
    if not runs:
        raise SystemExit(f"{config_path}: no run has tomogram {tomo_alg}@{voxel_size} ({skipped})")
    tomograms = {r: copick_io.read_tomogram(root, r, voxel_size, tomo_alg) for r in runs}
    truth = {r: {o.name: copick_io.read_picks(root, r, o.name, gt_user, gt_session, voxel_size) for o in objects}
             for r in runs}
    return objects, tomograms, truth


def evaluate_setting(settings: SegmentConfig, ensemble, objects, tomograms, truth, voxel_size: float,
                     device: str = "cpu", localize_threads: int = 2) -> dict:
    """Segment -> localize -> score every run with one setting; returns seconds, windows and both rules' scores."""
    from pipeline.evaluate import score_picks
    from pipeline.localize import localize
    from pipeline.segment import segment_volume

    seconds, cpu_seconds, windows, picks, stats = {}, {}, {}, {}, None
    for run_id, tomogram in tomograms.items():
        t0, c0 = time.perf_counter(), time.process_time()
        result = segment_volume(tomogram, ensemble, settings, device=device)
        label_map = result.label_map.cpu().numpy()
        seconds[run_id] = time.perf_counter() - t0
        cpu_seconds[run_id] = time.process_time() - c0  # all threads: less swayed by other jobs than wall time
        windows[run_id] = result.stats["windows"]
        stats = result.stats
        found = localize(label_map, objects, voxel_size, method="watershed", backend="cpu",
                         n_procs=localize_threads)
        picks[run_id] = {o.name: (found[o.name].centers_zyx_vox, truth[run_id][o.name]) for o in objects}
        del result, label_map
    scores = {}
    for rule in RULES:
        ev = score_picks(picks, objects, voxel_size, metric=rule, beta=4)
        scores[rule] = {"final": ev.final_fbeta_score,
                        "objects": {name: fb for name, (_, _, fb) in ev.object_scores().items()}}
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "windows": windows, "scores": scores,
            "precision": stats["precision"], "precision_reason": stats["precision_reason"],
            "runtime": stats["runtime"], "window_shape": stats.get("window_shape")}


def _short(name: str) -> str:
    return "".join(w[0] for w in name.split("-")) if len(name) > 10 else name


def print_table(rows: list[tuple[str, dict]], objects) -> None:
    base = next(r for n, r in rows if n == "mode=compat")
    t_base = sum(base["seconds"].values())
    c_base = sum(base["cpu_seconds"].values())
    names = [o.name for o in objects]
    header = (f"{'setting':44s} {'prec':>5s} {'s/run':>6s} {'x compat':>8s} {'cpu x':>6s} {'win/run':>7s} "
              f"{'F4 czii':>8s} {'F4 octopi':>9s}  per-object F4 (czii)  " + " ".join(f"{_short(n):>6s}" for n in names))
    print(header)
    for name, r in rows:
        t = sum(r["seconds"].values())
        n = len(r["seconds"])
        c = sum(r["cpu_seconds"].values())
        print(f"{name[:44]:44s} {r['precision']:>5s} {t / n:6.2f} {t_base / t:7.2f}x {c_base / c:5.2f}x "
              f"{sum(r['windows'].values()) / n:7.0f} {r['scores']['czii']['final']:8.4f} "
              f"{r['scores']['octopi']['final']:9.4f}  {'':21s} "
              + " ".join(f"{r['scores']['czii']['objects'][o]:6.3f}" for o in names))
    print("per-object F4 (octopi rule):")
    for name, r in rows:
        print(f"  {name[:42]:42s} " + " ".join(f"{_short(o)} {r['scores']['octopi']['objects'][o]:.3f}" for o in names))


def peak_rss_child(args) -> int:
    """In a fresh process: baseline and peak VmHWM around one segmentation of a synthetic tomogram."""
    import numpy as np

    from pipeline.heap import retain_freed_memory
    from pipeline.models import load_ensemble
    from pipeline.segment import segment_volume

    retain_freed_memory()  # as the driver does (TOMOPICK_HEAP=system measures glibc's defaults)

    def vm(key):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
        return float("nan")

    shape = tuple(int(s) for s in args.peak_rss.split(","))
    tomogram = (np.random.default_rng(0).standard_normal(shape) * 0.003 - 0.01).astype(np.float32)
    ensemble = load_ensemble(args.model_config, args.model_weights, device="cpu")
    settings = parse_setting(args.settings[0], args.ntta)
    baseline = vm("VmRSS")
    t0 = time.perf_counter()
    result = segment_volume(tomogram, ensemble, settings, device="cpu")
    seconds = time.perf_counter() - t0
    print(json.dumps({"baseline_mb": baseline, "peak_mb": vm("VmHWM"), "seconds": seconds,
                      "windows": result.stats["windows"], "precision": result.stats["precision"]}))
    return 0


def peak_rss(args) -> int:
    print(f"{cpu_description()}; tomogram {args.peak_rss} (synthetic noise), ntta {args.ntta}, model "
          f"{Path(args.model_config).name}; one fresh process per setting")
    for text in args.settings:
        cmd = [sys.executable, __file__, "--peak-rss", args.peak_rss, "--rss-child", "--settings", text,
               "--ntta", str(args.ntta), "--model-config", args.model_config, "--model-weights", args.model_weights]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{text}: failed\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{text:40s} peak RSS {r['peak_mb'] / 1024:6.2f} GiB (baseline {r['baseline_mb'] / 1024:.2f} GiB: "
              f"imports, tomogram, model), {r['seconds']:.1f} s, {r['windows']} windows, {r['precision']}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("project_config", nargs="?", help="copick config.json of a project with ground truth")
    p.add_argument("--model-config", default=str(REPO / "configs/models/demo_unet.yaml"))
    p.add_argument("--model-weights", default=str(REPO / "configs/models/demo_unet.pth"))
    p.add_argument("--settings", action="append", default=None,
                   help="a setting: 'default' or KEY=VALUE,... over SegmentConfig; repeat for several")
    p.add_argument("--ntta", type=int, default=None, help="laid over every setting (default: the config's)")
    p.add_argument("--run-ids", default=None, help="comma-separated; default all runs with the tomogram")
    p.add_argument("--voxel-size", type=float, default=10.0)
    p.add_argument("--tomo-alg", default="wbp")
    p.add_argument("--gt-user", default="data-portal")
    p.add_argument("--gt-session", default="0")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=1, help="interleaved rounds; each run's fastest is reported")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--peak-rss", default=None, metavar="Z,Y,X", help="measure peak memory instead (see above)")
    p.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.settings = args.settings or ["default"]
    logging.basicConfig(level=logging.WARNING)
    if args.peak_rss:
        args.ntta = args.ntta or SegmentConfig().ntta
        return peak_rss_child(args) if args.rss_child else peak_rss(args)
    if not args.project_config:
        p.error("give the project's copick config (or --peak-rss)")

    from pipeline.heap import retain_freed_memory
    from pipeline.models import load_ensemble
    from pipeline.segment import segment_volume

    retain_freed_memory()  # as the driver does (TOMOPICK_HEAP=system measures glibc's defaults)
    names = ["mode=compat"] + [s for s in args.settings if s != "mode=compat"]
    run_ids = args.run_ids.split(",") if args.run_ids else None
    objects, tomograms, truth = load_project(args.project_config, args.voxel_size, args.tomo_alg, run_ids,
                                             args.gt_user, args.gt_session)
    ensemble = load_ensemble(args.model_config, args.model_weights, device=args.device)
    shapes = sorted({tuple(t.shape) for t in tomograms.values()})
    print(f"{time.strftime('%Y-%m-%d %H:%M')}; {cpu_description()}")
    print(f"project {args.project_config}: {len(tomograms)} runs {shapes}; model {Path(args.model_config).name}; "
          f"ntta {args.ntta or SegmentConfig().ntta}; watershed (cpu); beta 4; seconds = segment_volume per run")
    rows = {}
    load_before = os.getloadavg()
    for round_ in range(args.repeat):  # rounds interleave the settings: contention from other jobs hits them alike
        for name in names:
            settings = parse_setting(name, args.ntta)
            warm = None
            if round_ == 0:
                # warm-up, not timed: the first call converts the network (layout, runtime; compiles per window
                # shape) and sets up oneDNN's kernels; compat runs the network as loaded, a crop warms it
                first = next(iter(tomograms.values()))
                t0 = time.perf_counter()
                segment_volume(first[:64, :64, :64] if settings.mode == "compat" else first, ensemble, settings,
                               device=args.device)
                warm = time.perf_counter() - t0
            r = evaluate_setting(settings, ensemble, objects, tomograms, truth, args.voxel_size, args.device)
            if name in rows:  # the fastest round of each run; the picks must not change between rounds
                old = rows[name]
                if old["scores"] != r["scores"]:
                    raise SystemExit(f"{name}: scores changed between rounds ({old['scores']} vs {r['scores']})")
                for key in ("seconds", "cpu_seconds"):
                    old[key] = {k: min(v, r[key][k]) for k, v in old[key].items()}
            else:
                r["warm_up_seconds"] = warm
                rows[name] = r
            print(f"  round {round_ + 1} {name}: {sum(r['seconds'].values()):.1f} s"
                  + (f" (warm-up {warm:.1f} s)" if warm is not None else "")
                  + f", czii {r['scores']['czii']['final']:.4f}", flush=True)
    rows = list(rows.items())
    print(f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f} (1 min); seconds: the fastest "
          f"of {args.repeat} round(s); 'cpu x': compat's CPU seconds (process time, all threads) over the setting's")
    print_table(rows, objects)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_description(), "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
