"""The run config schema (``python run_all.py configs/x.yaml``): dataclasses, the ONLY place defaults live.

Every entry point builds a ``RunConfig``: ``run_all.py`` / ``tomopick run`` from a YAML file, ``tomopick
segment`` / ``localize`` / ``evaluate`` from their flags (which default to None and are laid over these
dataclasses by ``config_from_dict``). Relative paths in a YAML file are resolved against the folder of that
file, so a config works from any working directory. Validation errors name the file, the key, the value
received and what to do.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline import schema
from pipeline.errors import ConfigError
from pipeline.selectors import parse_run_ids

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
    thresholds: dict = field(default_factory=lambda: {"default": 0.25})  # peak probability kept
    smoothing: dict = field(default_factory=lambda: {"default": 0.25})  # Gaussian sigma / radius
    peak_window: dict = field(default_factory=lambda: {"default": 1.0})  # local-maximum window side / radius
    overlap_check: bool = True  # peaks: a larger class's peak on a smaller class's particle is dropped (overlaps.py)
    tuned: str | None = None  # a YAML file written by `tomopick tune`: its localize block, under the keys given here
    # (per-class keys: the classes given here win one by one; a 'default' given replaces the file's per-class values)


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
    if n < 1:
        raise ConfigError(f"{source}: shard {text!r} needs N >= 1 shards, e.g. '0/4' .. '3/4' for 4")
    if not 0 <= k < n:
        raise ConfigError(f"{source}: shard {text!r} needs 0 <= K < N (K counts from 0): '0/{n}' .. '{n - 1}/{n}'")
    return k, n


def _resolve(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def config_from_dict(data: dict, source: str = "<dict>", base_dir: Path | None = None,
                     check_files: bool = True) -> RunConfig:
    """Build and validate a RunConfig; relative paths resolve against ``base_dir``."""
    from pipeline.config_checks import (
        _check_evaluate,
        _check_executor,
        _check_localize,
        _check_model,
        _check_segment,
        _check_stages,
        _with_tuned,
    )

    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a YAML mapping at the top level, got {type(data).__name__}")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    written, data = data, _with_tuned(data, source, base)
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
        raise ConfigError(f"{source}: 'copick_config' (-c) file '{cfg.copick_config}' does not exist; fix the path")

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
    if check_files:  # folders of <run>.h5 files: a file there would fail each run after its segmentation
        if cfg.segment.save_probabilities and Path(cfg.segment.save_probabilities).is_file():
            raise ConfigError(f"{source}: 'segment.save_probabilities' (--save-probabilities) "
                              f"'{cfg.segment.save_probabilities}' is a file; give a folder for the <run>.h5 files")
        if cfg.localize.probabilities and Path(cfg.localize.probabilities).is_file():
            raise ConfigError(f"{source}: 'localize.probabilities' (--probabilities) '{cfg.localize.probabilities}' "
                              f"is a file; give its folder '{Path(cfg.localize.probabilities).parent}' (the "
                              "runs' files are found there by name)")
    _check_localize(cfg.localize, source)
    if cfg.evaluate is not None:
        _check_evaluate(cfg.evaluate, source)
    cfg.output.dir = _resolve(cfg.output.dir, base)
    if cfg.shard:
        parse_shard(cfg.shard, source)
    _check_executor(cfg, source)
    if not source.startswith("tomopick"):  # a run config's own keys (the commands refuse such flags themselves)
        from pipeline.config_checks import warn_ignored_settings

        warn_ignored_settings(written, cfg, source)  # the keys written in the config, its tuned file apart
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
