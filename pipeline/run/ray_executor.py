"""Runs on a Ray cluster (``executor: ray``): ``RayExecutor(cfg, cleanup).run(run_ids, on_record) -> records``.

- One actor (``ray_actor.RunActor``) per GPU of the cluster (``num_gpus=1``), or, on a cluster without GPUs, one
  per ``ray.cpus_per_actor`` CPUs (with as many torch threads). Each actor checks that its node reaches the project
  and the model files (the error names the node and the path), opens its ``WorkerContext`` once (models loaded
  once) and runs one ``RunLoop`` for the whole job in a thread, fed from a queue in the actor: read-ahead,
  segmentation, localization and writing overlap there exactly as in the local driver.
- The driver keeps every actor at ``1 + read_ahead`` runs (one computing, the others read ahead); each record
  that comes back frees a place for the next run of the queue, so runs go to whichever actor frees up first.
  The driver polls each actor for its events (records, a fatal error, the loop's end) by sequence number, so a
  poll lost in transit loses nothing.
- Faults: Ray tells the driver that an actor died (``ActorDiedError``: its process or its node is gone) at the
  next poll. The runs it held are cleaned up, their half-written outputs removed (``cleanup``:
  ``RunOutputs.remove_partial``, which removes only what a writing marker vouches for) and the dead process's
  claims released, and go back to the head of the queue for the live actors, up to ``ray.retries`` times each;
  after that they fail loudly (``WorkerDied``). A run the dead actor had finished (done marker written, record
  not yet polled) counts as done. A new actor replaces the dead one (placed by Ray where there is room), up to
  ``ray.retries`` times per actor. Actors are not restarted by Ray itself (``max_restarts=0``): a restarting
  actor would hold its runs until its new process is up, for ever if it cannot be placed. A poll that only
  finds an actor unreachable (a passing network fault) is repeated; the actor keeps its runs.
- Ctrl-C, SIGTERM, a fatal error (``output.on_error: raise``): every actor stops taking runs, the runs in
  flight finish or roll back and their records come back for the report; then the actors are killed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.config import RunConfig, config_to_dict
from pipeline.errors import ProjectError, RunFailed
from pipeline.heap import lacks_one_arena, one_arena_env
from pipeline.run.ray_actor import RunActor
from pipeline.run.ray_connect import _first_lines, connect, import_ray, plan_actors, workers_have
from pipeline.run.reports import DONE, FAILED, RunRecord

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # an actor's poll answers at the first event, or after this long with none
SETTLE_SECONDS = 300.0  # once stopped: how long the runs in flight may take to finish or roll back
NO_ACTOR_SECONDS = 900.0  # no actor ready for this long (none placed, or all restarting): the job stops
UNREACHABLE_TRIES = 120  # polls in a row that find an actor unavailable before it counts as dead
CHATTY_LOGGERS = ("numba", "fsspec", "asyncio", "matplotlib", "PIL", "h5py")  # as pipeline.cli.common sets them


@dataclass
class _Actor:
    """One actor place: its current actor, and how often a dead one was replaced."""

    name: str
    handle: object
    info: dict | None = None  # the actor's process (poll's answer); None until it has started
    held: list = field(default_factory=list)  # runs given to this process and not yet recorded
    seen: int = 0  # events of this process taken so far
    call: object = None  # the outstanding poll
    state: str = "starting"  # starting | ready | unreachable | exited | gone
    unreachable: int = 0
    replaced: int = 0
    since: float = field(default_factory=time.monotonic)  # when this process was asked for

    @property
    def who(self) -> str:
        info = self.info or {}
        return f"{info.get('worker', self.name)} (pid {info.get('pid', '?')})"


class RayExecutor:
    """Every run on the actors of a Ray cluster; see the module's docstring."""

    def __init__(self, cfg: RunConfig, cleanup: Callable[[str], None] | None = None, root=None):
        # ``root``: the open project, for releasing a dead actor's claims (opened here when not given)
        self.cfg, self.cleanup, self.root = cfg, cleanup, root
        self.deaths: list[dict] = []  # one entry per actor process lost with the runs it held (logs, tests)
        self.started: list[dict] = []  # what each actor process said of itself when it was ready (node, pid, heap)
        self._ray, self._connected_here = None, False

    def prepare(self, n_runs: int) -> None:
        """Import Ray, connect, and check the cluster can hold an actor: the errors a job should meet before it
        reports anything (a job stopped here ran nothing, and leaves the earlier job's reports as they were)."""
        ray = import_ray()
        connected_here = connect(ray, self.cfg.ray.address)
        try:
            plan_actors(ray, self.cfg, n_runs)
        except BaseException:
            if connected_here:
                ray.shutdown()
            raise
        self._ray, self._connected_here = ray, connected_here

    def run(self, run_ids: list[str], on_record: Callable[[RunRecord], None] | None = None) -> list[RunRecord]:
        if self._ray is None:
            self.prepare(len(run_ids))
        ray, connected_here = self._ray, self._connected_here
        self._ray, self._connected_here = None, False
        try:
            return _HandOut(ray, self, list(run_ids), on_record).run()
        finally:
            if connected_here:
                ray.shutdown()


class _HandOut:
    """One job's hand-out of runs to the actors (the state of ``RayExecutor.run``)."""

    def __init__(self, ray, executor: RayExecutor, run_ids: list[str], on_record):
        self.ray, self.ex, self.cfg, self.run_ids, self.on_record = ray, executor, executor.cfg, run_ids, on_record
        self.queue: deque[str] = deque(run_ids)
        self.tries: dict[str, int] = {}
        self.records: dict[str, RunRecord] = {}
        self.actors: list[_Actor] = []
        self.fatal: list[str] = []
        self.data_error = False
        self.stopping_since: float | None = None
        self.pending_calls: list = []  # give/stop calls whose answers nobody needs (fetched to keep Ray quiet)
        self.per_actor = 1 + self.cfg.read_ahead
        self.device_spec = ""
        self.warned_arena = False

    # ---------------------------------------------------------------------------------------------- start, end

    def run(self) -> list[RunRecord]:
        n, resources, device_spec, threads = plan_actors(self.ray, self.cfg, len(self.run_ids))
        log.info("starting %d Ray actor(s) (%s each) for %d run(s)", n, resources, len(self.run_ids))
        # one glibc arena in the actors' processes: their run loop, in a thread, then segments from the kept heap.
        # Where the workers have it from their start already (a local instance started here, or MALLOC_ARENA_MAX=1
        # exported for `ray start` and the driver), no runtime_env: Ray's prestarted workers then serve the actors
        env = one_arena_env()
        runtime_env = {"runtime_env": {"env_vars": env}} if env and not workers_have(env) else {}
        self.device_spec = device_spec
        remote = self.ray.remote(RunActor).options(max_restarts=0, max_task_retries=0, max_concurrency=4, **resources,
                                                   **runtime_env)
        doc = config_to_dict(self.cfg)
        levels = {name: logging.getLogger(name).getEffectiveLevel() for name in ("", *CHATTY_LOGGERS)}
        self._new_actor = lambda name: remote.remote(doc, self.cfg.source, device_spec, name, threads, levels)
        for i in range(n):
            actor = _Actor(f"ray{i}", self._new_actor(f"ray{i}"))
            # answered as soon as the actor has started: it has no event before it is given a run
            actor.call = actor.handle.poll.remote(0, 0.0)
            self.actors.append(actor)
        try:
            self._loop()
        except BaseException:  # Ctrl-C / SIGTERM: stop taking runs, let those in flight settle, report them
            log.warning("stopping: the actors take no more runs; waiting for the runs in flight to finish or roll back")
            self._stop_all()
            self._loop()
            raise
        finally:
            self._kill_all()
        if self.fatal:
            raise (ProjectError if self.data_error else RunFailed)("; ".join(self.fatal))
        order = {r: i for i, r in enumerate(self.run_ids)}
        return sorted(self.records.values(), key=lambda r: order[r.run_id])

    def _loop(self) -> None:
        no_actor_since = time.monotonic()
        while not self._finished():
            calls = {a.call: a for a in self.actors if a.call is not None}
            if not calls:
                break
            ready, _ = self.ray.wait(list(calls), num_returns=1, timeout=2 * POLL_SECONDS)
            for call in ready:
                self._answer(calls[call], call)
            self._dispatch()
            self._drop_answered_calls()
            if any(a.state == "ready" for a in self.actors) or self.stopping_since is not None:
                no_actor_since = time.monotonic()
            elif time.monotonic() - no_actor_since > NO_ACTOR_SECONDS:
                states = ", ".join(f"{a.name} {a.state}" for a in self.actors)
                self._fatal(f"no Ray actor was ready for {NO_ACTOR_SECONDS:.0f} s ({states}): the cluster has no "
                            "free GPU / CPUs for them, or they keep dying; see `ray status` and the actors' logs")
        self._fail_unplaced()

    def _finished(self) -> bool:
        live = [a for a in self.actors if a.state not in ("exited", "gone")]
        if self.stopping_since is not None:
            return not live or time.monotonic() - self.stopping_since > SETTLE_SECONDS
        # every run has its record (and a loop releases a run's claim before it reports the run): done
        return not live or (not self.queue and not any(a.held for a in self.actors))

    def _fail_unplaced(self) -> None:
        """Runs that no actor was left to take (every actor gone): failed, loudly."""
        if self.stopping_since is not None:
            return  # stopped on purpose: what was not run has no record, as with the local executor
        last = f" (the last one {self.ex.deaths[-1]['why']})" if self.ex.deaths else ""
        for run_id in list(self.queue):
            self._record(RunRecord(run_id, FAILED, error=f"WorkerDied: no Ray actor was left to run it{last}"))
        self.queue.clear()

    def _stop_all(self) -> None:
        if self.stopping_since is not None:
            return
        self.stopping_since = time.monotonic()
        for a in self.actors:
            if a.state not in ("exited", "gone"):
                self.pending_calls.append(a.handle.stop.remote())

    def _kill_all(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a.handle, no_restart=True)
            except Exception as exc:  # noqa: BLE001 - gone already
                log.debug("killing %s: %s", a.name, exc)

    def _drop_answered_calls(self) -> None:
        if not self.pending_calls:
            return
        done, self.pending_calls = self.ray.wait(self.pending_calls, num_returns=len(self.pending_calls), timeout=0)
        for call in done:
            try:
                self.ray.get(call)
            except Exception:  # noqa: BLE001, S110 - the actor died: its poll tells, and is handled there
                pass

    # ---------------------------------------------------------------------------------------------- events

    def _answer(self, a: _Actor, call) -> None:
        a.call = None
        try:
            info, events = self.ray.get(call)
        except self.ray.exceptions.RayActorError as exc:
            self._unreachable(a, exc)
            return
        a.unreachable = 0
        if a.info is None:
            a.info = info
            if info["error"]:
                self.data_error = self.data_error or info["data_error"]
                self._fatal(info["error"])
                a.state = "gone"
                return
            self.ex.started.append(info)
            # starting a process, importing torch and MONAI, loading the models: ~4 s of a CPU here
            log.info("actor %s ready after %.1f s (heap: %s)", a.who, time.monotonic() - a.since, info.get("heap"))
            if self.device_spec == "cpu" and lacks_one_arena(info.get("heap")) and not self.warned_arena:
                self.warned_arena = True
                log.warning("actor %s keeps freed memory but runs with glibc's many arenas: its segmentation thread "
                            "then maps and unmaps every window, ~1.5x slower (benchmarks/RESULTS.md). The driver "
                            "passes MALLOC_ARENA_MAX=1 to the actors unless its own environment sets the allocator "
                            "(MALLOC_ARENA_MAX, MALLOC_*_, TOMOPICK_HEAP, GLIBC_TUNABLES): export the same settings "
                            "before `ray start`, so that the actors' processes have them too", a.who)
        if a.state in ("starting", "unreachable"):
            a.state = "ready"
        for kind, payload in events:
            a.seen += 1
            if kind == "record":
                rec = RunRecord.from_dict(payload)
                if rec.run_id in a.held:
                    a.held.remove(rec.run_id)
                    self._record(rec)
            elif kind == "fatal":
                self._fatal(f"{a.who}: {payload}")
            elif kind == "exit":
                a.state = "exited"
                if a.held and self.stopping_since is None:  # its loop ended by itself: a bug; the runs go elsewhere
                    self._lost(a, "ended its run loop")
        if a.state != "exited":
            a.call = a.handle.poll.remote(a.seen, POLL_SECONDS)

    def _unreachable(self, a: _Actor, exc) -> None:
        if isinstance(exc, self.ray.exceptions.ActorDiedError):
            self._died(a, f"died ({_first_lines(exc)})")
            return
        a.unreachable += 1  # a passing network fault: ask again; the actor keeps its runs
        if a.unreachable > UNREACHABLE_TRIES:
            try:
                self.ray.kill(a.handle, no_restart=True)  # so that it writes nothing more
            except Exception as kill_error:  # noqa: BLE001 - unreachable: its claims keep others off its runs
                log.warning("could not kill unreachable actor %s: %s", a.who, kill_error)
            self._died(a, f"was unreachable {UNREACHABLE_TRIES} times in a row")
            return
        if a.state == "ready":
            a.state = "unreachable"
        time.sleep(min(0.05 * a.unreachable, 1.0))
        a.call = a.handle.poll.remote(a.seen, POLL_SECONDS)

    def _died(self, a: _Actor, why: str) -> None:
        """``a``'s actor is gone: its runs go elsewhere, and a new actor takes its place while runs are left."""
        self._lost(a, why)
        a.state = "gone"
        if self.stopping_since is not None or not self.queue or a.replaced >= self.cfg.ray.retries:
            return
        a.replaced += 1
        log.warning("starting a new actor in place of %s (%d of ray.retries %d)", a.who, a.replaced,
                    self.cfg.ray.retries)
        a.handle, a.info, a.seen, a.state, a.unreachable = self._new_actor(a.name), None, 0, "starting", 0
        a.since = time.monotonic()
        a.call = a.handle.poll.remote(0, 0.0)

    def _lost(self, a: _Actor, why: str) -> None:
        """The process behind ``a`` is gone with the runs it held: clean them up, hand them out again."""
        held, a.held = a.held, []
        info = a.info or {}
        self.ex.deaths.append({"actor": a.name, "worker": info.get("worker"), "node": info.get("node"),
                               "pid": info.get("pid"), "runs": list(held), "why": why})
        log.error("actor %s %s, holding run(s) %s", a.who, why, ", ".join(held) or "none")
        retries = self.cfg.ray.retries
        for run_id in reversed(held):
            self._clean(run_id, info)
            done = self._finished_before_death(run_id)
            if done is not None:
                log.info("run %s: %s finished it before dying (its done marker is there); not redone", run_id, a.who)
                self._record(RunRecord(run_id, DONE, worker=info.get("worker", a.name), picks=done.get("picks") or {}))
                continue
            tries = self.tries[run_id] = self.tries.get(run_id, 0) + 1
            if self.stopping_since is None and tries <= retries:
                log.warning("run %s: handed out again (retry %d of %d)", run_id, tries, retries)
                self.queue.appendleft(run_id)
                continue
            reason = "the job was stopping" if self.stopping_since is not None else f"ray.retries is {retries}"
            self._record(RunRecord(run_id, FAILED, worker=info.get("worker", a.name),
                                   error=f"WorkerDied: actor {a.who} {why} while running it ({tries} time(s); "
                                         f"not retried: {reason})"))
            if self.cfg.output.on_error == "raise" and self.stopping_since is None:
                self._fatal(f"run {run_id}: its actor died {tries} time(s) (ray.retries: {retries})")

    def _finished_before_death(self, run_id: str) -> dict | None:
        """The done marker of a run that the dead process wrote whole before it died (its record had not come back
        yet). Only without ``overwrite``: then the run had no marker when the job chose it, and any other driver
        would have had to claim it first. With ``overwrite`` the run is redone."""
        from pipeline import overlay_files
        from pipeline.run.select import marker_key

        if self.cfg.output.overwrite:
            return None
        root, key = self._root(), marker_key(self.cfg)
        if overlay_files.writing_marker(root, run_id, key).exists():
            return None
        return overlay_files.read_json(overlay_files.run_done_marker(root, run_id, key))

    def _root(self):
        if self.ex.root is None:
            from pipeline import copick_io

            self.ex.root = copick_io.open_project(self.cfg.copick_config)
        return self.ex.root

    def _clean(self, run_id: str, info: dict) -> None:
        """What the dead process left of a run: its half-written outputs and its claim (a claim of a process on
        another host would otherwise hold the run for Claims.STALE_SECONDS)."""
        from pipeline import overlay_files
        from pipeline.run.select import marker_key

        if self.ex.cleanup is not None:
            self.ex.cleanup(run_id)
        try:
            path = overlay_files.claim_path(self._root(), run_id, marker_key(self.cfg))
            holder = overlay_files.read_json(path) if path.is_file() else None
            if holder and holder.get("host") == info.get("node") and holder.get("pid") == info.get("pid"):
                path.unlink(missing_ok=True)
        except Exception as exc:  # noqa: BLE001 - the claim goes stale on its own
            log.warning("run %s: could not release the dead actor's claim: %s", run_id, exc)

    def _record(self, rec: RunRecord) -> None:
        self.records[rec.run_id] = rec
        if self.on_record is not None:
            self.on_record(rec)

    def _fatal(self, message: str) -> None:
        log.error("%s", message)
        self.fatal.append(message)
        self._stop_all()

    def _dispatch(self) -> None:
        """A run for every ready actor without one; then runs to read ahead, up to ``1 + read_ahead`` an actor,
        while the queue holds more runs than the actors without any (also those still starting) will take."""
        if self.stopping_since is not None:
            return
        takers = [a for a in self.actors if a.state in ("starting", "ready")]
        ready = [a for a in takers if a.state == "ready"]
        for a in ready:
            if self.queue and not a.held:
                self._give(a)
        for a in sorted(ready, key=lambda a: len(a.held)):
            while (self.queue and len(a.held) < self.per_actor
                   and len(self.queue) > sum(not b.held for b in takers)):
                self._give(a)

    def _give(self, a: _Actor) -> None:
        run_id = self.queue.popleft()
        a.held.append(run_id)
        self.pending_calls.append(a.handle.give.remote(run_id))
