"""octopi model files -> eval-mode MONAI networks, and ensembles of them ("model soups").

An octopi model config is a YAML file with a ``model:`` section (``architecture``, ``num_classes``,
``dim_in`` and the architecture's parameters) and a ``labels:`` map (object name -> integer label); the
weights are a ``state_dict`` saved with ``torch.save`` and loaded strictly (spec section 2).

Keys that only matter for training (dropout rates, gradient checkpointing) take harmless defaults when
missing; keys that change the network's shape are required and their absence is reported with file and key.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ModelError
from pipeline.networks import ARCHITECTURES, BUILDERS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    """One octopi model config YAML, validated: ``model`` is the ``model:`` section as written."""

    path: str
    architecture: str
    num_classes: int
    dim_in: int
    labels: dict[str, int]
    model: dict = field(repr=False)


def read_model_config(path: str | Path) -> ModelConfig:
    """Read and validate an octopi model config YAML (``model:`` + ``labels:``)."""
    import yaml

    path = str(path)
    where = f"{path!r}"
    if not Path(path).is_file():
        raise ModelError(f"model config {where} does not exist; give the YAML octopi wrote during training")
    try:
        with open(path) as fh:
            doc = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ModelError(f"model config {where} is not valid YAML: {exc}") from None
    except UnicodeDecodeError:
        hint = " (a .pth weights file? -mc takes the YAML, -mw the weights)" if path.endswith((".pth", ".pt")) else ""
        raise ModelError(f"model config {where} is not a text file{hint}; give the model config YAML that octopi "
                         "wrote during training") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise ModelError(f"model config {where}: no 'model:' section (top level has {got}); is this an octopi model config?")
    model = dict(doc["model"])
    for key in ("architecture", "num_classes", "dim_in"):
        if key not in model:
            raise ModelError(
                f"model config {where}: key 'model.{key}' is missing (present: {sorted(model)}); "
                "it is required; add it or use the YAML that octopi wrote next to the weights"
            )
    architecture = model["architecture"]
    if architecture not in BUILDERS:
        raise ModelError(
            f"model config {where}: unknown architecture model.architecture={architecture!r}; "
            f"expected one of {', '.join(ARCHITECTURES)}"
        )
    try:
        num_classes = int(model["num_classes"])
        dim_in = int(model["dim_in"])
    except (TypeError, ValueError):
        raise ModelError(
            f"model config {where}: model.num_classes={model['num_classes']!r} and model.dim_in={model['dim_in']!r} "
            "must be integers"
        ) from None
    if num_classes < 2 or dim_in < 1:
        raise ModelError(
            f"model config {where}: model.num_classes={num_classes} (background included, so >= 2) and "
            f"model.dim_in={dim_in} (window side, >= 1) are out of range"
        )
    labels = doc.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ModelError(
            f"model config {where}: key 'labels' (object name -> label) is missing or empty; octopi writes it "
            "during training and localization needs it to name the classes"
        )
    try:
        labels = {str(name): int(label) for name, label in labels.items()}
    except (TypeError, ValueError):
        raise ModelError(f"model config {where}: 'labels' values must be integers, got {labels!r}") from None
    bad = {name: label for name, label in labels.items() if not 0 <= label < num_classes}
    if bad:
        raise ModelError(
            f"model config {where}: labels {bad} are outside 0..{num_classes - 1} (model.num_classes={num_classes})"
        )
    model["num_classes"], model["dim_in"] = num_classes, dim_in
    return ModelConfig(path, architecture, num_classes, dim_in, labels, model)


def build_network(config: ModelConfig):
    """The MONAI network a config describes, with freshly initialised weights (CPU, train mode)."""
    try:
        return BUILDERS[config.architecture](config.model, repr(config.path))
    except ModelError:
        raise
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        raise ModelError(
            f"model config {config.path!r}: MONAI cannot build {config.architecture} from the 'model:' section "
            f"({type(exc).__name__}: {exc}); check the architecture parameters"
        ) from None


def _strip_prefix(state_dict: dict, prefix: str) -> dict:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def read_state_dict(weights_path: str | Path) -> dict:
    """A ``state_dict`` from ``torch.save``; unwraps ``{"state_dict": ...}`` and DDP / torch.compile prefixes."""
    import torch

    weights_path = str(weights_path)
    if not Path(weights_path).is_file():
        raise ModelError(f"model weights {weights_path!r} do not exist; give the .pth file octopi wrote (best_model.pth)")
    try:
        obj = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types (pickle, zip, RuntimeError) for unreadable files
        # torch's first line says what failed; the rest is advice (weights_only=False, file an issue) that does
        # not apply: tomopick never runs pickled code from a weights file
        text = str(exc)
        if "WeightsUnpickler error:" in text:  # what the unpickler met comes after torch's advice
            text = "not a state_dict: " + text.split("WeightsUnpickler error:", 1)[1].strip()
        first = (text.strip().splitlines() or [""])[0][:200]
        what = ("it holds Python objects besides tensors: save model.state_dict() alone" if "Unsupported global" in text
                else "a truncated or corrupt copy? copy it again")
        raise ModelError(
            f"model weights {weights_path!r} cannot be read by torch.load ({type(exc).__name__}: {first}); "
            f"expected a state_dict saved with torch.save ({what})"
        ) from None
    for key in ("state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(
            f"model weights {weights_path!r} hold a {type(obj).__name__}, not a state_dict (name -> tensor)"
        )
    for prefix in ("_orig_mod.", "module."):
        obj = _strip_prefix(obj, prefix)
    return obj


def load_network(config: ModelConfig, weights_path: str | Path, *, device: str):
    """Build the network and load its weights strictly; every mismatch is reported by tensor name and shape."""
    network = build_network(config)
    state_dict = read_state_dict(weights_path)
    expected = network.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    pair = f"model config {config.path!r} ({config.architecture}) and weights {str(weights_path)!r}"
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensor(s) the config needs are missing from the weights, e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} tensor(s) in the weights are unknown to the config, e.g. {unexpected[:3]}")
        raise ModelError(
            f"{pair} do not match: {'; '.join(parts)}; were the weights trained with this config?"
        )
    for name, tensor in expected.items():
        got = state_dict[name]
        if tuple(got.shape) != tuple(tensor.shape):
            hint = ""
            if tensor.ndim == got.ndim and tensor.ndim >= 2:
                differ = [i for i in range(tensor.ndim) if tensor.shape[i] != got.shape[i]]
                if len(differ) == 1 and tensor.shape[differ[0]] == config.num_classes:
                    n = got.shape[differ[0]]
                    hint = f" (model.num_classes={config.num_classes} but the weights have {n} output channels?)"
            raise ModelError(
                f"{pair} do not match: tensor {name!r} has shape {tuple(tensor.shape)} in the config's network "
                f"but {tuple(got.shape)} in the weights{hint}; use the YAML the weights were trained with"
            )
    network.load_state_dict(state_dict, strict=True)
    network.to(device)
    network.eval()
    for p in network.parameters():
        p.requires_grad_(False)
    return network


def size_divisor(config: ModelConfig) -> int:
    """Window sides this network accepts are multiples of this (its total downsampling); dim_in is one of them."""
    m = config.model
    try:
        if config.architecture in ("Unet", "DynUNet"):
            total = 1
            for s in m.get("strides", ()):
                total *= max(s) if isinstance(s, (list, tuple)) else int(s)
            return max(total, 1)
        if config.architecture == "SegResNet":
            return 2 ** (len(m.get("blocks_down", (1, 2, 2, 4))) - 1)
    except (TypeError, ValueError):
        pass
    return 32 if config.architecture == "SwinUNETR" else config.dim_in


@dataclass
class Ensemble:
    """Networks averaged as logits ("model soup"). All share ``num_classes``, ``dim_in`` and ``labels``."""

    models: list
    labels: dict[str, int]
    num_classes: int
    dim_in: int
    configs: list[ModelConfig]
    weight_paths: list[str]
    size_divisor: int = 1  # window sides must be dim_in + k * size_divisor (fast mode's larger windows)

    @property
    def config_paths(self) -> list[str]:
        return [c.path for c in self.configs]


def split_paths(value: str | Sequence[str] | None) -> list[str]:
    """``"a.pth,b.pth"`` or a list -> list of paths (empty parts dropped)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [p for v in value for p in str(v).split(",")]
    return [p.strip() for p in items if p.strip()]


def load_ensemble(
    config_paths: str | Sequence[str], weight_paths: str | Sequence[str], *, device: str
) -> Ensemble:
    """Configs + weights (comma lists or lists; one config may serve several weights) -> Ensemble in eval mode."""
    configs_list, weights_list = split_paths(config_paths), split_paths(weight_paths)
    if not weights_list:
        raise ModelError("no model weights given; pass --model-weights best_model.pth (comma-separated for an ensemble)")
    if not configs_list:
        raise ModelError("no model config given; pass --model-config model_config.yaml (one, or one per weights file)")
    if len(configs_list) == 1:
        configs_list = configs_list * len(weights_list)
    if len(configs_list) != len(weights_list):
        raise ModelError(
            f"{len(configs_list)} model configs {configs_list} but {len(weights_list)} weights files {weights_list}: "
            "give one config for all weights, or exactly one config per weights file"
        )
    parsed: dict[str, ModelConfig] = {}
    configs = []
    for path in configs_list:
        if path not in parsed:
            parsed[path] = read_model_config(path)
        configs.append(parsed[path])
    first = configs[0]
    for cfg in configs[1:]:
        for attr in ("num_classes", "dim_in", "labels"):
            if getattr(cfg, attr) != getattr(first, attr):
                raise ModelError(
                    f"ensemble members disagree on {attr}: {first.path!r} has {getattr(first, attr)!r} but "
                    f"{cfg.path!r} has {getattr(cfg, attr)!r}; an ensemble averages logits class by class, so "
                    "all members must share num_classes, dim_in and labels"
                )
    models = [load_network(cfg, w, device=device) for cfg, w in zip(configs, weights_list)]
    log.info(
        "loaded %d model(s) (%s), %d classes, window %d^3 on %s",
        len(models), ", ".join(sorted({c.architecture for c in configs})), first.num_classes, first.dim_in, device,
    )
    divisor = math.lcm(*[size_divisor(c) for c in configs])
    return Ensemble(models, dict(first.labels), first.num_classes, first.dim_in, configs, weights_list, divisor)


def check_labels(ensemble_labels: dict[str, int], objects, where: str = "model config") -> None:
    """Refuse when the model's ``labels`` disagree with the copick project's particle objects (name -> label).

    An error: a name with a different label in the project, or a model label whose id the project gives to another
    object. A warning: a model name the project's particle objects lack (e.g. a membrane class; it is segmented but
    not picked). Project objects the model does not know are only logged.
    """
    project = {o.name: int(o.label) for o in objects}
    by_label = {label: name for name, label in project.items()}
    problems, foreign = [], []
    for name, label in sorted(ensemble_labels.items(), key=lambda kv: kv[1]):
        if label == 0:
            continue  # background, if a config lists it
        if name in project:
            if project[name] != label:
                problems.append(f"'{name}' is label {label} in the model but {project[name]} in the copick project")
        elif label in by_label:
            problems.append(f"label {label} is '{name}' in the model but '{by_label[label]}' in the copick project")
        else:
            foreign.append(f"{name} ({label})")
    if problems:
        raise ModelError(
            f"{where}: labels disagree with the copick config: {'; '.join(problems)} "
            f"(model labels {ensemble_labels}, project particle labels {project}); use the copick config the model "
            "was trained with, or a model trained on this project"
        )
    if foreign:
        log.warning("%s: model labels not among the project's particle objects (segmented, not picked): %s",
                    where, ", ".join(foreign))
    unknown = sorted(set(project) - set(ensemble_labels))
    if unknown:
        log.info("copick objects without a model label (not segmented): %s", ", ".join(unknown))
