"""The Ray executor on a two-node Ray cluster started here (head + one node, 1 CPU each: 2 actors), 6 small runs
with the demo model: the local executor's picks; an actor SIGKILLed mid-run or half-way through writing a run
loses nothing (every run done once, its picks whole, its done marker there, nothing half-written left)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import copick_io, overlay_files
from pipeline.config import config_from_dict
from tests.conftest import copy_project, is_allocator_setting
from tests.ray_hooks import CONTROL_ENV

needs_ray = pytest.mark.requires("ray")  # CI's TOMOPICK_REQUIRE=ray turns a skip into a failure

REPO = Path(__file__).resolve().parents[1]
RUNS = [f"TS_5_{i}" for i in range(6)]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    from pipeline.synthetic import make_synthetic_project

    return make_synthetic_project(tmp_path_factory.mktemp("ray_template") / "project", runs=len(RUNS),
                                  shape=(40, 72, 64), seed=5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head and one more node, 1 CPU each; every worker imports this checkout and runs tests.ray_hooks."""
    ray = pytest.importorskip("ray", reason='Ray is not installed: pip install "tomopick[ray]" (or the test extra)')
    from ray.cluster_utils import Cluster

    control = tmp_path_factory.mktemp("ray_control") / "control.json"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           CONTROL_ENV: str(control)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the nodes' processes, and so the workers, inherit these
    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        head.add_node(num_cpus=1)
        ray.init(address=head.address, runtime_env={"worker_process_setup_hook": "tests.ray_hooks.install"})
        yield control
    finally:
        ray.shutdown()
        head.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_cfg(config_path, out_dir, executor="local"):
    return config_from_dict({
        "copick_config": str(config_path),
        "device": "cpu",
        "executor": executor,
        "ray": {"cpus_per_actor": 1},
        "model": {"configs": [str(REPO / "configs/models/demo_unet.yaml")],
                  "weights": [str(REPO / "configs/models/demo_unet.pth")]},
        # fp32: identical picks whatever the thread count (an actor has 1 CPU, the local executor 2; bf16 sums
        # depend on it), so a difference can only be the executor's
        "segment": {"ntta": 1, "precision": "fp32"},
        "localize": {"n_procs": 1},
        "output": {"dir": str(out_dir), "on_error": "skip"},
    }, source="test_ray.yaml")


def all_picks(config_path) -> dict:
    root = copick_io.open_project(config_path)
    return {(run_id, o.name): copick_io.read_picks(root, run_id, o.name, "octopi", "1", 10.0)
            for run_id in RUNS for o in copick_io.particle_objects(root)}


def assert_same_picks(config_path, reference) -> None:
    picks = all_picks(config_path)
    assert picks.keys() == reference.keys()
    for key, pts in reference.items():
        np.testing.assert_array_equal(picks[key], pts, err_msg=str(key))  # same points, none twice, none lost
    assert sum(len(p) for p in picks.values()) > 0


def assert_runs_complete(cfg) -> None:
    from pipeline.run.select import marker_key

    root = copick_io.open_project(cfg.copick_config)
    logs = copick_io.overlay_root(root) / "logs"
    for run_id in RUNS:
        assert overlay_files.run_done_marker(root, run_id, marker_key(cfg)).is_file(), run_id
        assert not overlay_files.writing_marker(root, run_id, marker_key(cfg)).exists(), run_id
    assert not list(logs.glob("claim-*/*.json")), "claims left behind"


@pytest.fixture(scope="module")
def reference(template, tmp_path_factory):
    """The local executor's picks (and its project) for the same runs and settings."""
    from pipeline.run import run_pipeline

    path = copy_project(template, tmp_path_factory.mktemp("ray_ref") / "project")
    result = run_pipeline(make_cfg(path, path.parent / "out"), progress=False)
    assert [r.status for r in result.records] == ["done"] * len(RUNS)
    return path, all_picks(path)


def ray_executor(cfg):
    """(RayExecutor, the runs its cleanup was called for, each with whether it was half-written then)."""
    from pipeline.run.context import WorkerContext
    from pipeline.run.outputs import RunOutputs
    from pipeline.run.ray_executor import RayExecutor
    from pipeline.run.select import marker_key

    root = copick_io.open_project(cfg.copick_config)
    outputs = RunOutputs(root, cfg, WorkerContext.open(cfg, "cpu", root=root).objects)
    cleaned = []

    def cleanup(run_id):
        cleaned.append((run_id, overlay_files.writing_marker(root, run_id, marker_key(cfg)).is_file()))
        outputs.remove_partial(run_id)

    return RayExecutor(cfg, cleanup=cleanup, root=root), cleaned


@needs_ray
def test_ray_gives_the_local_picks_and_reports(cluster, template, reference, tmp_path):
    from pipeline.run import run_pipeline

    ref_path, ref_picks = reference
    path = copy_project(template, tmp_path / "project")
    cfg = make_cfg(path, tmp_path / "out", executor="ray")
    result = run_pipeline(cfg, progress=False)
    assert [r.run_id for r in result.records] == RUNS
    assert [r.status for r in result.records] == ["done"] * len(RUNS), [r.error for r in result.records]
    assert {r.worker.split("@")[0] for r in result.records} == {"ray0", "ray1"}  # both actors took runs
    assert_same_picks(path, ref_picks)
    assert_runs_complete(cfg)
    report = json.loads(result.report_path.read_text())
    assert report["summary"]["runs_done"] == len(RUNS)
    assert json.loads(result.manifest_path.read_text())["resolved_config"]["executor"] == "ray"

    # done is done, whichever executor did it: each skips the other's runs
    again = run_pipeline(make_cfg(path, tmp_path / "out"), progress=False)
    assert [r.status for r in again.records] == ["skipped-done"] * len(RUNS)
    again = run_pipeline(make_cfg(ref_path, tmp_path / "out_ref", executor="ray"), progress=False)
    assert [r.status for r in again.records] == ["skipped-done"] * len(RUNS)


@needs_ray
def test_a_ray_job_that_cannot_start_leaves_the_earlier_reports(cluster, template, tmp_path):
    """A cluster too small for one actor (2 CPUs, 4 per actor) stops the job before any run; the reports of the
    job before it (here stand-ins) are not replaced by a report of nothing."""
    from dataclasses import replace

    from pipeline.errors import ConfigError
    from pipeline.run import run_pipeline
    from pipeline.run.reports import manifest_path, report_path

    path = copy_project(template, tmp_path / "project")
    cfg = make_cfg(path, tmp_path / "out", executor="ray")
    cfg = replace(cfg, ray=replace(cfg.ray, cpus_per_actor=4), output=replace(cfg.output, overwrite=True))
    earlier = {report_path(cfg, tmp_path / "out"): '{"earlier": "report"}',
               manifest_path(cfg, tmp_path / "out"): '{"earlier": "manifest"}'}
    for file, text in earlier.items():
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
    with pytest.raises(ConfigError, match=r"the Ray cluster has 2 CPU\(s\), fewer than ray.cpus_per_actor \(4\)"):
        run_pipeline(cfg, progress=False)
    assert {file: file.read_text() for file in earlier} == earlier
    assert not any(len(p) for p in all_picks(path).values())  # no picks written
    root = copick_io.open_project(path)
    assert not list((copick_io.overlay_root(root) / "logs").glob("claim-*/*.json")), "claims left behind"


@needs_ray
def test_actors_without_one_arena_are_named_in_a_warning(cluster, template, reference, tmp_path, monkeypatch, caplog):
    """The driver's environment sets MALLOC_ARENA_MAX (so it passes none to the actors), the nodes' does not."""
    from pipeline.heap import one_arena_env

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    if not one_arena_env():
        pytest.skip("this environment chose the allocator: the driver would not pass one arena in any case")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "1")  # the driver's only: the cluster's nodes started without it
    path = copy_project(template, tmp_path / "project")
    cfg = make_cfg(path, tmp_path / "out", executor="ray")
    executor, _ = ray_executor(cfg)
    with caplog.at_level("WARNING", logger="pipeline.run.ray_executor"):
        records = executor.run(RUNS[:2])
    assert [r.status for r in records] == ["done"] * 2, [r.error for r in records]
    assert {info["heap"] for info in executor.started} == {"freed memory kept"}
    warnings = [r.getMessage() for r in caplog.records if "many arenas" in r.getMessage()]
    assert len(warnings) == 1 and "export the same settings before `ray start`" in warnings[0], warnings


def _kill_first_claimant(cfg, killed: list, stop: threading.Event) -> None:
    """SIGKILL the process named by the first claim to appear: an actor in the middle of a run."""
    from pipeline.run.select import marker_key

    root = copick_io.open_project(cfg.copick_config)
    claims = copick_io.overlay_root(root) / "logs" / f"claim-{marker_key(cfg)}"
    while not stop.is_set():
        for path in claims.glob("*.json"):
            holder = overlay_files.read_json(path)
            if holder and holder.get("pid"):
                os.kill(int(holder["pid"]), signal.SIGKILL)
                killed.append((int(holder["pid"]), path.stem))
                return
        time.sleep(0.005)


@needs_ray
def test_actor_killed_mid_run_loses_nothing(cluster, template, reference, tmp_path):
    path = copy_project(template, tmp_path / "project")
    cfg = make_cfg(path, tmp_path / "out", executor="ray")
    executor, _ = ray_executor(cfg)
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_first_claimant, args=(cfg, killed, stop), daemon=True)
    killer.start()
    try:
        records = executor.run(RUNS)
    finally:
        stop.set()
        killer.join()
    assert killed, "no actor was killed"
    # every actor, the replacement too, segments in its loop thread from the kept heap with one arena
    from pipeline.heap import one_arena_env

    heaps = [info["heap"] for info in executor.started]
    assert len(heaps) >= 2, executor.started  # a replacement reports too if it was ready before the end
    if one_arena_env():  # else the user's allocator settings, which the actors inherit, rule
        assert set(heaps) == {"freed memory kept, MALLOC_ARENA_MAX=1"}, heaps
    pid, run_id = killed[0]
    assert [d["pid"] for d in executor.deaths] == [pid]
    assert run_id in executor.deaths[0]["runs"]  # the run it held went back to the queue
    assert [r.run_id for r in records] == RUNS
    assert [r.status for r in records] == ["done"] * len(RUNS), [r.error for r in records]
    assert_same_picks(path, reference[1])
    assert_runs_complete(cfg)


@needs_ray
def test_actor_killed_while_writing_leaves_nothing_half_written(cluster, template, reference, tmp_path):
    victim = RUNS[3]
    cluster.write_text(json.dumps({"kill_writing": victim}))
    try:
        path = copy_project(template, tmp_path / "project")
        cfg = make_cfg(path, tmp_path / "out", executor="ray")
        executor, cleaned = ray_executor(cfg)
        records = executor.run(RUNS)
        killed_pid = int(Path(f"{cluster}.killed").read_text())
    finally:
        cluster.unlink(missing_ok=True)
        Path(f"{cluster}.killed").unlink(missing_ok=True)
    assert [(d["pid"], victim in d["runs"]) for d in executor.deaths] == [(killed_pid, True)]
    assert (victim, True) in cleaned  # it was half-written when the driver cleaned it up, before the retry
    assert [r.status for r in records] == ["done"] * len(RUNS), [r.error for r in records]
    assert_same_picks(path, reference[1])
    assert_runs_complete(cfg)


@needs_ray
def test_an_actor_that_cannot_reach_the_project_stops_the_job_naming_node_and_path(cluster, template, tmp_path):
    from pipeline.errors import ProjectError

    path = copy_project(template, tmp_path / "project")
    cfg = make_cfg(path, tmp_path / "out", executor="ray")
    executor, _ = ray_executor(cfg)
    moved = path.rename(path.with_name("moved.json"))  # as if the nodes did not mount the project's file system
    try:
        with pytest.raises(ProjectError, match=rf"Ray node \S+: the copick config '{path}' does not exist there; "
                                               "every node of the Ray cluster must see the project"):
            executor.run(RUNS[:1])
    finally:
        moved.rename(path)


def test_reach_check_names_the_node_and_the_path(template, tmp_path):
    """What each actor checks first (here without Ray): the project's config, the project, the model files."""
    from pipeline.errors import ProjectError
    from pipeline.run.ray_actor import check_reach

    path = copy_project(template, tmp_path / "project")
    cfg = make_cfg(path, tmp_path / "out")
    assert copick_io.overlay_root(check_reach(cfg, "node-7")).is_dir()
    path.write_text("{not json")
    with pytest.raises(ProjectError, match=rf"Ray node node-7: cannot open the copick project '{path}': .*not valid JSON"):
        check_reach(cfg, "node-7")
    path.unlink()
    with pytest.raises(ProjectError, match=rf"Ray node node-7: the copick config '{path}' does not exist there"):
        check_reach(cfg, "node-7")
    copy_project(template, tmp_path / "other")
    cfg = make_cfg(tmp_path / "other" / "config.json", tmp_path / "out")
    cfg.model.weights = [str(tmp_path / "absent.pth")]
    with pytest.raises(ProjectError, match=rf"Ray node node-7: the model file '{tmp_path}/absent.pth' does not exist"):
        check_reach(cfg, "node-7")


def test_an_address_where_nothing_listens_fails_at_once():
    from pipeline.errors import ConfigError
    from pipeline.run.ray_connect import _check_listening

    with pytest.raises(ConfigError, match=r"ray.address '127.0.0.1:1': cannot reach a Ray head there"):
        _check_listening("127.0.0.1:1", timeout=5)


LOCAL_INSTANCE = """
import json, os, ray
from pipeline.heap import one_arena_env
from pipeline.run.ray_connect import connect, workers_have
env = one_arena_env()
assert connect(ray, None) is True
try:
    @ray.remote(num_cpus=0)
    def arenas():
        return os.environ.get("MALLOC_ARENA_MAX")
    print(json.dumps({"env": env, "have": workers_have(env), "driver": os.environ.get("MALLOC_ARENA_MAX"),
                      "worker": ray.get(arenas.remote())}))
finally:
    ray.shutdown()
"""


@needs_ray
def test_a_local_instance_gives_every_worker_one_arena():
    """``ray.address: null``: the instance started here passes MALLOC_ARENA_MAX=1 to every worker from its start,
    so actors need no runtime_env (Ray's prestarted workers serve them); the driver's own environment is kept."""
    import subprocess
    import sys

    pytest.importorskip("ray")
    env = {k: v for k, v in os.environ.items()
           if not (is_allocator_setting(k) or k == "RAY_ADDRESS")}
    out = subprocess.run([sys.executable, "-c", LOCAL_INSTANCE], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if not got["env"]:
        pytest.skip("not glibc: no arena setting to pass")
    assert got == {"env": {"MALLOC_ARENA_MAX": "1"}, "have": True, "driver": None, "worker": "1"}, got
