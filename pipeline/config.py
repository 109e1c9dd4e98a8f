"""The run config schema (``python run_all.py configs/x.yaml``): dataclasses, the ONLY place defaults live.

Relative paths in a YAML file are resolved against the folder of that file, so a config works from any
working directory. Validation errors name the file, the key, the value received and what to do.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.errors import ConfigError
from pipeline.selectors import SelectorError, parse_run_ids, parse_seg_info


@dataclass
class SyntheticConfig:
    """Make a synthetic project at ``out`` when it does not exist yet (the demo)."""

    out: str = "demo_output/project"
    runs: int = 2
    shape: list = field(default_factory=lambda: [64, 128, 128])
    seed: int = 0
    snr: float = 2.0
    density: float = 1.0


@dataclass
class ModelConfig:
    configs: list = field(default_factory=list)  # octopi model YAMLs; one may serve several weights
    weights: list = field(default_factory=list)  # state_dict .pth files


@dataclass
class SegmentConfig:
    """Segmentation settings; fast-mode tiling defaults chosen on the quality gate (benchmarks/RESULTS.md)."""

    mode: str = "fast"  # fast | compat (octopi 1.7's windows, blending and precision: the yardstick)
    ntta: int = 4
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
    write_segmentation: str | None = "predict,octopi,1"  # NAME,USER_ID,SESSION_ID, or null to not write it
    save_probabilities: str | None = None  # folder for per-run HDF5 probabilities


@dataclass
class LocalizeConfig:
    method: str = "watershed"  # watershed | com
    filter_size: int = 10
    radius_min_scale: float = 0.5
    radius_max_scale: float = 1.0
    pick_objects: list | None = None
    pick_user_id: str = "octopi"
    pick_session_id: str = "1"
    n_procs: int = 8


@dataclass
class EvaluateConfig:
    ground_truth_user_id: str = "data-portal"
    ground_truth_session_id: str = "0"
    metric: str = "octopi"  # octopi | czii
    distance_threshold_scale: float | None = None  # 0.8 (octopi) / 0.5 (czii) when null
    beta: float = 4.0
    save_path: str = "scores"  # relative to output.dir


@dataclass
class OutputConfig:
    dir: str | None = None  # reports, manifest and scores; default <overlay_root>/tomopick
    report: str = "throughput.json"  # relative to dir
    overwrite: bool = False
    on_error: str = "raise"  # raise | skip


@dataclass
class RunConfig:
    copick_config: str | None = None
    synthetic: SyntheticConfig | None = None
    voxel_size: float = 10.0
    tomo_alg: str = "wbp"
    run_ids: list | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    model: ModelConfig = field(default_factory=ModelConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    localize: LocalizeConfig = field(default_factory=LocalizeConfig)
    evaluate: EvaluateConfig | None = None  # omit the block to skip evaluation
    output: OutputConfig = field(default_factory=OutputConfig)
    shard: str | None = None  # "K/N": this job takes runs K, K+N, ... (K from 0)
    source: str = "<dict>"  # the YAML file this came from (not a YAML key)

    def shard_index(self) -> tuple[int, int] | None:
        return parse_shard(self.shard, self.source) if self.shard else None


_CHOICES = {
    ("segment", "mode"): ("fast", "compat"),
    ("segment", "precision"): ("auto", "fp32", "fp16", "bf16"),
    ("segment", "runtime"): ("torch", "compile", "onnxruntime", "openvino", "cudagraphs", "tensorrt"),
    ("segment", "blend"): ("gaussian", "constant"),
    ("localize", "method"): ("watershed", "com"),
    ("evaluate", "metric"): ("octopi", "czii"),
    ("output", "on_error"): ("raise", "skip"),
}


def parse_shard(text, source: str = "config") -> tuple[int, int]:
    try:
        k, n = (int(p) for p in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"{source}: shard {text!r} should be 'K/N' with integers, e.g. '0/4'") from None
    if n < 1 or not 0 <= k < n:
        raise ConfigError(f"{source}: shard {text!r} needs 0 <= K < N (K counts from 0), e.g. '0/4' .. '3/4'")
    return k, n


def _type_ok(value, annotation) -> tuple[bool, object]:
    """Check/convert one scalar value against a simple annotation; returns (ok, converted)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return True, None
        for arg in args:
            if arg is type(None):
                continue
            ok, conv = _type_ok(value, arg)
            if ok:
                return ok, conv
        return False, value
    if annotation in (list, "list") or origin is list:
        if isinstance(value, (list, tuple)):
            return True, list(value)
        if isinstance(value, str):  # "a,b" is accepted where a list is expected (CLI habit)
            return True, [v.strip() for v in value.split(",") if v.strip()]
        return False, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return True, str(value)
        return False, value
    return True, value


def _describe(annotation) -> str:
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _build(cls, data, source: str, prefix: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{prefix}' should be a mapping of keys, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(
                f"{source}: unknown key '{where}'; valid keys{' under ' + prefix if prefix else ''}: "
                f"{', '.join(sorted(fields))}"
            )
        hint = hints[key]
        sub = _dataclass_of(hint)
        if sub is not None:
            if value is None and type(None) in typing.get_args(hint):
                kwargs[key] = None
            else:
                kwargs[key] = _build(sub, value, source, where)
            continue
        ok, conv = _type_ok(value, hint)
        if not ok:
            raise ConfigError(
                f"{source}: '{where}' should be {_describe(hint)}, got {type(value).__name__} {value!r}"
            )
        choices = _CHOICES.get((prefix, key))
        if choices and conv not in choices:
            raise ConfigError(f"{source}: '{where}' is {conv!r}; choose one of {', '.join(choices)}")
        kwargs[key] = conv
    return cls(**kwargs)


def _dataclass_of(hint):
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _resolve(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def config_from_dict(data: dict, source: str = "<dict>", base_dir: Path | None = None,
                     check_files: bool = True) -> RunConfig:
    """Build and validate a RunConfig; relative paths resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a YAML mapping at the top level, got {type(data).__name__}")
    cfg = _build(RunConfig, data, source, "")
    cfg.source = source
    base = Path(base_dir) if base_dir is not None else Path.cwd()

    if "evaluate" in data and data["evaluate"] is None:
        cfg.evaluate = EvaluateConfig()  # "evaluate:" with nothing under it = evaluate with defaults

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

    # model lists: equal length, or one config for several weights
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

    if not cfg.voxel_size > 0:
        raise ConfigError(f"{source}: 'voxel_size' should be > 0 Angstrom, got {cfg.voxel_size!r}")
    cfg.run_ids = parse_run_ids(cfg.run_ids)
    s = cfg.segment
    if not 1 <= s.ntta <= 8:
        raise ConfigError(f"{source}: 'segment.ntta' should be 1..8, got {s.ntta}")
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
            parse_seg_info(s.write_segmentation)
        except SelectorError as exc:
            raise ConfigError(f"{source}: 'segment.write_segmentation': {exc}") from None
    s.save_probabilities = _resolve(s.save_probabilities, base)
    loc = cfg.localize
    if loc.n_procs < 1:
        raise ConfigError(f"{source}: 'localize.n_procs' should be >= 1, got {loc.n_procs}")
    if loc.filter_size < 1:
        raise ConfigError(f"{source}: 'localize.filter_size' should be >= 1, got {loc.filter_size}")
    if not 0 < loc.radius_min_scale <= loc.radius_max_scale:
        raise ConfigError(
            f"{source}: need 0 < 'localize.radius_min_scale' <= 'localize.radius_max_scale', got "
            f"{loc.radius_min_scale} and {loc.radius_max_scale}"
        )
    loc.pick_objects = parse_run_ids(loc.pick_objects)
    cfg.output.dir = _resolve(cfg.output.dir, base)
    if cfg.shard:
        parse_shard(cfg.shard, source)
    # asking for a GPU on a machine without one fails now, not after the project is opened
    from pipeline.device import resolve_device

    try:
        resolve_device(cfg.device)
    except Exception as exc:
        raise ConfigError(f"{source}: 'device': {exc}") from None
    return cfg


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
        data.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(data, source=str(path), base_dir=path.parent.resolve(), check_files=check_files)


def config_to_dict(cfg: RunConfig) -> dict:
    """The resolved config as plain data (for run_manifest.json)."""
    out = dataclasses.asdict(cfg)
    out.pop("source", None)
    return out
