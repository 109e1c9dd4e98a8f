"""octopi's four architectures as MONAI networks (spec section 2): the model config's ``model:`` section ->
``torch.nn.Module``. Keys that change the network's shape are required; training-only keys take harmless
defaults."""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
import threading
from collections.abc import Callable

from pipeline.errors import ModelError

log = logging.getLogger(__name__)

ARCHITECTURES = ("Unet", "SegResNet", "DynUNet", "SwinUNETR")

# MONAI's __init__ imports every submodule, and with them these optional packages, which no network needs:
# 1.9 of MONAI's 3.0 s import on this machine (benchmarks/RESULTS.md). tomopick's own processes (the CLI, its
# worker processes, Ray actors) import MONAI without them; MONAI then treats them as not installed, so a
# process that uses MONAI for more than networks (a library user's) keeps the whole import: see ``lean_monai``.
MONAI_UNNEEDED = ("matplotlib", "pandas", "skimage", "scipy.signal", "scipy.stats")

_lean = False


def lean_monai() -> None:
    """Import MONAI without its unneeded optional packages in this process, when it is first imported. Only
    for processes that are tomopick's own: entry points call it, library use does not."""
    global _lean
    _lean = True


class _Unneeded(importlib.abc.MetaPathFinder):
    def __init__(self):
        self.thread = threading.get_ident()  # another thread's imports meanwhile are its own business

    def find_spec(self, name, path=None, target=None):
        if threading.get_ident() == self.thread and any(name == m or name.startswith(m + ".") for m in MONAI_UNNEEDED):
            raise ImportError(f"{name} is not imported with MONAI by tomopick")
        return None


def _import_monai() -> None:
    if "monai" in sys.modules or not _lean:
        return
    blocked = [m for m in MONAI_UNNEEDED if m not in sys.modules]
    finder = _Unneeded()
    sys.meta_path.insert(0, finder)
    try:
        import monai  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a MONAI that needs one of them: import it whole instead
        log.debug("MONAI without %s failed (%s); importing it whole", blocked, exc)
        for name in [m for m in sys.modules if m == "monai" or m.startswith("monai.")]:
            del sys.modules[name]
    finally:
        sys.meta_path.remove(finder)
    import monai  # noqa: F401, F811 - whole, where the lean import failed


def _nets():
    """``monai.networks.nets``, imported lean in tomopick's own processes."""
    _import_monai()
    import monai.networks.nets as nets

    return nets


def _as_tuple(value):
    """YAML has no tuples; MONAI's (name, {args}) layer specs want one. Lists become tuples, recursively."""
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value


def _require(model_cfg: dict, key: str, where: str):
    if key not in model_cfg:
        raise ModelError(
            f"model config {where}: key 'model.{key}' is missing (present: {sorted(model_cfg)}); "
            f"it is required for architecture {model_cfg.get('architecture')!r}; add it or use the YAML "
            "that octopi wrote next to the weights"
        )
    return model_cfg[key]


def _build_unet(cfg: dict, where: str):
    UNet = _nets().UNet

    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=int(cfg["num_classes"]),
        channels=tuple(_require(cfg, "channels", where)),
        strides=tuple(_require(cfg, "strides", where)),
        num_res_units=int(_require(cfg, "num_res_units", where)),
        dropout=cfg.get("dropout", 0.0) or 0.0,
    )


def _build_segresnet(cfg: dict, where: str):
    SegResNetDS = _nets().SegResNetDS

    blocks_up = cfg.get("blocks_up")
    resolution = cfg.get("resolution")
    return SegResNetDS(
        spatial_dims=3,
        init_filters=int(_require(cfg, "init_filters", where)),
        in_channels=1,
        out_channels=int(cfg["num_classes"]),
        act=_as_tuple(cfg.get("act", "prelu")),
        norm=_as_tuple(cfg.get("norm", "instance")),
        blocks_down=tuple(cfg.get("blocks_down", (1, 2, 2, 4))),
        blocks_up=tuple(blocks_up) if blocks_up is not None else None,
        dsdepth=int(cfg.get("dsdepth", 1)),
        upsample_mode=cfg.get("upsample_mode", "deconv"),
        resolution=tuple(resolution) if resolution is not None else None,
    )


def _build_dynunet(cfg: dict, where: str):
    DynUNet = _nets().DynUNet

    filters = cfg.get("filters")
    return DynUNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=int(cfg["num_classes"]),
        kernel_size=_as_tuple(_require(cfg, "kernel_size", where)),
        strides=_as_tuple(_require(cfg, "strides", where)),
        upsample_kernel_size=_as_tuple(_require(cfg, "upsample_kernel_size", where)),
        filters=tuple(filters) if filters is not None else None,
        dropout=cfg.get("dropout"),
        norm_name=_as_tuple(cfg.get("norm_name", ("INSTANCE", {"affine": True}))),
        act_name=_as_tuple(cfg.get("act_name", ("leakyrelu", {"inplace": True, "negative_slope": 0.01}))),
        deep_supervision=bool(cfg.get("deep_supervision", False)),
        deep_supr_num=int(cfg.get("deep_supr_num", 1)),
        res_block=bool(cfg.get("res_block", True)),
    )


def _build_swinunetr(cfg: dict, where: str):
    SwinUNETR = _nets().SwinUNETR

    dim_in = int(cfg["dim_in"])
    if dim_in % 32:
        raise ModelError(
            f"model config {where}: SwinUNETR needs window sides divisible by 32, but model.dim_in={dim_in}; "
            "use the dim_in the model was trained with (e.g. 96 or 128)"
        )
    window_size = cfg.get("window_size", 7)
    kwargs = dict(
        in_channels=1,
        out_channels=int(cfg["num_classes"]),
        feature_size=int(_require(cfg, "feature_size", where)),
        depths=tuple(_require(cfg, "depths", where)),
        num_heads=tuple(_require(cfg, "num_heads", where)),
        window_size=tuple(window_size) if isinstance(window_size, list) else window_size,
        drop_rate=cfg.get("drop_rate", 0.0),
        attn_drop_rate=cfg.get("attn_drop_rate", 0.0),
        dropout_path_rate=cfg.get("dropout_path_rate", 0.0),
        use_checkpoint=bool(cfg.get("use_checkpoint", False)),
        spatial_dims=3,
    )
    if importlib.util.find_spec("einops") is None:
        raise ModelError(
            f"model config {where}: MONAI's SwinUNETR needs the 'einops' package, which is not installed; "
            "pip install einops"
        )
    return SwinUNETR(**kwargs)


BUILDERS: dict[str, Callable] = {
    "Unet": _build_unet,
    "SegResNet": _build_segresnet,
    "DynUNet": _build_dynunet,
    "SwinUNETR": _build_swinunetr,
}
