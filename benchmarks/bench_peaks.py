"""peaks against watershed on one full-size tomogram's worth of input: time and peak memory, CPU (and GPU when
CuPy sees one).

One 184x630x630 synthetic label map at the CZII challenge's density (pipeline.synthetic) and class
probabilities made from it (blurred one-hot logits plus noise, softmax, float16: what segmentation hands
localization) are written once; each (method, backend) then runs in its own fresh subprocess, twice (the
first call includes numba's cached-kernel load / the CUDA context), and reports its wall time and peak resident
memory (VmHWM). watershed gets the argmax label map, peaks the probabilities, as in the driver.

    python benchmarks/bench_peaks.py [--n-procs 2] [--shape 184,630,630]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _peak_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _worker(args) -> None:
    from pipeline.localize import localize
    from pipeline.objects import ParticleObject
    from pipeline.synthetic import CZII_OBJECTS

    objects = [ParticleObject(o["name"], o["label"], o["radius"], o["weight"]) for o in CZII_OBJECTS]
    volume = np.load(args.input, mmap_mode=None)
    rss_loaded = _peak_rss_kb()
    if args.backend == "gpu":
        import torch

        volume = torch.from_numpy(volume).cuda()
    times = []
    extra = {"overlap_check": False} if args.no_overlap_check else {}
    for _ in range(4):  # the first call loads numba's cached kernels; the best of the others is "warm"
        t0 = time.perf_counter()
        picks = localize(volume, objects, 10.0, method=args.method, backend=args.backend, n_procs=args.n_procs,
                         **extra)
        if args.backend == "gpu":
            import torch

            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"seconds": times, "rss_loaded_kb": rss_loaded, "rss_peak_kb": _peak_rss_kb(),
                      "picks": {k: len(v) for k, v in picks.items()}}))


def make_inputs(shape, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    from scipy import ndimage as ndi

    from pipeline.synthetic import synth_run_arrays

    _, label_map, _ = synth_run_arrays(shape, seed=seed)
    classes = int(label_map.max()) + 1
    rng = np.random.default_rng(seed)
    probs = np.empty((classes, *shape), np.float16)
    logits = np.empty((classes, *shape), np.float32)
    for c in range(classes):  # one class at a time: the full float32 stack is what we can afford
        channel = rng.normal(0, 0.5, shape).astype(np.float32) + 3.0 * (label_map == c)
        logits[c] = ndi.gaussian_filter(channel, 1.5)
    peak = logits.max(axis=0)
    total = np.zeros(shape, np.float32)
    for c in range(classes):
        logits[c] = np.exp(logits[c] - peak)
        total += logits[c]
    for c in range(classes):
        probs[c] = logits[c] / total
    labels = np.argmax(probs, axis=0).astype(np.uint8)
    np.save(folder / "labels.npy", labels)
    np.save(folder / "probabilities.npy", probs)
    return folder / "labels.npy", folder / "probabilities.npy"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="184,630,630")
    p.add_argument("--n-procs", type=int, default=2)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="cpu", help=argparse.SUPPRESS)
    p.add_argument("--no-overlap-check", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        _worker(args)
        return 0
    shape = tuple(int(s) for s in args.shape.split(","))
    backends = ["cpu"]
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            backends.append("gpu")
    except Exception:  # no CuPy or no GPU: CPU only
        pass
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        labels, probs = make_inputs(shape, Path(tmp))
        print(f"inputs {shape}: {time.perf_counter() - t0:.1f} s; {platform.processor() or platform.machine()}")
        rows = []
        for backend in backends:
            for method, path, flags in (("watershed", labels, []), ("peaks", probs, []),
                                        ("peaks", probs, ["--no-overlap-check"])):
                out = subprocess.run([sys.executable, __file__, "--worker", "--input", str(path), "--method", method,
                                      "--backend", backend, "--n-procs", str(args.n_procs), *flags],
                                     capture_output=True, text=True, check=True)
                doc = json.loads(out.stdout.strip().splitlines()[-1])
                doc["warm"] = min(doc["seconds"][1:])
                label = method + (" (no overlap check)" if flags else "")
                rows.append((backend, label, doc))
                print(f"{backend:4} {label:28} first {doc['seconds'][0]:6.2f} s  warm {doc['warm']:6.2f} s  "
                      f"peak RSS {doc['rss_peak_kb'] / 1024:7.0f} MB (input loaded {doc['rss_loaded_kb'] / 1024:.0f})"
                      f"  picks {sum(doc['picks'].values())}")
        for backend in backends:
            w = next(d for b, m, d in rows if b == backend and m == "watershed")
            k = next(d for b, m, d in rows if b == backend and m == "peaks")
            print(f"{backend}: peaks / watershed warm time {k['warm'] / w['warm']:.2f} "
                  "(target <= 1.0 on the CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
