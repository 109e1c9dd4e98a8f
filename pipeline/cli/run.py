"""Run the whole pipeline from a YAML run config: segment -> localize -> write picks -> evaluate.

Same as `python run_all.py CONFIG`. The config schema and its defaults are in pipeline/config.py and the
README; relative paths in the YAML resolve against the YAML file's folder. Reports (throughput JSON,
run_manifest.json, scores) go to output.dir (default <overlay_root>/tomopick).
"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("config", help="run config YAML, e.g. configs/demo.yaml")
    p.add_argument("--shard", default=None,
                   help="K/N: take runs K, K+N, K+2N, ... (K from 0), e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")
    p.add_argument("--overwrite", action="store_true", help="redo runs whose picks exist already")
    p.add_argument("--device", default=None, help="override the config's device: auto | cpu | cuda | cuda:N")


def run(args) -> int:
    from pipeline.config import load_config
    from pipeline.stream import run_pipeline

    cfg = load_config(args.config, overrides={"shard": args.shard, "device": args.device})
    if args.overwrite:
        cfg.output.overwrite = True
    result = run_pipeline(cfg)
    summary = _summary_lines(result)
    print("\n".join(summary))
    return 1 if result.failed else 0


def _summary_lines(result) -> list[str]:
    from pipeline.stream import throughput_summary

    s = throughput_summary(result.records, result.wall_seconds)
    lines = []
    if result.evaluation_table:
        lines += [result.evaluation_table, ""]
    lines.append(
        f"{s['runs_done']} run(s) done, {s['runs_already_done']} already done, {s['runs_failed']} failed "
        f"in {s['wall_seconds']:.1f} s on {result.device.torch_device} "
        f"({s['tomograms_per_minute']:.2f} tomograms/min, {s['voxels_per_second'] / 1e6:.2f} Mvoxel/s)"
    )
    if result.failed:
        lines.append("failed runs: " + ", ".join(f"{r.run_id} ({r.error})" for r in result.failed))
    lines.append(f"report: {result.report_path}")
    lines.append(f"manifest: {result.manifest_path}")
    return lines
