"""Validation of a run config's values (each message names the source, the key, the value and what to do); the
schema, defaults and choices themselves are in ``pipeline/config.py``."""

from __future__ import annotations

import math
import re
from pathlib import Path

import yaml

from pipeline.config import (
    MAX_NTTA,
    STAGES,
    EvaluateConfig,
    LocalizeConfig,
    RunConfig,
    SegmentConfig,
    _resolve,
    default,
)
from pipeline.errors import ConfigError, SelectorError
from pipeline.schema import _per_class
from pipeline.selectors import parse_run_ids, parse_seg_info

# the localize keys given per object class: key -> (its CLI flag, lowest and highest value)
PER_CLASS = {"thresholds": ("--threshold", 0.0, 1.0), "smoothing": ("--smoothing", 0.0, 10.0),
             "peak_window": ("--peak-window", 0.01, 10.0)}

def check_copick_id(value: str, where: str, source: str) -> None:
    """A user or session id tomopick writes under: copick names files ``{user}_{session}_{object}.json`` and
    splits them on ``_`` when it lists them, so an id with ``_`` would be stored under one name and found under
    another (evaluation would then find nothing, and every rerun would redo every run)."""
    if "_" in str(value):
        raise ConfigError(f"{source}: {where} {value!r} contains '_', which copick uses to separate user, session "
                          f"and object in its file names; use e.g. {str(value).replace('_', '-')!r}")
    if not str(value).strip():
        raise ConfigError(f"{source}: {where} is empty; give a copick user / session id")


def run_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a run name that every part of tomopick carries, or None: run lists (``-runs``,
    ``--run-names``) split on commas and whitespace and strip quotes and brackets, a STAR value is one word that
    must not look like STAR syntax, the challenge's CSV splits on commas, and copick makes the name a folder."""
    if not name:
        return "is empty"
    found = []
    if any(c.isspace() for c in name):
        found.append("contains whitespace, which a STAR file cannot hold in a value and run lists (-runs) split on")
    if "," in name:
        found.append("contains a comma, which run lists (-runs, --run-names) and the challenge's CSV split on")
    if any(c in name for c in "'\"[]"):
        found.append("contains a quote or bracket, which run lists strip (octopi's [a,b] form) and STAR/CSV "
                     "cannot hold")
    if "/" in name or "\\" in name:
        found.append("contains a path separator ('/' or '\\'), which would make it a folder path")
    if name.startswith("."):
        found.append("starts with '.', which would make it a hidden folder")
    elif name[0] in "_#" or name.startswith(("data_", "loop_")):
        found.append("starts with '_', '#', 'data_' or 'loop_', which a STAR file reads as its own syntax")
    return "; and ".join(found) or None


def run_name_like(name: str) -> str | None:
    """A run name without the problems of ``run_name_problem`` (spaces, commas and such as '_'), or None."""
    fixed = re.sub(r"[\s,'\"\[\]/\\]+", "_", name).strip("_").lstrip(".#_")
    for like in (fixed, f"run-{fixed}"):  # run-data_1: no longer read as a STAR block
        if fixed and run_name_problem(like) is None:
            return like
    return None


def _check_segment(s: SegmentConfig, source: str) -> None:
    if not 1 <= s.ntta <= MAX_NTTA:
        raise ConfigError(f"{source}: 'segment.ntta' should be 1..{MAX_NTTA} (octopi's test-time transforms), "
                          f"got {s.ntta}")
    if not 0 <= s.overlap < 1:
        raise ConfigError(f"{source}: 'segment.overlap' should be in [0, 1), got {s.overlap}")
    if s.window_batch < 1:
        raise ConfigError(f"{source}: 'segment.window_batch' should be >= 1, got {s.window_batch}")
    if s.margin < 0:
        raise ConfigError(f"{source}: 'segment.margin' should be >= 0 voxels, got {s.margin}")
    if not 0 <= s.border_scale < 0.5:
        raise ConfigError(f"{source}: 'segment.border_scale' should be in [0, 0.5) (a fraction of the model's "
                          f"dim_in), got {s.border_scale}")
    if not s.sigma_scale > 0:
        raise ConfigError(f"{source}: 'segment.sigma_scale' should be > 0, got {s.sigma_scale}")
    if not s.window_scale >= 1:
        raise ConfigError(f"{source}: 'segment.window_scale' should be >= 1 (a multiple of the model's dim_in), "
                          f"got {s.window_scale}")
    if s.write_segmentation is not None:
        try:
            seg = parse_seg_info(s.write_segmentation)
        except SelectorError as exc:
            raise ConfigError(f"{source}: 'segment.write_segmentation': {exc}") from None
        check_copick_id(seg.user_id, "the user id of 'segment.write_segmentation'", source)
        check_copick_id(seg.session_id, "the session id of 'segment.write_segmentation'", source)


def _check_localize(loc: LocalizeConfig, source: str, flags: bool = True) -> None:
    """``flags``: name the command line's flag beside a key (not for a tuned file's block)."""
    if loc.n_procs < 1:
        raise ConfigError(f"{source}: 'localize.n_procs' should be >= 1, got {loc.n_procs}")
    if loc.label is not None and not 1 <= loc.label <= 255:
        raise ConfigError(f"{source}: 'localize.label' should be a label value 1..255 of the segmentation, got "
                          f"{loc.label}")
    if loc.filter_size < 1:
        raise ConfigError(f"{source}: 'localize.filter_size' should be >= 1, got {loc.filter_size}")
    if not 0 <= loc.radius_min_scale <= loc.radius_max_scale:
        raise ConfigError(
            f"{source}: need 0 <= 'localize.radius_min_scale' <= 'localize.radius_max_scale', got "
            f"{loc.radius_min_scale} and {loc.radius_max_scale}"
        )
    for key in ("pick_user_id", "pick_session_id"):
        check_copick_id(getattr(loc, key), f"'localize.{key}'", source)
    try:
        parse_seg_info(loc.segmentation)
    except SelectorError as exc:
        raise ConfigError(f"{source}: 'localize.segmentation': {exc}") from None
    loc.pick_objects = parse_run_ids(loc.pick_objects)
    for key, (flag, low, high) in PER_CLASS.items():
        mapping = {**default(LocalizeConfig, key), **getattr(loc, key)}  # an entry per object, over the default
        bad = {k: v for k, v in mapping.items() if not low <= v <= high}
        if bad:
            flag = f" ({flag})" if flags else ""
            raise ConfigError(f"{source}: 'localize.{key}'{flag} has {bad}; each value should be in "
                              f"[{low:g}, {high:g}]")
        setattr(loc, key, mapping)


def _check_evaluate(ev: EvaluateConfig, source: str) -> None:
    if not ev.beta > 0:
        raise ConfigError(f"{source}: 'evaluate.beta' should be > 0 (4 weighs recall as the challenge), got {ev.beta}")
    dts = ev.distance_threshold_scale
    if dts is not None and not dts > 0:
        raise ConfigError(f"{source}: 'evaluate.distance_threshold_scale' should be > 0 (a fraction of the radius, "
                          f"e.g. 0.8), got {dts}")
    check_min_score(ev.min_score, "'evaluate.min_score' (--min-score)", source)
    ev.object_names = parse_run_ids(ev.object_names)


def check_min_score(value: float | None, where: str, source: str) -> None:
    """A score level is a finite number: NaN would drop every pick (it compares false), inf too, -inf none."""
    if value is not None and not math.isfinite(value):
        raise ConfigError(f"{source}: {where} should be a finite number (peaks scores lie in 0-1; watershed/com "
                          f"scores are region size over sphere volume), got {value}")


def _check_stages(cfg: RunConfig, source: str) -> None:
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"{source}: 'stages' has {unknown}; choose from {', '.join(STAGES)}")
    if len(set(cfg.stages)) != len(cfg.stages):
        raise ConfigError(f"{source}: 'stages' lists a stage twice: {cfg.stages}")
    if not cfg.stages and cfg.evaluate is None:
        raise ConfigError(f"{source}: no stage to run: 'stages' is empty and there is no 'evaluate' block")
    cfg.stages = [s for s in STAGES if s in cfg.stages]  # always in pipeline order


RAY_INSTALL = 'pip install "tomopick[ray]"'
_RAY_ADDRESS = re.compile(r"^(auto|local|(ray://)?[^\s:/]+:\d+)$")


def _check_executor(cfg: RunConfig, source: str) -> None:
    r = cfg.ray
    if r.address is not None and not _RAY_ADDRESS.match(r.address):
        raise ConfigError(f"{source}: 'ray.address' is {r.address!r}; give auto (the Ray cluster this node belongs "
                          "to), HOST:PORT of its head (e.g. 10.0.0.1:6379), ray://HOST:PORT, or null to start a "
                          "local Ray instance")
    if r.cpus_per_actor < 1:
        raise ConfigError(f"{source}: 'ray.cpus_per_actor' should be >= 1, got {r.cpus_per_actor}")
    if r.retries < 0:
        raise ConfigError(f"{source}: 'ray.retries' should be >= 0, got {r.retries}")
    if cfg.executor == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ConfigError(f"{source}: 'executor' is ray, but Ray is not installed here; install tomopick's "
                              f"ray extra ({RAY_INSTALL}) or use executor: local")


def _check_model(cfg: RunConfig, source: str, base: Path, check_files: bool) -> None:
    m = cfg.model
    if not m.weights:
        raise ConfigError(f"{source}: 'model.weights' is missing; give the .pth file(s) of the octopi model")
    if not m.configs:
        raise ConfigError(f"{source}: 'model.configs' is missing; give the octopi model config YAML(s)")
    if len(m.configs) != len(m.weights) and len(m.configs) != 1:
        raise ConfigError(
            f"{source}: 'model.configs' has {len(m.configs)} entries but 'model.weights' has {len(m.weights)}; "
            "give one config per weights file, or a single config for all of them"
        )
    m.configs = [_resolve(p, base) for p in m.configs]
    m.weights = [_resolve(p, base) for p in m.weights]
    if check_files:
        for key, flag, paths in (("model.configs", "-mc", m.configs), ("model.weights", "-mw", m.weights)):
            for p in paths:
                if not Path(p).is_file():
                    raise ConfigError(f"{source}: '{key}' ({flag}) file '{p}' does not exist; fix the path")


def _with_tuned(data: dict, source: str, base: Path) -> dict:
    """``localize.tuned: FILE``: the ``localize`` block of FILE (written by ``tomopick tune``) laid under the
    ``localize`` keys given in the config itself, which win."""
    loc = data.get("localize")
    if not isinstance(loc, dict) or not loc.get("tuned"):
        return data
    path = Path(_resolve(str(loc["tuned"]), base))
    tuned = read_tuned_block(path, f"{source}: 'localize.tuned' file '{path}'")
    merged = {**tuned, **loc, "tuned": str(path)}
    for key in PER_CLASS:  # ribosome=0.5 beside the file changes ribosome's only; a default given replaces them all
        if isinstance(tuned.get(key), dict) and key in loc:
            ok, given = _per_class(loc[key])
            if ok and "default" not in given:
                merged[key] = {**tuned[key], **given}
    return {**data, "localize": merged}




def read_tuned_block(path: Path, where: str) -> dict:
    """The ``localize`` block of a file that ``tomopick tune`` wrote, its keys, types and ranges checked here so
    that an error names the file (``where``), not the config or the flags it is laid under."""
    from pipeline.config import build

    try:
        tuned = (yaml.safe_load(path.read_text()) or {}).get("localize")
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        raise ConfigError(f"{where}: cannot read it ({exc}); give the YAML that `tomopick tune -o FILE` "
                          "wrote") from None
    if not isinstance(tuned, dict):
        raise ConfigError(f"{where}: has no 'localize:' block; give the YAML that `tomopick tune -o FILE` wrote")
    _check_localize(build(LocalizeConfig, tuned, where, "localize"), where, flags=False)
    return tuned


# run-config keys that one localize method, or one segment mode, reads; the others ignore them (also what
# a done marker records of the localize settings: select.localize_settings)
METHOD_SETTINGS = {"filter_size": ("watershed",), "radius_max_scale": ("watershed", "com"),
                   "thresholds": ("peaks",), "smoothing": ("peaks",), "peak_window": ("peaks",),
                   "overlap_check": ("peaks",)}
MODE_SETTINGS = {"overlap": "compat", "window_scale": "fast", "margin": "fast", "border_scale": "fast",
                 "blend": "fast", "sigma_scale": "fast"}


def warn_ignored_settings(data: dict, cfg: RunConfig, source: str) -> None:
    """One warning for keys written in a run config that its method or mode does not read (the CLI refuses its
    peaks flags with another method; a YAML key would otherwise be ignored without a word)."""
    import logging

    loc = data.get("localize") if isinstance(data.get("localize"), dict) else {}
    seg = data.get("segment") if isinstance(data.get("segment"), dict) else {}
    ignored = [f"localize.{k} (read by {' and '.join(METHOD_SETTINGS[k])})" for k in loc
               if k in METHOD_SETTINGS and cfg.localize.method not in METHOD_SETTINGS[k]]
    if loc.get("tuned") and cfg.localize.method not in METHOD_SETTINGS["thresholds"]:  # the method given wins
        ignored.append(f"localize.tuned (its peaks settings; read by {' and '.join(METHOD_SETTINGS['thresholds'])})")
    ignored += [f"segment.{k} (read in mode {MODE_SETTINGS[k]})" for k in seg
                if k in MODE_SETTINGS and cfg.segment.mode != MODE_SETTINGS[k]]
    if ignored:
        logging.getLogger("tomopick.config").warning(
            "%s: %s %s no effect with localize.method %s and segment.mode %s; leave %s out, or change the method "
            "/ mode", source, ", ".join(ignored), "has" if len(ignored) == 1 else "have", cfg.localize.method,
            cfg.segment.mode, "it" if len(ignored) == 1 else "them")
