"""The driver: one run's life is one path through here, whoever started it and wherever it runs.

``select`` (which runs, shards, done markers, objects), ``context`` (a worker's device, project and models),
``loop`` (read -> segment -> localize -> write for one worker, overlapped), ``outputs`` (what a run writes and
how a failed one is undone), ``executors`` (in this process; one process per GPU), ``ray_executor`` (the actors
of a Ray cluster), ``reports`` (throughput, manifest, parameter logs), ``job`` (the whole job: ``run_pipeline``).
"""

from pipeline.run.job import evaluate_runs, run_pipeline
from pipeline.run.reports import JobResult, RunRecord, summary_line, throughput_summary

__all__ = ["run_pipeline", "evaluate_runs", "JobResult", "RunRecord", "summary_line", "throughput_summary"]
