"""Selectors for tomograms and segmentations in the two spellings users know (spec section 5).

The inference guide spells them as flags (``--voxel-size 10 --tomo-alg wbp``, ``--seg-info predict,octopi,1``);
octopi 1.7's CLI uses copick URIs (``--tomo-uri wbp@10.0``, ``--seg-uri predict:octopi/1``). Both are accepted;
when both are given and disagree we refuse rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import SelectorError

__all__ = ["SelectorError", "TomoSelector", "SegSelector", "parse_tomo_uri", "parse_voxel_size", "parse_seg_uri",
           "parse_seg_info", "resolve_tomo", "resolve_seg", "parse_run_ids"]


@dataclass(frozen=True)
class TomoSelector:
    tomo_alg: str
    voxel_size: float

    def uri(self) -> str:
        return f"{self.tomo_alg}@{self.voxel_size:g}"


@dataclass(frozen=True)
class SegSelector:
    name: str
    user_id: str
    session_id: str

    def uri(self) -> str:
        return f"{self.name}:{self.user_id}/{self.session_id}"

    def info(self) -> str:
        return f"{self.name},{self.user_id},{self.session_id}"


def parse_tomo_uri(uri: str) -> TomoSelector:
    """``wbp@10.0`` -> TomoSelector('wbp', 10.0)."""
    if not isinstance(uri, str) or uri.count("@") != 1:
        raise SelectorError(f"tomogram URI {uri!r}: expected 'ALGORITHM@VOXEL_SIZE', e.g. 'wbp@10.0'")
    alg, vs = uri.split("@")
    if not alg:
        raise SelectorError(f"tomogram URI {uri!r}: the algorithm before '@' is empty, e.g. 'wbp@10.0'")
    return TomoSelector(alg, parse_voxel_size(vs, where=f"tomogram URI {uri!r}"))


def parse_voxel_size(value, where: str = "voxel size") -> float:
    try:
        vs = float(value)
    except (TypeError, ValueError):
        raise SelectorError(f"{where}: voxel size {value!r} is not a number (Angstrom per voxel, e.g. 10)") from None
    if not vs > 0:
        raise SelectorError(f"{where}: voxel size must be > 0 Angstrom, got {value!r}")
    return vs


def parse_seg_uri(uri: str) -> SegSelector:
    """``name``, ``name:user_id`` or ``name:user_id/session_id`` (missing parts: those of octopi's default
    segmentation, ``pipeline.config.DEFAULT_SEGMENTATION``), or octopi's legacy ``name,user_id,session_id``."""
    from pipeline.config import DEFAULT_SEGMENTATION

    default = parse_seg_info(DEFAULT_SEGMENTATION)
    if isinstance(uri, str) and uri.count(",") == 2 and "@" not in uri and ":" not in uri:
        return parse_seg_info(uri)  # octopi 1.7's parse_target also takes the legacy 'name,user,session'
    if not isinstance(uri, str) or not uri or "@" in uri or "," in uri:
        raise SelectorError(
            f"segmentation URI {uri!r}: expected 'NAME', 'NAME:USER_ID' or 'NAME:USER_ID/SESSION_ID', "
            "e.g. 'predict:octopi/1'"
        )
    name, _, rest = uri.partition(":")
    user_id, session_id = default.user_id, default.session_id
    if rest:
        user_id, slash, sid = rest.partition("/")
        if slash:
            session_id = sid
    if not name or not user_id or not session_id:
        raise SelectorError(f"segmentation URI {uri!r}: empty name, user id or session id; e.g. 'predict:octopi/1'")
    return SegSelector(name, user_id, session_id)


def parse_seg_info(info: str) -> SegSelector:
    """``predict,octopi,1`` -> SegSelector('predict', 'octopi', '1')."""
    parts = [p.strip() for p in str(info).split(",")]
    if len(parts) != 3 or not all(parts):
        raise SelectorError(f"segmentation info {info!r}: expected 'NAME,USER_ID,SESSION_ID', e.g. 'predict,octopi,1'")
    return SegSelector(*parts)


def resolve_tomo(voxel_size=None, tomo_alg=None, tomo_uri=None) -> TomoSelector:
    """Combine ``--voxel-size/--tomo-alg`` and ``--tomo-uri``; refuse when both are given and disagree.

    Parts given by neither stay None (the run config's defaults apply)."""
    flags = TomoSelector(tomo_alg, parse_voxel_size(voxel_size) if voxel_size is not None else None)
    if tomo_uri is None:
        return flags
    from_uri = parse_tomo_uri(tomo_uri)
    if tomo_alg is not None and tomo_alg != from_uri.tomo_alg:
        raise SelectorError(
            f"--tomo-alg {tomo_alg!r} disagrees with --tomo-uri {tomo_uri!r}; give one of them or make them agree"
        )
    if voxel_size is not None and abs(flags.voxel_size - from_uri.voxel_size) > 1e-6:
        raise SelectorError(
            f"--voxel-size {voxel_size} disagrees with --tomo-uri {tomo_uri!r}; give one of them or make them agree"
        )
    return from_uri


def resolve_seg(seg_info=None, seg_uri=None) -> SegSelector | None:
    """Combine ``--seg-info`` and ``--seg-uri``; refuse when both are given and disagree; None when neither."""
    a = parse_seg_info(seg_info) if seg_info is not None else None
    b = parse_seg_uri(seg_uri) if seg_uri is not None else None
    if a is not None and b is not None and a != b:
        raise SelectorError(
            f"--seg-info {seg_info!r} ({a.uri()}) disagrees with --seg-uri {seg_uri!r} ({b.uri()}); "
            "give one of them or make them agree"
        )
    return a or b


def parse_run_ids(value) -> list[str] | None:
    """``"TS_1,TS_2"``, octopi's ``"[TS_1,TS_2]"`` or a list -> list of run names; None/empty -> None (all runs)."""
    if value is None:
        return None
    if isinstance(value, str):
        items = [v.strip().strip("'\"") for v in value.strip().strip("[]").split(",")]
    else:
        items = [str(v).strip() for v in value]
    items = [v for v in items if v]
    return items or None
