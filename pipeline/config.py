"""The run config schema (``python run_all.py configs/x.yaml``): dataclasses, the ONLY place defaults live.

Every entry point builds a ``RunConfig``: ``run_all.py`` / ``tomopick run`` from a YAML file, ``tomopick
segment`` / ``localize`` / ``evaluate`` from their flags (which default to None and are laid over these
dataclasses by ``config_from_dict``). Relative paths in a YAML file are resolved against the folder of that
file, so a config works from any working directory. Validation errors name the file, the key, the value
received and what to do.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline import schema
from pipeline.errors import ConfigError, SelectorError
from pipeline.selectors import parse_run_ids, parse_seg_info

STAGES = ("segment", "localize")  # in the order a run goes through them
DEFAULT_SEGMENTATION = "predict,octopi,1"  # octopi's --seg-info: what segment writes and localize reads
MAX_NTTA = 8  # octopi's eight test-time transforms


@dataclass
class SyntheticConfig:
    """Make a synthetic project at ``out`` when it does not exist yet (the demo; ``tomopick synth``)."""

    out: str = "demo_output/project"
    runs: int = 2
    shape: list = field(default_factory=lambda: [96, 128, 128])
    seed: int = 0
    snr: float = 2.0
    density: float = 1.0
    write_label_map: bool = True  # the ground-truth label map as segmentation targets:data-portal/0


@dataclass
class ModelConfig:
    configs: list = field(default_factory=list)  # octopi model YAMLs; one may serve several weights
    weights: list = field(default_factory=list)  # state_dict .pth files


@dataclass
class SegmentConfig:
    """Segmentation settings; fast-mode tiling defaults chosen on the quality gate (benchmarks/RESULTS.md)."""

    mode: str = "fast"  # fast | compat (octopi 1.7's windows, blending and precision: the yardstick)
    ntta: int = 4  # octopi's test-time transforms, 1..8
    overlap: float = 0.5  # compat: MONAI's window overlap
    window_batch: int = 4  # network inputs per forward pass
    # auto: fast mode bf16 autocast on CPUs with AMX or AVX512-BF16, else fp32; compat fp32 on the CPU; fp16 on CUDA
    precision: str = "auto"  # auto | fp32 | fp16 | bf16
    runtime: str = "torch"  # torch | compile | onnxruntime | openvino (CPU) | cudagraphs | tensorrt (CUDA)
    window_scale: float = 1.5  # fast: largest window side as a multiple of the model's dim_in (1: dim_in)
    margin: int = 0  # fast: least overlap in voxels of the kept parts of neighbouring windows
    border_scale: float = 0.125  # fast: band discarded at inner window faces, a fraction of dim_in (8 at 64)
    blend: str = "gaussian"  # fast: gaussian | constant window weights
    sigma_scale: float = 0.125  # fast: Gaussian sigma as a fraction of the window side
    write_segmentation: str | None = DEFAULT_SEGMENTATION  # NAME,USER_ID,SESSION_ID, or null to not write it
    save_probabilities: str | None = None  # folder for per-run HDF5 probabilities
    nonfinite: str = "error"  # NaN/inf voxels in a tomogram: error (the run fails, naming them) | zero (set to 0)


@dataclass
class LocalizeConfig:
    method: str = "watershed"  # a method of pipeline/localize/methods.py: watershed | com | peaks
    filter_size: int = 10
    radius_min_scale: float = 0.5
    radius_max_scale: float = 1.0
    pick_objects: list | None = None  # null: every particle object the segmentation has
    pick_user_id: str = "octopi"
    pick_session_id: str = "1"
    n_procs: int = 8  # CPU worker threads (classes in parallel)
    segmentation: str = DEFAULT_SEGMENTATION  # NAME,USER_ID,SESSION_ID read when the segment stage is off
    label: int | None = None  # one label value read for every object (octopi's -lbl); null: the objects' own
    probabilities: str | None = None  # peaks without the segment stage: folder of <run>.h5 (save_probabilities)
    # peaks: per object class (an object's own entry, else "default"), in [0, 1] / in units of its radius
    thresholds: dict = field(default_factory=lambda: {"default": 0.3})  # peak probability kept
    smoothing: dict = field(default_factory=lambda: {"default": 0.25})  # Gaussian sigma / radius
    peak_window: dict = field(default_factory=lambda: {"default": 1.0})  # local-maximum window side / radius
    tuned: str | None = None  # a YAML file written by `tomopick tune`: its localize block, under the keys given here


@dataclass
class EvaluateConfig:
    ground_truth_user_id: str = "data-portal"
    ground_truth_session_id: str | None = None  # null: any session of that user (as octopi)
    metric: str = "octopi"  # octopi | czii
    distance_threshold_scale: float | None = None  # 0.8 (octopi) / 0.5 (czii) when null
    beta: float = 4.0
    save_path: str = "scores"  # relative to output.dir (run_all) or the working directory (tomopick evaluate)
    object_names: list | None = None  # null: the objects picked (run_all) / every particle object (evaluate)
    min_score: float | None = None  # leave out predicted picks scored lower (see each method's score)


@dataclass
class OutputConfig:
    dir: str | None = None  # reports, manifest and scores; default <overlay_root>/tomopick
    report: str = "throughput.json"  # relative to dir
    overwrite: bool = False  # redo runs that are done (and replace their outputs)
    on_error: str = "raise"  # raise | skip


@dataclass
class RayConfig:
    """``executor: ray``: the cluster to use and how runs are spread over it (pipeline/run/ray_executor.py)."""

    address: str | None = None  # auto (the cluster of this node) | HOST:PORT | ray://HOST:PORT | null: a local one
    cpus_per_actor: int = 4  # CPU-only clusters: one actor (one loaded model, this many torch threads) per N CPUs
    retries: int = 2  # a run whose actor died is handed out again up to this often; a dead actor restarts as often


@dataclass
class ShowConfig:
    """``tomopick show`` (not a run-config block)."""

    z: list | None = None  # z slices; null: chosen through the picks
    num_slices: int = 3
    slab: int = 1
    output: str = "show"


@dataclass
class ExportConfig:
    """``tomopick export`` (not a run-config block); which picks: localize's pick_user_id / pick_session_id."""

    format: str = "star"  # star (RELION 5, one file per object) | csv (the CZII challenge's submission)
    min_score: float | None = None  # keep picks whose score is at least this


@dataclass
class RunConfig:
    copick_config: str | None = None
    synthetic: SyntheticConfig | None = None
    voxel_size: float = 10.0
    tomo_alg: str = "wbp"
    run_ids: list | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    stages: list = field(default_factory=lambda: list(STAGES))  # segment and/or localize
    read_ahead: int = 1  # runs read ahead of the one being processed
    model: ModelConfig = field(default_factory=ModelConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    localize: LocalizeConfig = field(default_factory=LocalizeConfig)
    evaluate: EvaluateConfig | None = None  # omit the block to skip evaluation
    output: OutputConfig = field(default_factory=OutputConfig)
    shard: str | None = None  # "K/N": this job takes runs K, K+N, ... (K from 0)
    executor: str = "local"  # local (this node: one process, or one per GPU) | ray (a Ray cluster's actors)
    ray: RayConfig = field(default_factory=RayConfig)
    source: str = "<dict>"  # the YAML file or command this came from (not a YAML key)

    def shard_index(self) -> tuple[int, int] | None:
        return parse_shard(self.shard, self.source) if self.shard else None

    def has(self, stage: str) -> bool:
        return stage in self.stages


_CHOICES = {
    ("", "executor"): ("local", "ray"),
    ("segment", "mode"): ("fast", "compat"),
    ("segment", "precision"): ("auto", "fp32", "fp16", "bf16"),
    ("segment", "nonfinite"): ("error", "zero"),
    ("segment", "runtime"): ("torch", "compile", "onnxruntime", "openvino", "cudagraphs", "tensorrt"),
    ("segment", "blend"): ("gaussian", "constant"),
    ("evaluate", "metric"): ("octopi", "czii"),
    ("output", "on_error"): ("raise", "skip"),
    ("export", "format"): ("star", "csv"),
}


def choices(section: str, key: str) -> tuple[str, ...]:
    """The allowed values of a key (for the CLI's ``choices=``); localize methods come from their registry."""
    if (section, key) == ("localize", "method"):
        from pipeline.localize.methods import method_names

        return method_names()
    return _CHOICES[(section, key)]


def _choices_or_none(section: str, key: str):
    return choices(section, key) if (section, key) in _CHOICES or (section, key) == ("localize", "method") else None


def build(cls, data: dict, source: str, prefix: str = ""):
    """One config dataclass from a mapping, every key and value checked (also for ``tomopick show|synth``)."""
    return schema.build(cls, data, source, prefix, _choices_or_none)


def default(cls, name: str):
    """The default of field ``name`` of config dataclass ``cls`` (for the CLI's help texts)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def parse_shard(text, source: str = "config") -> tuple[int, int]:
    try:
        k, n = (int(p) for p in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"{source}: shard {text!r} should be 'K/N' with integers, e.g. '0/4'") from None
    if n < 1 or not 0 <= k < n:
        raise ConfigError(f"{source}: shard {text!r} needs 0 <= K < N (K counts from 0), e.g. '0/4' .. '3/4'")
    return k, n


def _resolve(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def check_copick_id(value: str, where: str, source: str) -> None:
    """A user or session id tomopick writes under: copick names files ``{user}_{session}_{object}.json`` and
    splits them on ``_`` when it lists them, so an id with ``_`` would be stored under one name and found under
    another (evaluation would then find nothing, and every rerun would redo every run)."""
    if "_" in str(value):
        raise ConfigError(f"{source}: {where} {value!r} contains '_', which copick uses to separate user, session "
                          f"and object in its file names; use e.g. {str(value).replace('_', '-')!r}")
    if not str(value).strip():
        raise ConfigError(f"{source}: {where} is empty; give a copick user / session id")


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


def _check_localize(loc: LocalizeConfig, source: str) -> None:
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
    for key, low, high in (("thresholds", 0.0, 1.0), ("smoothing", 0.0, 10.0), ("peak_window", 0.01, 10.0)):
        mapping = {**default(LocalizeConfig, key), **getattr(loc, key)}  # an entry per object, over the default
        bad = {k: v for k, v in mapping.items() if not low <= v <= high}
        if bad:
            raise ConfigError(f"{source}: 'localize.{key}' has {bad}; each value should be in [{low:g}, {high:g}]")
        setattr(loc, key, mapping)


def _check_evaluate(ev: EvaluateConfig, source: str) -> None:
    if not ev.beta > 0:
        raise ConfigError(f"{source}: 'evaluate.beta' should be > 0 (4 weighs recall as the challenge), got {ev.beta}")
    dts = ev.distance_threshold_scale
    if dts is not None and not dts > 0:
        raise ConfigError(f"{source}: 'evaluate.distance_threshold_scale' should be > 0 (a fraction of the radius, "
                          f"e.g. 0.8), got {dts}")
    ev.object_names = parse_run_ids(ev.object_names)


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
        for key, paths in (("model.configs", m.configs), ("model.weights", m.weights)):
            for p in paths:
                if not Path(p).is_file():
                    raise ConfigError(f"{source}: '{key}' file '{p}' does not exist; fix the path")


def _with_tuned(data: dict, source: str, base: Path) -> dict:
    """``localize.tuned: FILE``: the ``localize`` block of FILE (written by ``tomopick tune``) laid under the
    ``localize`` keys given in the config itself, which win."""
    loc = data.get("localize")
    if not isinstance(loc, dict) or not loc.get("tuned"):
        return data
    path = Path(_resolve(str(loc["tuned"]), base))
    try:
        tuned = (yaml.safe_load(path.read_text()) or {}).get("localize")
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        raise ConfigError(f"{source}: 'localize.tuned' file '{path}': cannot read it ({exc}); give the YAML that "
                          "`tomopick tune` wrote") from None
    if not isinstance(tuned, dict):
        raise ConfigError(f"{source}: 'localize.tuned' file '{path}' has no 'localize:' block")
    return {**data, "localize": {**tuned, **loc, "tuned": str(path)}}


def config_from_dict(data: dict, source: str = "<dict>", base_dir: Path | None = None,
                     check_files: bool = True) -> RunConfig:
    """Build and validate a RunConfig; relative paths resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a YAML mapping at the top level, got {type(data).__name__}")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    data = _with_tuned(data, source, base)
    cfg = build(RunConfig, data, source)
    cfg.source = source

    if "evaluate" in data and data["evaluate"] is None:
        cfg.evaluate = EvaluateConfig()  # "evaluate:" with nothing under it = evaluate with defaults
    _check_stages(cfg, source)

    if cfg.copick_config is None and cfg.synthetic is None:
        raise ConfigError(f"{source}: give 'copick_config' (path to the project's JSON) or a 'synthetic' block")
    cfg.copick_config = _resolve(cfg.copick_config, base)
    if cfg.synthetic is not None:
        cfg.synthetic.out = _resolve(cfg.synthetic.out, base)
        if len(cfg.synthetic.shape) != 3 or not all(isinstance(s, int) and s >= 8 for s in cfg.synthetic.shape):
            raise ConfigError(f"{source}: 'synthetic.shape' should be [z, y, x] integers >= 8, "
                              f"got {cfg.synthetic.shape!r}")
        if cfg.copick_config is None:
            cfg.copick_config = str(Path(cfg.synthetic.out) / "config.json")
    elif check_files and not Path(cfg.copick_config).is_file():
        raise ConfigError(f"{source}: 'copick_config' file '{cfg.copick_config}' does not exist; fix the path")

    if cfg.has("segment"):
        _check_model(cfg, source, base, check_files)
    if not cfg.voxel_size > 0:
        raise ConfigError(f"{source}: 'voxel_size' should be > 0 Angstrom, got {cfg.voxel_size!r}")
    if cfg.read_ahead < 1:
        raise ConfigError(f"{source}: 'read_ahead' should be >= 1 run, got {cfg.read_ahead}")
    cfg.run_ids = parse_run_ids(cfg.run_ids)
    _check_segment(cfg.segment, source)
    cfg.segment.save_probabilities = _resolve(cfg.segment.save_probabilities, base)
    cfg.localize.probabilities = _resolve(cfg.localize.probabilities, base)
    _check_localize(cfg.localize, source)
    if cfg.evaluate is not None:
        _check_evaluate(cfg.evaluate, source)
    cfg.output.dir = _resolve(cfg.output.dir, base)
    if cfg.shard:
        parse_shard(cfg.shard, source)
    _check_executor(cfg, source)
    # asking for a GPU on a machine without one fails now, not after the project is opened
    from pipeline.device import resolve_device

    try:
        resolve_device(cfg.device)
    except Exception as exc:
        raise ConfigError(f"{source}: 'device': {exc}") from None
    return cfg


def overlay(base: dict, **sections) -> dict:
    """Lay values that are not None over a config dict: ``overlay(doc, segment={"ntta": args.ntta})``.

    The CLI's flags default to None, so a flag not given leaves the config's value (and its one default here).
    """
    out = dict(base)
    for key, value in sections.items():
        if isinstance(value, dict):
            given = {k: v for k, v in value.items() if v is not None}
            if given:  # an absent block stays absent: an empty 'evaluate' block would switch evaluation on
                out[key] = {**(out.get(key) or {}), **given}
        elif value is not None:
            out[key] = value
    return out


def load_config(path, overrides: dict | None = None, check_files: bool = True) -> RunConfig:
    """Read and validate a run config YAML; ``overrides`` (e.g. from --shard) replace top-level keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"run config '{path}': no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"run config '{path}': not valid YAML: {exc}") from None
    data = data or {}
    if isinstance(data, dict) and overrides:
        data = overlay(data, **overrides)
    return config_from_dict(data, source=str(path), base_dir=path.parent.resolve(), check_files=check_files)


def config_to_dict(cfg: RunConfig) -> dict:
    """The resolved config as plain data (for run_manifest.json and worker processes)."""
    out = dataclasses.asdict(cfg)
    out.pop("source", None)
    return out
