"""What runs on each node of a Ray cluster for ``executor: ray`` (the driver's side: ``ray_executor.py``): the
check that the node reaches the project and the models, and ``RunActor``, which holds a warm ``WorkerContext``
and one ``RunLoop`` for the whole job, fed runs by the driver. Nothing here imports Ray: the driver makes the
class an actor (``ray.remote(RunActor)``)."""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import asdict

from pipeline.config import RunConfig
from pipeline.errors import ProjectError, RunFailed, TomopickError


def check_reach(cfg: RunConfig, node: str):
    """The open project, once this node has shown it reaches the project and the model files; else a
    ProjectError naming the node and the path."""
    from pipeline import copick_io

    where = f"Ray node {node}"
    hint = ("every node of the Ray cluster must see the project and the models at the same paths (a shared file "
            "system mounted alike on every node)")
    path = cfg.copick_config
    if not os.path.isfile(path):
        raise ProjectError(f"{where}: the copick config '{path}' does not exist there; {hint}")
    try:
        root = copick_io.open_project(path)
        copick_io.particle_objects(root)
    except TomopickError as exc:
        raise ProjectError(f"{where}: cannot open the copick project '{path}': {exc}; {hint}") from None
    overlay = copick_io.overlay_root(root)
    if not (overlay.is_dir() and os.access(overlay, os.W_OK)):
        raise ProjectError(f"{where}: the project's overlay root '{overlay}' (of '{path}') is not a writable folder "
                           f"there; {hint}")
    if cfg.has("segment"):
        for p in [*cfg.model.configs, *cfg.model.weights]:
            if not os.path.isfile(p):
                raise ProjectError(f"{where}: the model file '{p}' does not exist there; {hint}")
    return root


class RunActor:
    """One actor: a warm WorkerContext and a RunLoop in a thread, fed runs one at a time by the driver.

    Events (``("record", dict)``, ``("fatal", message)``, ``("exit", None)``) are kept in order; ``poll(since)``
    returns those after the first ``since``, with who this process is (``info``: its node, pid, worker name, and
    the error that kept it from starting, if one did).
    """

    def __init__(self, config_doc: dict, source: str, device_spec: str, name: str, cpus: int,
                 log_levels: dict[str, int]):
        import socket

        logging.basicConfig(format=f"%(asctime)s %(levelname)s {name} %(name)s: %(message)s", datefmt="%H:%M:%S")
        for logger, level in log_levels.items():  # the driver's: its -v, and the chatty libraries kept quiet
            logging.getLogger(logger).setLevel(level)
        node = socket.gethostname()  # the name Claims records as the host
        self.info = {"node": node, "pid": os.getpid(), "worker": f"{name}@{node}", "error": None,
                     "data_error": False}
        self.tasks: queue.Queue = queue.Queue()
        self.abort = threading.Event()
        self.events: list[tuple] = []
        self.changed = threading.Condition()
        try:
            from pipeline import own_process
            from pipeline.config import config_from_dict
            from pipeline.run.context import WorkerContext

            own_process.declare()  # the actor's process is tomopick's own

            if device_spec == "cpu":
                import torch

                torch.set_num_threads(cpus)
            cfg = config_from_dict(config_doc, source=source, check_files=False)
            cfg.evaluate = None  # the driver evaluates once every run is done
            root = check_reach(cfg, node)
            ctx = WorkerContext.open(cfg, device_spec, root=root)
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which stops the job with it
            self.info["error"] = str(exc) if isinstance(exc, ProjectError) else (
                f"Ray node {node}: the actor could not start on {device_spec}: {type(exc).__name__}: {exc}")
            self.info["data_error"] = isinstance(exc, ProjectError)
            return
        from pipeline.heap import describe

        # the loop thread allocates from the kept main heap only with one arena (MALLOC_ARENA_MAX=1: the driver's
        # runtime_env, a local instance it started, or the environment of `ray start`)
        self.info["worker"], self.info["heap"] = f"{name}@{node}:{ctx.device.torch_device}", describe()
        threading.Thread(target=self._loop, args=(ctx,), name="tomopick-actor-loop", daemon=True).start()

    def _emit(self, kind: str, payload) -> None:
        with self.changed:
            self.events.append((kind, payload))
            self.changed.notify_all()

    def _loop(self, ctx) -> None:
        from pipeline.run.loop import RunLoop

        def handed_out():
            while not self.abort.is_set():
                run_id = self.tasks.get()
                if run_id is None:
                    return
                yield run_id

        loop = RunLoop(ctx, abort=self.abort, worker=self.info["worker"],
                       on_record=lambda rec: self._emit("record", asdict(rec)))
        try:
            loop.run(handed_out())
        except RunFailed as exc:
            self._emit("fatal", str(exc))
        except BaseException as exc:  # noqa: BLE001 - a bug: the driver reports it and stops the job
            self._emit("fatal", f"{type(exc).__name__}: {exc}")
        finally:
            self._emit("exit", None)

    def poll(self, since: int, timeout: float) -> tuple[dict, list]:
        with self.changed:
            self.changed.wait_for(lambda: len(self.events) > since, timeout=timeout)
            return self.info, self.events[since:]

    def give(self, run_id: str) -> None:
        self.tasks.put(run_id)

    def stop(self) -> None:
        """Take no more runs; those in flight finish or roll back, then the loop ends (and says so)."""
        self.abort.set()
        self.tasks.put(None)  # wakes a reader waiting for its next run
