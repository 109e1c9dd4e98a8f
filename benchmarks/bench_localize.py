"""Localization speed: reference (SciPy / scikit-image, octopi's algorithm) vs cpu vs gpu on one label map.

One 184x630x630 synthetic label map at the CZII challenge's density (six classes, pipeline.synthetic) is made
once; each backend then runs in its own fresh subprocess (so its peak resident memory is its own), twice
(the first call includes loading numba's cached kernels / CUDA context), and the picks of every backend are
compared with the reference's (count per object, largest distance to the matched reference pick).

    python benchmarks/bench_localize.py                  # reference once, cpu and gpu (if CuPy) twice
    python benchmarks/bench_localize.py --skip-reference --n-procs 2 --method com
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _peak_rss_kb() -> int:
    """This process's resident-memory high-water mark (VmHWM). Unlike ``ru_maxrss`` it starts afresh at exec,
    so it does not inherit the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _worker(args) -> None:
    """Child process: load the label map, run one backend ``--repeat`` times, print JSON on the last line."""
    from pipeline.localize import localize
    from pipeline.objects import ParticleObject
    from pipeline.synthetic import CZII_OBJECTS

    objects = [ParticleObject(o["name"], o["label"], o["radius"], o["weight"]) for o in CZII_OBJECTS]
    label_map = np.load(args.label_map)
    rss_loaded = _peak_rss_kb()
    if args.backend == "none":
        print(json.dumps({"rss_loaded_kb": rss_loaded, "rss_peak_kb": rss_loaded}))
        return
    if args.backend == "gpu":
        import cupy
        import torch

        label_map = torch.from_numpy(label_map).cuda()  # as the driver hands it over: a CUDA tensor
        cupy.cuda.runtime.deviceSynchronize()
    seconds = []
    picks = None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        picks = localize(label_map, objects, 10.0, method=args.method, backend=args.backend, n_procs=args.n_procs)
        seconds.append(time.perf_counter() - t0)
    out = {
        "seconds": seconds,
        "rss_loaded_kb": rss_loaded,
        "rss_peak_kb": _peak_rss_kb(),
        "picks": {k: v.centers_zyx_vox.tolist() for k, v in picks.items()},
    }
    print(json.dumps(out))


def _run_child(backend: str, label_map_path: str, args, repeat: int) -> dict:
    cmd = [
        sys.executable, __file__, "--_worker", "--backend", backend, "--label-map", label_map_path,
        "--repeat", str(repeat), "--method", args.method, "--n-procs", str(args.n_procs),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if result.returncode != 0:
        raise RuntimeError(f"{backend} worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _agreement(reference: dict, other: dict) -> str:
    from scipy.spatial import cKDTree

    worst = 0.0
    counts = []
    for name, ref_pts in reference.items():
        a, b = np.asarray(ref_pts).reshape(-1, 3), np.asarray(other[name]).reshape(-1, 3)
        counts.append(f"{name} {len(a)}/{len(b)}")
        if len(a) != len(b):
            return "count differs: " + ", ".join(counts)
        if len(a):
            worst = max(worst, float(cKDTree(b).query(a)[0].max()))
    return f"same counts ({sum(len(v) for v in reference.values())} picks), max distance {worst:.2e} voxel"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="cpu", help=argparse.SUPPRESS)
    p.add_argument("--label-map", default=None, help=argparse.SUPPRESS)
    p.add_argument("--repeat", type=int, default=2, help="calls per backend (cpu/gpu); the reference runs once")
    p.add_argument("--method", choices=("watershed", "com"), default="watershed")
    p.add_argument("--n-procs", type=int, default=2, help="cpu worker threads (default 2)")
    p.add_argument("--shape", default="184,630,630", help="label map shape z,y,x (default the challenge's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label-radius-scale", type=float, default=0.6,
                   help="label spheres of this x the particle radius (0.6: the synthetic GT targets)")
    p.add_argument("--speckle", type=float, default=0.0,
                   help="fraction of voxels set to a random class, like a noisy prediction (default 0)")
    p.add_argument("--skip-reference", action="store_true")
    args = p.parse_args()
    if args._worker:
        _worker(args)
        return 0

    from pipeline.device import cupy_available
    from pipeline.synthetic import synth_run_arrays

    shape = tuple(int(s) for s in args.shape.split(","))
    _, label_map, centers = synth_run_arrays(shape, seed=args.seed, label_radius_scale=args.label_radius_scale)
    if args.speckle > 0:
        rng = np.random.default_rng(args.seed + 1)
        hit = rng.random(shape, dtype=np.float32) < args.speckle
        label_map[hit] = rng.integers(1, 7, int(hit.sum()), dtype=np.uint8)
    print(f"label map {shape}, {sum(len(c) for c in centers.values())} particles in 6 classes, "
          f"{(label_map > 0).mean() * 100:.2f}% foreground (label spheres {args.label_radius_scale} r, "
          f"speckle {args.speckle}); method {args.method}")
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "label_map.npy")
        np.save(path, label_map)
        baseline = _run_child("none", path, args, 1)
        results = {}
        if not args.skip_reference:
            results["reference"] = _run_child("reference", path, args, 1)
        results["cpu"] = _run_child("cpu", path, args, args.repeat)
        if cupy_available():
            results["gpu"] = _run_child("gpu", path, args, args.repeat)
    base_mb = baseline["rss_peak_kb"] / 1024
    print(f"baseline process (imports + label map): {base_mb:.0f} MB peak RSS")
    ref_s = min(results["reference"]["seconds"]) if "reference" in results else None
    for name, r in results.items():
        best = min(r["seconds"])
        ratio = f", {ref_s / best:.1f}x the reference" if ref_s and name != "reference" else ""
        agree = "" if name == "reference" or "reference" not in results else "; " + _agreement(
            results["reference"]["picks"], r["picks"])
        print(f"{name:9s}: {' / '.join(f'{s:.2f}' for s in r['seconds'])} s{ratio}; peak RSS "
              f"{r['rss_peak_kb'] / 1024:.0f} MB ({(r['rss_peak_kb'] / 1024) - base_mb:+.0f} MB over baseline){agree}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
