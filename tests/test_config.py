"""Run config validation: every error names the file, the key, the value and the fix; defaults live in config.py."""

from __future__ import annotations

import pytest
import yaml

from pipeline.config import RunConfig, config_from_dict, load_config
from pipeline.errors import ConfigError


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "m.yaml").write_text("model: {}\n")
    (tmp_path / "a.pth").write_bytes(b"")
    (tmp_path / "b.pth").write_bytes(b"")
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


def write(tmp_path, doc) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def base(**extra):
    doc = {"copick_config": "config.json", "model": {"configs": ["m.yaml"], "weights": ["a.pth"]}}
    doc.update(extra)
    return doc


def test_defaults_and_relative_paths(files):
    cfg = load_config(write(files, base()))
    assert isinstance(cfg, RunConfig)
    assert cfg.copick_config == str((files / "config.json").resolve())
    assert cfg.model.weights == [str((files / "a.pth").resolve())]
    assert (cfg.voxel_size, cfg.tomo_alg, cfg.device) == (10.0, "wbp", "auto")
    assert (cfg.segment.mode, cfg.segment.ntta, cfg.segment.overlap, cfg.segment.window_batch) == ("fast", 4, 0.5, 4)
    assert cfg.segment.write_segmentation == "predict,octopi,1"
    assert (cfg.localize.method, cfg.localize.filter_size, cfg.localize.n_procs) == ("watershed", 10, 8)
    assert (cfg.localize.pick_user_id, cfg.localize.pick_session_id) == ("octopi", "1")
    assert cfg.evaluate is None  # no block: no evaluation
    assert (cfg.output.overwrite, cfg.output.on_error) == (False, "raise")


def test_evaluate_block_with_defaults(files):
    cfg = load_config(write(files, base(evaluate=None)))
    assert cfg.evaluate is not None and cfg.evaluate.metric == "octopi" and cfg.evaluate.beta == 4.0
    cfg = load_config(write(files, base(evaluate={"metric": "czii"})))
    assert cfg.evaluate.metric == "czii" and cfg.evaluate.ground_truth_user_id == "data-portal"


def test_one_config_for_several_weights(files):
    cfg = load_config(write(files, base(model={"configs": ["m.yaml"], "weights": ["a.pth", "b.pth"]})))
    assert len(cfg.model.weights) == 2


@pytest.mark.parametrize(
    "doc, match",
    [
        (base(colour="red"), r"run.yaml: unknown key 'colour'; valid keys: .*copick_config"),
        (base(segment={"ntta": "four"}), r"'segment.ntta' should be int, got str 'four'"),
        (base(segment={"ntta": 9}), r"'segment.ntta' should be 1..8 .*, got 9"),
        (base(segment={"mode": "turbo"}), r"'segment.mode' is 'turbo'; choose one of fast, compat"),
        (base(segment={"overlap": 1.5}), r"'segment.overlap' should be in \[0, 1\)"),
        (base(segment={"write_segmentation": "a,b"}), r"segment.write_segmentation.*NAME,USER_ID,SESSION_ID"),
        (base(localize={"method": "magic"}), r"'localize.method' is 'magic'; choose one of watershed, com"),
        (base(localize={"radius_min_scale": 2.0}), r"radius_min_scale.*<=.*radius_max_scale"),
        (base(localize={"typo": 1}), r"unknown key 'localize.typo'; valid keys under localize"),
        (base(localize={"thresholds": "ribosome=abc"}),
         r"'localize.thresholds' should be a number or a number per object class .*default=0.25,ribosome=0.4\), "
         r"got str 'ribosome=abc'"),
        (base(localize={"smoothing": {"ribosome": "wide"}}), r"'localize.smoothing' should be a number or a number"),
        (base(localize={"thresholds": {"ribosome": 1.5}}),  # a peak probability; the flag named for the CLI
         r"'localize.thresholds' \(--threshold\) has \{'ribosome': 1.5\}; each value should be in \[0, 1\]"),
        (base(localize={"peak_window": 0}), r"'localize.peak_window' \(--peak-window\) has \{'default': 0.0\}"),
        (base(localize={"thresholds": "default=0.3,ribosome=0.4, ribosome=0.5"}),  # the last won, silently
         r"'localize.thresholds' names 'ribosome' twice \(0.4 and 0.5\); give each object once"),
        (base(output={"on_error": "ignore"}), r"'output.on_error' is 'ignore'; choose one of raise, skip"),
        (base(output={"overwrite": "yes"}), r"'output.overwrite' should be bool, got str"),
        (base(copick_config="nope.json"), r"'copick_config' \(-c\) file '.*nope.json' does not exist"),
        (base(model={"configs": ["m.yaml"], "weights": ["missing.pth"]}), r"'model.weights' \(-mw\) file .*missing.pth"),
        (base(model={"configs": ["m.yaml", "m.yaml"], "weights": ["a.pth", "b.pth", "a.pth"]}),
         r"'model.configs' has 2 entries but 'model.weights' has 3"),
        (base(model={"configs": ["m.yaml"]}), r"'model.weights' is missing"),
        (base(shard="3/2"), r"shard '3/2' needs 0 <= K < N \(K counts from 0\): '0/2' \.\. '1/2'$"),
        (base(shard="7/6"), r"shard '7/6' needs 0 <= K < N \(K counts from 0\): '0/6' \.\. '5/6'$"),
        (base(shard="0/0"), r"shard '0/0' needs N >= 1 shards"),
        (base(shard="x"), r"shard 'x' should be 'K/N'"),
        (base(device="tpu"), r"'device': device 'tpu': expected auto, cpu, cuda or cuda:N"),
        (base(voxel_size=-1), r"'voxel_size' should be > 0"),
        ({"model": {"configs": ["m.yaml"], "weights": ["a.pth"]}}, r"give 'copick_config'"),
        (base(executor="slurm"), r"'executor' is 'slurm'; choose one of local, ray"),
        (base(ray={"address": "head node:6379"}), r"'ray.address' is 'head node:6379'; give auto .*HOST:PORT"),
        (base(ray={"cpus_per_actor": 0}), r"'ray.cpus_per_actor' should be >= 1, got 0"),
        (base(ray={"retries": -1}), r"'ray.retries' should be >= 0, got -1"),
        (base(ray={"adress": "auto"}), r"unknown key 'ray.adress'; valid keys under ray: address, cpus_per_actor"),
    ],
)
def test_validation_errors(files, doc, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(files, doc))


def test_gpu_asked_without_one(files):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="'device'.*no CUDA device.*use device 'cpu' or 'auto'"):
        load_config(write(files, base(device="cuda")))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml': not valid YAML"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level"):
        load_config(top)


def test_synthetic_block_sets_project_path(files):
    doc = base(synthetic={"out": "demo/project", "runs": 1, "shape": [16, 32, 24]})
    del doc["copick_config"]
    cfg = load_config(write(files, doc))
    assert cfg.copick_config == str((files / "demo" / "project" / "config.json").resolve())
    with pytest.raises(ConfigError, match="synthetic.shape"):
        load_config(write(files, {**doc, "synthetic": {"shape": [4, 4]}}))


def test_overrides_replace_keys(files):
    cfg = load_config(write(files, base()), overrides={"shard": "1/3", "device": "cpu"})
    assert cfg.shard_index() == (1, 3) and cfg.device == "cpu"


def test_executor_defaults_and_overrides(files):
    cfg = load_config(write(files, base()))
    assert (cfg.executor, cfg.ray.address, cfg.ray.cpus_per_actor, cfg.ray.retries) == ("local", None, 4, 2)
    for address in ("auto", "local", "10.0.0.1:6379", "head-01:6379", "ray://head-01:10001"):
        cfg = load_config(write(files, base(ray={"address": address, "retries": 0})))
        assert cfg.ray.address == address and cfg.ray.retries == 0


def test_ray_asked_for_without_ray_names_the_extra(files, monkeypatch):
    import importlib.util
    import sys

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ConfigError, match=r"'executor' is ray, but Ray is not installed.*pip install \"tomopick\[ray\]\""):
        load_config(write(files, base(executor="ray")))
    assert load_config(write(files, base())).executor == "local"  # local needs no Ray

    from pipeline.run.ray_connect import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # an import of ray now fails
    with pytest.raises(ConfigError, match=r"pip install \"tomopick\[ray\]\""):
        import_ray()


def test_run_flags_lay_executor_over_the_config(files, monkeypatch):
    """`tomopick run` and run_all.py: --executor / --ray-address replace the config's; not given, they leave it."""
    import run_all
    from pipeline.cli import build_parser
    from pipeline.cli import run as run_cli

    seen = []
    monkeypatch.setattr("pipeline.run.run_pipeline", lambda cfg: seen.append(cfg) or None)
    monkeypatch.setattr("pipeline.cli.common.print_summary", lambda result: 0)
    path = write(files, base(ray={"address": "auto", "cpus_per_actor": 2}))
    run_cli.run(build_parser().parse_args(["run", path]))
    run_cli.run(build_parser().parse_args(["run", path, "--executor", "ray", "--ray-address", "10.0.0.1:6379"]))
    assert [(c.executor, c.ray.address, c.ray.cpus_per_actor) for c in seen] == [
        ("local", "auto", 2), ("ray", "10.0.0.1:6379", 2)]
    forwarded = []
    monkeypatch.setattr("pipeline.cli.main", lambda argv: forwarded.append(argv) or 0)
    run_all.main([path, "--executor", "ray", "--ray-address", "auto"])
    run_all.main([path])
    assert forwarded == [["run", path, "--executor", "ray", "--ray-address", "auto"], ["run", path]]


def test_run_config_keys_that_the_method_or_mode_ignores_are_named(tmp_path, caplog):
    import logging

    from tests.faultlib import run_doc

    doc = run_doc(tmp_path / "config.json", segment={"overlap": 0.25}, localize={"method": "watershed",
                                                                                 "thresholds": {"default": 0.3},
                                                                                 "overlap_check": False})
    caplog.set_level(logging.WARNING)
    config_from_dict(doc, source="my.yaml", check_files=False)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("my.yaml: localize.thresholds (read by peaks), localize.overlap_check (read by peaks), "
                           "segment.overlap (read in mode compat) have no effect with localize.method watershed and "
                           "segment.mode fast"), line
    caplog.clear()
    doc = run_doc(tmp_path / "config.json", segment={"mode": "compat", "overlap": 0.25},
                  localize={"method": "peaks", "thresholds": {"default": 0.3}})
    config_from_dict(doc, source="my.yaml", check_files=False)  # each read by its method / mode
    config_from_dict(run_doc(tmp_path / "config.json", localize={"method": "peaks", "filter_size": 5}),
                     source="tomopick localize", check_files=False)  # a command's flags: its own checks
    assert not caplog.records


@pytest.mark.parametrize("given, expected", [
    # a class named beside the tuned file changes that class only; the tuned ones stay
    ({"thresholds": {"ribosome": 0.5}}, {"apo-ferritin": 0.4, "ribosome": 0.5, "thyroglobulin": 0.3}),
    ({"thresholds": "ribosome=0.5"}, {"apo-ferritin": 0.4, "ribosome": 0.5, "thyroglobulin": 0.3}),  # the flag
    # a default given is a value for every class: it replaces the tuned ones, as it always did
    ({"thresholds": 0.35}, {"default": 0.35}),
    ({"thresholds": "default=0.35,ribosome=0.5"}, {"default": 0.35, "ribosome": 0.5}),
    ({}, {"apo-ferritin": 0.4, "ribosome": 0.25, "thyroglobulin": 0.3}),
])
def test_per_class_settings_given_beside_a_tuned_file_change_only_the_classes_they_name(files, given, expected):
    """`--tuned t.yaml --threshold ribosome=0.5` dropped every tuned threshold (apo-ferritin's 0.4 fell back to
    the default 0.25), where "flags given win" reads as: ribosome's does."""
    (files / "tuned.yaml").write_text(yaml.safe_dump({"localize": {
        "method": "peaks", "thresholds": {"apo-ferritin": 0.4, "ribosome": 0.25, "thyroglobulin": 0.3},
        "smoothing": {"apo-ferritin": 0.15}}}))
    cfg = load_config(write(files, base(localize={"tuned": "tuned.yaml", **given})))
    assert cfg.localize.thresholds == {"default": 0.25, **expected}
    assert cfg.localize.smoothing == {"default": 0.25, "apo-ferritin": 0.15}


def test_a_tuned_file_beside_another_method_is_named_as_such(files, caplog):
    """It warned about localize.thresholds, smoothing and peak_window ('leave them out'), keys the config never
    wrote: they came from the tuned file."""
    import logging

    (files / "tuned.yaml").write_text(yaml.safe_dump({"localize": {"method": "peaks",
                                                                   "thresholds": {"ribosome": 0.4}}}))
    caplog.set_level(logging.WARNING)
    load_config(write(files, base(localize={"method": "watershed", "tuned": "tuned.yaml"})))
    (line,) = [r.getMessage() for r in caplog.records]
    assert "localize.tuned (its peaks settings; read by peaks) has no effect with localize.method watershed" in line
    assert "localize.thresholds" not in line


def test_a_file_given_for_a_probabilities_folder_is_refused_when_the_config_is_read(files):
    """`--save-probabilities tuned.yaml` (a file there) failed each run after its segmentation (FileExistsError);
    `--probabilities probs/TS_1.h5` said the folder did not exist."""
    (files / "probs").mkdir()
    (files / "probs" / "TS_1.h5").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"'segment.save_probabilities' \(--save-probabilities\) '.*m.yaml' is a "
                                          r"file; give a folder for the <run>.h5 files"):
        load_config(write(files, base(segment={"save_probabilities": "m.yaml"})))
    with pytest.raises(ConfigError, match=r"'localize.probabilities' \(--probabilities\) '.*TS_1.h5' is a file; "
                                          r"give its folder '.*probs'"):
        load_config(write(files, base(stages=["localize"], localize={"method": "peaks",
                                                                     "probabilities": "probs/TS_1.h5"})))
