"""The Ray executor's overhead: the same runs through the local executor and through 2 actors of a local
two-node Ray cluster (head + one node, ``--cpus-per-node`` CPUs each), one after the other, in one process.

    python benchmarks/bench_ray.py --runs 8 --shape 96,256,256          # this 2-core machine (target <= 15 %)

Prints each job's wall time (``run_pipeline``, as ``run_all.py`` runs it: models checked, actors started and
their models loaded, runs, reports), the overhead of Ray's wall over the local one, what starting the cluster
took (not in the overhead: a cluster is up before a job starts), and whether the picks are the same.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def picks(config_path) -> dict:
    from pipeline import copick_io

    root = copick_io.open_project(config_path)
    return {(run.name, o.name): copick_io.read_picks(root, run.name, o.name, "octopi", "1", 10.0).tolist()
            for run in root.runs for o in copick_io.particle_objects(root)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--shape", default="96,256,256")
    p.add_argument("--ntta", type=int, default=4)
    p.add_argument("--cpus-per-node", type=int, default=1, help="CPUs of each of the 2 Ray nodes = of each actor")
    p.add_argument("--n-procs", type=int, default=1, help="localize threads per job")
    p.add_argument("--workdir", default=None, help="keep the synthetic project here (default: a temp folder)")
    p.add_argument("--arena-on-nodes", action="store_true",
                   help="export MALLOC_ARENA_MAX=1 before starting the nodes (the README's cluster recipe): the "
                        "actors then need no runtime_env, and Ray's prestarted workers serve them")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # the nodes' processes (and the actors) import this checkout, as the driver does
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

    import ray
    from ray.cluster_utils import Cluster

    from pipeline.config import config_from_dict
    from pipeline.networks import lean_monai
    from pipeline.run import run_pipeline, throughput_summary

    lean_monai()  # as run_all.py's process imports MONAI (the local job pays that import in its wall)
    from pipeline.run.select import prepare_project

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_ray_"))
    doc = {
        "synthetic": {"out": str(work / "project"), "runs": args.runs, "shape": [int(s) for s in args.shape.split(",")],
                      "seed": 11},
        "device": "cpu",
        "model": {"configs": [str(REPO / "configs/models/demo_unet.yaml")],
                  "weights": [str(REPO / "configs/models/demo_unet.pth")]},
        "segment": {"ntta": args.ntta},
        "localize": {"n_procs": args.n_procs},
        "output": {"dir": str(work / "out"), "overwrite": True},
        "ray": {"cpus_per_actor": args.cpus_per_node},
    }
    local_cfg = config_from_dict(doc, source="bench_ray (local)")
    ray_cfg = config_from_dict({**doc, "executor": "ray"}, source="bench_ray (ray)")
    prepare_project(local_cfg)  # outside the timing

    t0 = time.perf_counter()
    local = run_pipeline(local_cfg, progress=False)
    local_wall = time.perf_counter() - t0
    local_picks = picks(local_cfg.copick_config)

    if args.arena_on_nodes:
        os.environ["MALLOC_ARENA_MAX"] = "1"  # the nodes, their workers and the driver's view (after the local job)
    t0 = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.cpus_per_node, "include_dashboard": False})
    cluster.add_node(num_cpus=args.cpus_per_node)
    ray.init(address=cluster.address, logging_level=logging.WARNING)
    cluster_start = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        on_ray = run_pipeline(ray_cfg, progress=False)
        ray_wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
        cluster.shutdown()
    same = picks(ray_cfg.copick_config) == local_picks

    def stages(result) -> str:
        s = throughput_summary(result.records, result.wall_seconds)
        return ", ".join(f"{k} {v:.1f}" for k, v in s["stage_seconds_total"].items())

    n_local = sum(r.status == "done" for r in local.records)
    n_ray = sum(r.status == "done" for r in on_ray.records)
    workers = sorted({r.worker for r in on_ray.records})
    print(f"{args.runs} runs of {args.shape}, demo model, fast mode, ntta {args.ntta}, cpu, {os.cpu_count()} cores"
          + (", MALLOC_ARENA_MAX=1 exported for the nodes" if args.arena_on_nodes else ""))
    print(f"local executor, 1 process ({n_local} done)       wall {local_wall:7.2f} s   stage totals (s): "
          f"{stages(local)}")
    print(f"ray executor, 2 nodes x {args.cpus_per_node} CPU, {len(workers)} actors ({n_ray} done)  wall {ray_wall:7.2f} s   "
          f"stage totals (s): {stages(on_ray)}")
    print(f"overhead of ray over local: {100 * (ray_wall / local_wall - 1):+.1f} %  (target <= +15 %)")
    busy = {w: sum(sum(r.seconds.values()) for r in on_ray.records if r.worker == w) for w in workers}
    busiest = max(busy.values())
    local_busy = sum(sum(r.seconds.values()) for r in local.records)
    print(f"ray wall - busiest actor's stage seconds ({busiest:.2f} s): {ray_wall - busiest:.2f} s (actors starting and "
          f"loading the model, hand-out, the last runs' tail); local wall - its stage seconds ({local_busy:.2f} s): "
          f"{local_wall - local_busy:.2f} s")
    print(f"starting the 2-node cluster (not in the overhead): {cluster_start:.2f} s")
    print(f"same picks: {same}; runs per actor: " + ", ".join(
        f"{w} {sum(r.worker == w for r in on_ray.records)}" for w in workers))
    return 0 if same and n_local == n_ray == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
