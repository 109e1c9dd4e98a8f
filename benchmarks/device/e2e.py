"""End to end on the validation project: ``run_all.py`` with the default segmentation and with ``mode: compat``,
alternating, one fresh process and overlay each; prints each job's wall time and final F4 (CZII rule), then the
ratio of the means (issue 11's end-to-end figure). Used by check.sh on a GPU; runs on the CPU as well.

    python benchmarks/device/e2e.py --device cuda --model-config M.yaml --model-weights M.pth \\
        --make-config ../shared/validation/make_config.py --rounds 2
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def one_job(mode: str, args) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, args.make_config, str(tmp / "overlay"), str(tmp / "config.json")], check=True,
                       capture_output=True)
        segment = "  mode: compat\n" if mode == "compat" else ""
        (tmp / "run.yaml").write_text(
            f"copick_config: {tmp / 'config.json'}\nvoxel_size: 10\ntomo_alg: wbp\ndevice: {args.device}\n"
            f"model:\n  configs: [{Path(args.model_config).resolve()}]\n"
            f"  weights: [{Path(args.model_weights).resolve()}]\n"
            f"segment:\n  ntta: {args.ntta}\n{segment}"
            "localize:\n  method: watershed\n"
            "evaluate:\n  ground_truth_user_id: data-portal\n  ground_truth_session_id: '0'\n  metric: czii\n"
            f"output:\n  dir: {tmp / 'out'}\n")
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, str(REPO / "run_all.py"), str(tmp / "run.yaml")], capture_output=True,
                              text=True, cwd=REPO)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            sys.exit(f"{mode} job failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
        final = re.findall(r"final weighted F\S+ score: ([0-9.]+)", done.stdout + done.stderr)
        return wall, final[-1] if final else "?"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model-config", required=True)
    p.add_argument("--model-weights", required=True)
    p.add_argument("--make-config", required=True, help="the validation project's make_config.py")
    p.add_argument("--ntta", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2, help="default/compat pairs, then one more default")
    args = p.parse_args()
    walls: dict[str, list[float]] = {"default": [], "compat": []}
    for mode in ["default", "compat"] * args.rounds + ["default"]:
        wall, final = one_job(mode, args)
        walls[mode].append(wall)
        print(f"{mode:8s} wall {wall:7.2f} s  final F4 {final}", flush=True)
    mean = {m: sum(v) / len(v) for m, v in walls.items()}
    print(f"device {args.device}: default mean {mean['default']:.2f} s, compat mean {mean['compat']:.2f} s, "
          f"ratio {mean['compat'] / mean['default']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
