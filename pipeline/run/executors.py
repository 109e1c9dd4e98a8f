"""Where the run loops run: ``Executor.run(run_ids, on_record) -> records``.

- ``LocalExecutor``: one ``RunLoop`` in this process, on the job's device.
- ``ProcessExecutor``: one spawned worker process per device (several GPUs), each with its own ``RunLoop``
  and its models loaded once; runs are handed out one at a time from a shared queue as workers free up. The
  parent watches the workers: one that dies fails the runs it held, loudly (their partial outputs removed),
  and with ``output.on_error: raise`` the job stops; an abort event stops every worker taking new runs.

A cluster engine plugs in as one more class with the same ``run``: ``ray_executor.RayExecutor`` (a Ray cluster's
actors, each with its own ``RunLoop``).
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from dataclasses import asdict

from pipeline.config import RunConfig, config_to_dict
from pipeline.errors import RunFailed, Terminated
from pipeline.run.context import WorkerContext
from pipeline.run.loop import RunLoop
from pipeline.run.reports import FAILED, RunRecord

log = logging.getLogger(__name__)

OnRecord = Callable[[RunRecord], None] | None


class LocalExecutor:
    """Every run in this process, on the worker context's device."""

    def __init__(self, ctx: WorkerContext):
        self.ctx = ctx

    def run(self, run_ids: list[str], on_record: OnRecord = None) -> list[RunRecord]:
        return RunLoop(self.ctx, on_record=on_record).run(run_ids)


def _worker_main(config_doc: dict, source: str, device_spec: str, worker: str, log_level: int, tasks, events,
                 abort) -> None:
    """A spawned worker: open its context on ``device_spec``, then run what the parent hands out."""
    logging.basicConfig(level=log_level, format=f"%(asctime)s %(levelname)s {worker} %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    from pipeline import own_process
    from pipeline.config import config_from_dict
    from pipeline.errors import raise_on_termination

    own_process.declare()
    raise_on_termination()  # SLURM signals every process of the step: settle what this worker holds, then go

    try:
        cfg = config_from_dict(config_doc, source=source, check_files=False)
        cfg.evaluate = None  # the parent evaluates once every worker is done
        ctx = WorkerContext.open(cfg, device_spec)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which stops the job
        events.put(("fatal", worker, f"could not start on {device_spec}: {type(exc).__name__}: {exc}"))
        events.put(("exit", worker, None))
        return

    def handed_out():
        while not abort.is_set():
            run_id = tasks.get()
            if run_id is None:
                return
            yield run_id

    loop = RunLoop(ctx, abort=abort, worker=worker, on_start=lambda r: events.put(("start", worker, r)),
                   on_record=lambda rec: events.put(("record", worker, asdict(rec))))
    try:
        loop.run(handed_out())
    except RunFailed as exc:
        events.put(("fatal", worker, str(exc)))
    except Terminated as exc:  # SIGTERM/SIGUSR1 here: the parent stops the job the same way (exit 128 + N)
        events.put(("signal", worker, exc.signum))
    except OSError as exc:  # e.g. an overlay that became unwritable: the parent exits 74 naming the path
        events.put(("oserror", worker, (exc.errno, exc.strerror or str(exc), exc.filename)))
    except BaseException as exc:  # noqa: BLE001 - Ctrl-C or a bug: the parent reports it
        events.put(("fatal", worker, f"{type(exc).__name__}: {exc}"))
    finally:
        events.put(("exit", worker, None))


class ProcessExecutor:
    """One spawned worker process per device; runs handed out from a shared queue."""

    def __init__(self, cfg: RunConfig, devices: list[str], cleanup: Callable[[str], None] | None = None,
                 target: Callable = _worker_main):
        # ``target``: the worker's entry point (a picklable function with _worker_main's signature; tests wrap it)
        self.cfg, self.devices, self.cleanup, self.target = cfg, list(devices), cleanup, target

    def run(self, run_ids: list[str], on_record: OnRecord = None) -> list[RunRecord]:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # CUDA cannot be forked
        tasks, events, abort = ctx.Queue(), ctx.Queue(), ctx.Event()
        for run_id in run_ids:
            tasks.put(run_id)
        names = [f"w{i}:{d}" for i, d in enumerate(self.devices[: len(run_ids)])]
        for _ in names:
            tasks.put(None)  # one end-of-work mark per worker
        level = logging.getLogger().getEffectiveLevel()
        procs = {
            name: ctx.Process(target=self.target, name=f"tomopick-{name}", daemon=True,
                              args=(config_to_dict(self.cfg), self.cfg.source, d, name, level, tasks, events, abort))
            for name, d in zip(names, self.devices)
        }
        for p in procs.values():
            p.start()
        records: dict[str, RunRecord] = {}
        held: dict[str, list[str]] = {name: [] for name in procs}
        fatal: list[str] = []
        stopped: list[BaseException] = []  # a worker's signal or OS error, raised here once all have settled
        exited: set[str] = set()

        def record(rec: RunRecord) -> None:
            records[rec.run_id] = rec
            if on_record is not None:
                on_record(rec)

        def handle(kind: str, worker: str, payload) -> None:
            if kind == "start":
                held[worker].append(payload)
            elif kind == "record":
                rec = RunRecord.from_dict(payload)
                if rec.run_id in held[worker]:
                    held[worker].remove(rec.run_id)
                record(rec)
            elif kind == "fatal":
                log.error("worker %s: %s", worker, payload)
                fatal.append(f"worker {worker}: {payload}")
                abort.set()
            elif kind == "signal":
                stopped.append(Terminated(payload))
                abort.set()
            elif kind == "oserror":
                stopped.append(OSError(*payload))
                abort.set()
            elif kind == "exit":
                exited.add(worker)

        try:
            while len(exited) < len(procs):
                try:
                    handle(*events.get(timeout=0.5))
                    continue
                except queue.Empty:
                    pass
                for name, p in procs.items():
                    if name in exited or p.is_alive():
                        continue
                    self._died(name, p.exitcode, held[name], record)
                    exited.add(name)
                    if self.cfg.output.on_error == "raise":
                        fatal.append(f"worker {name} died (exit code {p.exitcode})")
                        abort.set()
        except BaseException:
            abort.set()  # Ctrl-C: every worker stops taking runs and settles what it holds
            for p in procs.values():
                p.join(timeout=60)
            raise
        finally:
            for p in procs.values():
                p.join(timeout=10)
        queued = self._drain(tasks)
        if not abort.is_set():
            # every run handed out ends with a record; one that has none went down with a worker before its
            # "start" message reached us (a kill between the two), and one still queued found no worker left
            for run_id in run_ids:
                if run_id not in records:
                    why = "no worker was left to run it" if run_id in queued else "its worker died before reporting it"
                    record(RunRecord(run_id, FAILED, error=f"WorkerDied: {why}"))
                    if self.cleanup is not None and run_id not in queued:
                        self.cleanup(run_id)
        if stopped:
            raise stopped[0]
        if fatal:
            raise RunFailed("; ".join(fatal))
        order = {r: i for i, r in enumerate(run_ids)}
        return sorted(records.values(), key=lambda r: order[r.run_id])

    def _died(self, worker: str, exitcode, held: list[str], record) -> None:
        """A worker that vanished without saying goodbye: the runs it held failed, and their outputs go."""
        log.error("worker %s died (exit code %s) holding run(s) %s", worker, exitcode, ", ".join(held) or "none")
        for run_id in held:
            if self.cleanup is not None:
                self.cleanup(run_id)
            record(RunRecord(run_id, FAILED, worker=worker,
                             error=f"WorkerDied: worker {worker} died (exit code {exitcode}) while running it"))
        held.clear()

    @staticmethod
    def _drain(tasks) -> set[str]:
        """The run ids still queued once every worker is gone."""
        queued = set()
        while True:
            try:
                run_id = tasks.get(timeout=0.1)
            except queue.Empty:
                return queued
            if run_id is not None:
                queued.add(run_id)
