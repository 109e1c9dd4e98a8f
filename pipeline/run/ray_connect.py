"""Reaching a Ray cluster for ``executor: ray``: import Ray (or say which extra installs it), connect to the
address asked for (or start a local instance), and size the actors to the cluster's GPUs or CPUs."""

from __future__ import annotations

import logging
import os
import signal
import threading

from pipeline.config import RunConfig
from pipeline.config_checks import RAY_INSTALL
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

# whether the Ray instance this process started gave every worker process one glibc arena from its start (then
# actors need no runtime_env of their own, and Ray's prestarted workers serve them: ~0.7 s sooner each)
_local_workers_env: dict[str, str] = {}


def workers_have(env: dict[str, str]) -> bool:
    """True when the local Ray instance this process started passed ``env`` to all its workers."""
    return bool(env) and all(_local_workers_env.get(k) == v for k, v in env.items())


def _first_lines(exc, n: int = 3, width: int = 300) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines()[:n] if line.strip())
    return text[:width]


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(f"executor: ray needs Ray, which is not installed here; install it with {RAY_INSTALL}, "
                          "or use executor: local") from None
    return ray


def connect(ray, address: str | None) -> bool:
    """Connect to (or start) Ray; True when this call did, so the caller shuts it down again."""

    if ray.is_initialized():
        log.info("Ray is connected already in this process; its cluster is used (ray.address is not looked at)")
        return False
    # ray.init installs its own SIGTERM handler: keep ours (Terminated: stop cleanly and write the report)
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    try:
        if address in (None, "local"):
            from pipeline.heap import one_arena_env

            # the instance's raylet, and so every worker it starts, inherits this process's environment
            env = one_arena_env()
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            _local_workers_env.clear()
            _local_workers_env.update(env)
        else:
            _local_workers_env.clear()
            if address != "auto":
                _check_listening(address)
            ray.init(address=address, logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise ConfigError(f"ray.address {address!r}: no Ray cluster found there ({exc}); start one (ray start "
                          "--head, see the README) or leave ray.address null for a local one") from None
    finally:
        if main and sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)
    log.info("Ray cluster: %s", {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")})
    return True


def _check_listening(address: str, timeout: float = 10.0) -> None:
    """Fail at once, with the reason, where nothing listens at HOST:PORT (ray.init would retry for minutes)."""
    import socket

    host, port = address.removeprefix("ray://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(f"ray.address {address!r}: cannot reach a Ray head there ({exc}); check the host and port "
                          "(ray start --head prints them), or use auto on a node of the cluster") from None


def plan_actors(ray, cfg: RunConfig, n_runs: int) -> tuple[int, dict, str, int]:
    """(number of actors, their Ray resources, their device, their torch threads) for this cluster."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    spec = (cfg.device or "auto").lower()
    if spec != "cpu" and gpus:
        return min(gpus, n_runs), {"num_gpus": 1, "num_cpus": 1}, "cuda", 1
    if spec.startswith("cuda"):
        raise ConfigError(f"{cfg.source}: device is {cfg.device!r}, but the Ray cluster has no GPU; use device: auto "
                          "(GPUs where the cluster has them) or cpu")
    per = cfg.ray.cpus_per_actor
    if cpus < per:
        raise ConfigError(f"{cfg.source}: the Ray cluster has {cpus} CPU(s), fewer than ray.cpus_per_actor ({per}); "
                          "lower ray.cpus_per_actor (--ray-cpus-per-actor) or add nodes")
    return min(cpus // per, n_runs), {"num_cpus": per}, "cpu", per
