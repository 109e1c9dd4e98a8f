"""One worker's loop over runs: read -> segment -> localize -> write, overlapped; the only code that writes a
run's outputs (through ``RunOutputs``), so "nothing half-written" is proved here once.

- A reader thread reads the next ``read_ahead`` runs' input (tomogram, into pinned memory on CUDA; or the
  stored segmentation of a localize-only job) while the current run is processed.
- Segmentation runs in the calling thread. On CUDA the label map stays on the device and, with CuPy, is
  localized there; otherwise one host copy is localized in a background thread while the next run segments.
- A writer thread writes each run's segmentation, picks and, last, its done marker.

A failing run is recorded (its earlier outputs as they were, see ``RunOutputs``); with ``output.on_error:
raise`` the loop stops taking runs and raises ``RunFailed`` once the runs in flight have settled. An ``abort``
event (set by an executor), Ctrl-C or SIGTERM stop it taking runs, too. A claim that cannot be written (a
read-only overlay) stops the loop with that OSError.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipeline.errors import RunFailed
from pipeline.run.context import WorkerContext
from pipeline.run.outputs import RunOutputs
from pipeline.run.reports import CLAIMED, DONE, FAILED, SKIPPED_DONE, RunRecord
from pipeline.run.select import (
    Claims,
    input_probabilities,
    input_segmentation,
    needs_probabilities,
    run_is_done,
)

log = logging.getLogger(__name__)

_END = object()
_WAITING = object()
SETTLE_EVERY = 0.2  # seconds: while no next run is there, finished runs are reported this often
READER_JOIN_SECONDS = 120.0  # at most, at the end of a loop: the reader finishes the read it is in


class _Reader(threading.Thread):
    """Reads the input of up to ``depth`` runs ahead of the compute stage.

    A run is taken from ``run_ids`` only when a slot is free (the consumer frees one as it takes a run), so a
    worker fed from a shared queue never holds more than the run it computes plus ``depth`` read ahead.
    """

    def __init__(self, ctx: WorkerContext, run_ids: Iterable[str], depth: int, stop: threading.Event,
                 on_start: Callable[[str], tuple | None]):
        super().__init__(name="tomopick-reader", daemon=True)
        self.ctx, self.run_ids, self.stop, self.on_start = ctx, run_ids, stop, on_start
        self.out: queue.Queue = queue.Queue()
        self.slots = threading.Semaphore(depth)
        self.seg = input_segmentation(ctx.cfg)
        self.probabilities = input_probabilities(ctx.cfg)
        self.error: BaseException | None = None  # the run source or a claim failed: the loop re-raises it
        self.awaiting_run = threading.Event()  # set while it waits for the next run from ``run_ids``

    def finish_read(self, timeout: float) -> None:
        """Once the loop stopped: wait for the reader to end (a stopped loop leaves it claiming or reading the
        next run): the claims go after it, and a process that exits while a daemon thread is inside h5py hangs
        on h5py's lock. A reader waiting for its next run (a shared queue) is not waited for: when one comes it
        sees the stop and reads nothing."""
        deadline = time.perf_counter() + timeout
        while self.is_alive() and not self.awaiting_run.is_set() and time.perf_counter() < deadline:
            self.join(timeout=0.05)

    def read(self, run_id: str):
        from pipeline import copick_io

        cfg = self.ctx.cfg
        if self.seg is not None:
            return copick_io.read_segmentation(self.ctx.root, run_id, cfg.voxel_size, self.seg)
        if self.probabilities is not None:
            from pipeline.probability_files import check_fits_tomogram, probability_path, read_probabilities

            probabilities = read_probabilities(probability_path(self.probabilities, run_id), cfg.voxel_size, run_id)
            check_fits_tomogram(probabilities, probability_path(self.probabilities, run_id), self.ctx.root, run_id,
                                cfg.voxel_size, cfg.tomo_alg)
            return probabilities
        volume = copick_io.read_tomogram(self.ctx.root, run_id, cfg.voxel_size, cfg.tomo_alg)
        check_finite(volume, f"run '{run_id}': tomogram {cfg.tomo_alg}@{cfg.voxel_size:g}", cfg.segment.nonfinite)
        if self.ctx.device.is_cuda:
            import torch

            # pinned memory makes the host-to-device copy asynchronous and fast
            volume = torch.from_numpy(volume).pin_memory()
        return volume

    def _slot(self) -> bool:
        while not self.stop.is_set():
            if self.slots.acquire(timeout=0.5):
                return True
        return False

    def run(self):
        try:
            run_ids = iter(self.run_ids)
            while self._slot():
                self.awaiting_run.set()
                try:
                    run_id = next(run_ids, None)
                finally:
                    self.awaiting_run.clear()
                if run_id is None or self.stop.is_set():
                    break
                skip = self.on_start(run_id)
                if skip is not None:  # claimed by another driver, or done meanwhile
                    self.out.put((run_id, None, skip, 0.0))
                    continue
                if self.stop.is_set():  # stopped while it claimed the run: leave it (the claim is released)
                    break
                t0 = time.perf_counter()
                try:
                    item = (run_id, self.read(run_id), None, time.perf_counter() - t0)
                except Exception as exc:  # reported per run by the consumer
                    item = (run_id, None, exc, time.perf_counter() - t0)
                self.out.put(item)
        except Exception as exc:  # the run source (an executor's queue) or a claim (the overlay) failed
            self.error = exc
        finally:
            self.out.put(_END)

    def take(self, timeout: float | None = None):
        """The next run's (id, input, error, seconds), ``_END``, or ``_WAITING`` when none came within ``timeout``."""
        try:
            item = self.out.get(timeout=timeout)
        except queue.Empty:
            return _WAITING
        self.slots.release()
        return item


def _on_host(array):
    """A torch tensor (on any device) as a numpy array; numpy arrays and None as they are."""
    if array is None or isinstance(array, np.ndarray):
        return array
    return array.cpu().numpy()


def check_finite(volume: np.ndarray, what: str, policy: str) -> None:
    """NaN or inf voxels would normalise the whole tomogram to NaN and give no picks, silently: refuse them
    (``segment.nonfinite: error``) or set them to 0 with a warning (``zero``)."""
    finite = np.isfinite(volume)
    bad = volume.size - int(np.count_nonzero(finite))
    if not bad:
        return
    if policy == "zero":
        volume[~finite] = 0.0
        log.warning("%s: %d non-finite voxels (NaN or inf) set to 0 (segment.nonfinite: zero)", what, bad)
        return
    from pipeline.errors import RunError

    raise RunError(f"{what} has {bad} non-finite voxels (NaN or inf) of {volume.size}; fix the reconstruction, or "
                   "set them to 0 with segment.nonfinite: zero (--nonfinite zero)")


class RunLoop:
    """``RunLoop(ctx).run(run_ids)`` -> one RunRecord per run taken (done or failed).

    ``run_ids`` may be any iterable, also one that blocks (an executor's queue of runs handed out).
    ``on_start(run_id)`` is called as a run is taken, ``on_record(record)`` as it finishes.
    """

    def __init__(self, ctx: WorkerContext, *, abort: threading.Event | None = None, worker: str = "",
                 on_start: Callable[[str], None] | None = None, on_record: Callable[[RunRecord], None] | None = None):
        self.ctx, self.cfg, self.worker = ctx, ctx.cfg, worker
        self.abort = abort if abort is not None else threading.Event()
        self.on_start, self.on_record = on_start, on_record
        self.bars = None if not worker else False  # worker processes and actors log progress, never draw bars
        self.outputs = RunOutputs(ctx.root, ctx.cfg, ctx.objects)
        self.claims = Claims(ctx.root, self.outputs.key)
        self.records: dict[str, RunRecord] = {}
        self.failure: list[BaseException] = []
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------------------------- per run

    def _finish(self, rec: RunRecord) -> None:
        if self.on_record is not None:
            self.on_record(rec)

    def fail(self, run_id: str, exc: BaseException) -> None:
        rec = self.records[run_id]
        rec.status, rec.error = FAILED, f"{type(exc).__name__}: {exc}"
        log.error("run %s failed: %s", run_id, rec.error)
        self.claims.release(run_id)  # its outputs are as they were: a failed write puts them back itself
        with self._lock:
            if self.cfg.output.on_error == "raise" and not self.failure:
                self.failure.append((run_id, exc))
                self.abort.set()
        self._finish(rec)

    def segment(self, run_id: str, volume):
        """(label map on the worker's device, fp16 class probabilities there when a method or the config wants
        them, seconds) of one tomogram; probabilities saved when asked."""
        from pipeline.segment import save_probabilities, segment_volume

        s, device, ensemble = self.cfg.segment, self.ctx.device, self.ctx.ensemble
        t0 = time.perf_counter()
        from pipeline.progress import Progress

        with Progress(f"run {run_id}: segment", unit="window", bar=self.bars) as bar:
            result = segment_volume(volume, ensemble, s, device=device.torch_device,
                                    return_probabilities=bool(s.save_probabilities) or needs_probabilities(self.cfg),
                                    progress=bar.update_to)
        if device.is_cuda:
            import torch

            torch.cuda.synchronize(device.torch_device)  # timing only: localize needs it anyway
        self.records[run_id].segment_stats = {k: v for k, v in result.stats.items() if k != "seconds"}
        seconds = time.perf_counter() - t0
        if s.save_probabilities:
            folder = Path(s.save_probabilities)
            folder.mkdir(parents=True, exist_ok=True)
            save_probabilities(folder / f"{run_id}.h5", result.probabilities, ensemble.labels, self.cfg.voxel_size,
                               run_id)
        probabilities = None
        if needs_probabilities(self.cfg):
            probabilities = result.probabilities.half()  # what peaks reads; half the memory of float32
        return result.label_map, probabilities, seconds

    def localize(self, run_id: str, label_map, probabilities, backend: str):
        """(picks or None, host copy of the label map or None) for the writer."""
        from pipeline.localize import localize

        rec = self.records[run_id]
        picks = None
        if self.cfg.has("localize"):
            t0 = time.perf_counter()
            volume = probabilities if needs_probabilities(self.cfg) else label_map
            from pipeline.progress import Progress

            with Progress(f"run {run_id}: localize", total=len(self.ctx.objects), unit="class",
                          bar=False) as bar:  # in the background: log lines, never a second bar
                picks = localize(volume, self.ctx.objects, self.cfg.voxel_size, self.cfg.localize, backend=backend,
                                 progress=bar.update_to)
            rec.seconds["localize"] = time.perf_counter() - t0
            rec.picks = {name: len(p) for name, p in picks.items()}
            label = self.cfg.localize.label
            if (label is not None and label_map is not None and not sum(rec.picks.values())
                    and not bool((label_map == label).any())):
                # octopi's -lbl with a value the map lacks reads an empty mask: 0 picks, but not unnoticed
                log.warning("run %s: the segmentation has no voxel of label %d (-lbl/localize.label): 0 picks",
                            run_id, label)
        host_map = None
        if self.outputs.wants_label_map and label_map is not None:
            host_map = label_map if isinstance(label_map, np.ndarray) else label_map.cpu().numpy()
        return picks, host_map

    def write(self, run_id: str, picks, host_map) -> None:
        rec = self.records[run_id]
        t0 = time.perf_counter()
        self.outputs.write(run_id, picks, host_map)
        self.claims.release(run_id)
        rec.seconds["write"] = time.perf_counter() - t0
        rec.status = DONE
        what = "segmented"
        if picks is not None:
            what = f"{sum(rec.picks.values())} picks ({', '.join(f'{k} {v}' for k, v in rec.picks.items())})"
        log.info("run %s: %s in %.1f s (%s)", run_id, what, sum(rec.seconds.values()),
                 ", ".join(f"{k} {v:.2f}s" for k, v in rec.seconds.items()))

    def _take(self, run_id: str) -> tuple | None:
        """None when this loop does the run; else (status, why): another driver holds it or finished it."""
        holder = self.claims.acquire(run_id)
        if holder is not None:
            return CLAIMED, f"being done by another driver ({holder})"
        if not self.cfg.output.overwrite and run_is_done(self.cfg, self.ctx.root, run_id, self.ctx.objects,
                                                         say_why=False):
            self.claims.release(run_id)
            return SKIPPED_DONE, "done by another driver meanwhile"
        return None

    def _backend_for(self, label_map) -> str:
        """gpu when the map is (or can be put) on this worker's GPU and CuPy is there; else the CPU."""
        from pipeline.device import cupy_available

        if self.ctx.device.is_cuda and self.cfg.has("localize") and cupy_available():
            return "gpu"
        return "cpu"

    # ---------------------------------------------------------------------------------------------- the loop

    def run(self, run_ids: Iterable[str]) -> list[RunRecord]:
        order: list[str] = []

        def started(run_id: str) -> tuple | None:
            with self._lock:
                self.records[run_id] = RunRecord(run_id, worker=self.worker)
                order.append(run_id)
            if self.on_start is not None:
                self.on_start(run_id)
            return self._take(run_id)

        reader = _Reader(self.ctx, run_ids, self.cfg.read_ahead, self.abort, started)
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tomopick-writer")
        localizer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tomopick-localize")
        pending: list[tuple[str, Future]] = []

        def settle(block: bool) -> None:
            still = []
            for run_id, fut in pending:
                if block or fut.done():
                    try:
                        fut.result()
                    except BaseException as exc:  # noqa: BLE001 - reported per run, re-raised per on_error
                        self.fail(run_id, exc)
                    else:
                        self._finish(self.records[run_id])
                else:
                    still.append((run_id, fut))
            pending[:] = still

        def then_write(run_id: str, fut: Future) -> Future:
            return writer.submit(lambda: self.write(run_id, *fut.result()))

        reader.start()
        try:
            while not self.failure:
                # a finished run is reported while the next one is awaited: an executor that hands out a run
                # only when one is reported (Ray) would otherwise wait for ever
                item = reader.take(timeout=SETTLE_EVERY)
                if item is _WAITING:
                    settle(block=False)
                    continue
                if item is _END:
                    if reader.error is not None:  # e.g. a read-only overlay: the job stops, naming the path
                        raise reader.error
                    break
                run_id, data, read_error, read_seconds = item
                rec = self.records[run_id]
                if isinstance(read_error, tuple):  # not ours to do (see _take)
                    rec.status, rec.error = read_error
                    log.info("run %s: %s", run_id, rec.error)
                    self._finish(rec)
                    continue
                rec.seconds["read"] = read_seconds
                if read_error is not None:
                    self.fail(run_id, read_error)
                    continue
                rec.shape_zyx = tuple(int(x) for x in data.shape[-3:])
                try:
                    if self.cfg.has("segment"):
                        label_map, probabilities, rec.seconds["segment"] = self.segment(run_id, data)
                    elif data.ndim == 4:  # class probabilities read from their file
                        label_map, probabilities = None, data
                    else:
                        label_map, probabilities = data, None
                    del data
                    if self._backend_for(label_map) == "gpu":
                        import torch

                        # hand torch's cached blocks (logits, stitch buffers) to CuPy, which has its own pool
                        torch.cuda.empty_cache()
                        done = Future()
                        done.set_result(self.localize(run_id, label_map, probabilities, "gpu"))
                        pending.append((run_id, then_write(run_id, done)))
                    else:  # one host copy, localized in the background while the next run is segmented
                        label_map, probabilities = _on_host(label_map), _on_host(probabilities)
                        pending.append((run_id, then_write(run_id, localizer.submit(
                            self.localize, run_id, label_map, probabilities, "cpu"))))
                        del label_map, probabilities
                except Exception as exc:  # noqa: BLE001 - this run fails; the job goes on per on_error
                    self.fail(run_id, exc)
                settle(block=False)
            settle(block=True)
        except BaseException:
            self.abort.set()  # e.g. Ctrl-C: the reader stops taking runs; what is in flight settles below
            raise
        finally:
            localizer.shutdown(wait=True)
            writer.shutdown(wait=True)
            settle(block=True)
            reader.finish_read(READER_JOIN_SECONDS)
            self.claims.release_all()
        if self.failure:
            # the run's own error is logged already (naming run and file): say what happened to the job, once
            run_id, exc = self.failure[0]
            raise RunFailed(
                f"stopped after run {run_id} failed (output.on_error: raise); runs done so far are kept and its "
                "earlier outputs, if any, are as they were. Set output.on_error: skip (--on-error skip) to go on with the "
                "other runs"
            ) from exc
        return [self.records[r] for r in order if self.records[r].status != "pending"]
