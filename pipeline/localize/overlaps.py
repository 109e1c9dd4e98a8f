"""peaks: one particle claimed by two classes of different size goes to the class its size fits.

A network that confuses a small particle with a larger class paints it as that class throughout, so the larger
class's probability has a confident peak on it beside the smaller class's own peak (validation project: all 18
false beta-galactosidase peaks sit on apo-ferritin or beta-amylase particles; their scores overlap the true
ones'). Probabilities alone cannot tell the two apart; the particle's size can. The segmented particle
(argmax not background) of a true large particle fills a sphere of 0.75 x its class's radius about as fully as
the class's other particles do; a small particle in that sphere fills a fraction of it.

So a peak of class L is dropped when (1) a peak of a clearly smaller class (radius <= 0.8 x L's) lies within
0.75 x L's radius of it, and (2) the foreground fills less than 0.8 x the reference fill of L's sphere around
it. The reference is measured on the same run: the median fill of L's peaks scoring >= 0.5 that no smaller
class claims (at least 2 of them; with fewer, L's peaks are all kept). Being relative, the rule holds for
networks trained on label spheres of any size (the demo model's segmentations fill far less of a sphere than
the validation model's). Claims are read from the picks before this step, so the result does not depend on
the order of the classes.
Measured in benchmarks/RESULTS.md ("2026-12-03 night: the overlap check").

The fill is counted on crops of the volume around each peak (probabilities or a label map, numpy, torch or
CuPy): only the crops leave the device, and the same host code decides for every backend.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from pipeline.localize import _to_host
from pipeline.localize.common import Picks, Task

CLAIM_DISTANCE = 0.75  # x the larger radius: two classes' peaks this close claim one particle
SMALLER = 0.8  # a class is clearly smaller at a radius <= 0.8 x the other's
FILL_RADIUS = 0.75  # the fill is counted in a sphere of 0.75 x the larger class's radius
FILL_FRACTION = 0.8  # dropped below this fraction of the reference fill
CONFIDENT = 0.5  # reference peaks score at least this ...
MIN_REFERENCE = 2  # ... and there are at least this many of them


@functools.lru_cache(maxsize=64)
def _ball(radius_vox: float) -> np.ndarray:
    """Mask of a sphere of ``radius_vox`` on the integer offsets of a (2 reach + 1)^3 box."""
    reach = int(math.floor(radius_vox))
    zz, yy, xx = np.ogrid[-reach:reach + 1, -reach:reach + 1, -reach:reach + 1]
    return (zz**2 + yy**2 + xx**2) <= radius_vox**2


def foreground_fill(volume, center_zyx, radius_vox: float) -> float:
    """Fraction of the voxels of a sphere (``radius_vox``, around ``center_zyx``, clipped to the volume) whose
    class is not background: argmax over the channels of (classes, z, y, x) probabilities (channel 0 the
    background; a tie goes to the lower channel, as the label map's argmax), or a (z, y, x) label map != 0."""
    shape = tuple(int(s) for s in volume.shape[-3:])
    center = np.rint(np.asarray(center_zyx, dtype=np.float64)).astype(np.int64)
    reach = int(math.floor(radius_vox))
    lo = np.maximum(center - reach, 0)
    hi = np.minimum(center + reach + 1, shape)
    if np.any(hi <= lo):
        return 0.0
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    crop = _to_host(volume[(slice(None), *box)] if len(volume.shape) == 4 else volume[box])
    if crop.ndim == 4:  # argmax != 0, i.e. some class above the background (a tie is background)
        crop = crop.astype(np.float32, copy=False)
        foreground = crop[1:].max(axis=0) > crop[0] if len(crop) > 1 else np.zeros(crop.shape[1:], bool)
    else:
        foreground = crop != 0
    inside = _ball(float(radius_vox))[tuple(slice(int(a - c + reach), int(b - c + reach))
                                            for a, b, c in zip(lo, hi, center))]
    total = int(inside.sum())
    return float(np.count_nonzero(foreground & inside)) / total if total else 0.0


def claimed(centers_zyx_vox: np.ndarray, radius_vox: float, others: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Mask of the peaks (``centers_zyx_vox``, of a class of radius ``radius_vox``) that a peak of a clearly
    smaller class claims: ``others`` = [(centres, radius)] of the other classes' picks."""
    out = np.zeros(len(centers_zyx_vox), bool)
    for theirs, their_radius in others:
        if their_radius > SMALLER * radius_vox or len(theirs) == 0 or len(out) == 0:
            continue
        gaps = np.linalg.norm(centers_zyx_vox[:, None, :] - np.asarray(theirs)[None, :, :], axis=2)
        out |= (gaps <= CLAIM_DISTANCE * radius_vox).any(axis=1)
    return out


def keep_mask(picks: Picks, radius_vox: float, claims: np.ndarray, volume, fill=foreground_fill) -> np.ndarray:
    """Mask of one class's picks kept by the rule, given which of them are claimed (``claimed``). ``fill``:
    foreground_fill or a cached stand-in with its signature (tune counts one peak's fill once)."""
    keep = np.ones(len(picks), bool)
    if not claims.any():
        return keep
    sphere = FILL_RADIUS * radius_vox
    reference = [fill(volume, c, sphere) for c in picks.centers_zyx_vox[(picks.scores >= CONFIDENT) & ~claims]]
    if len(reference) < MIN_REFERENCE:
        return keep  # nothing to measure this class's particles by in this run: keep its peaks
    limit = FILL_FRACTION * float(np.median(reference))
    for i in np.flatnonzero(claims):
        keep[i] = fill(volume, picks.centers_zyx_vox[i], sphere) >= limit
    return keep


def check_class(picks: Picks, radius_vox: float, others: list[tuple[np.ndarray, float]], volume,
                fill=foreground_fill) -> Picks:
    """One class's picks (radius ``radius_vox``) after the rule, ``others`` = [(centres, radius)] of the other
    classes' picks (the same Picks when none is dropped)."""
    if len(picks) == 0:
        return picks
    keep = keep_mask(picks, radius_vox, claimed(picks.centers_zyx_vox, radius_vox, others), volume, fill)
    return picks if keep.all() else Picks(np.ascontiguousarray(picks.centers_zyx_vox[keep]), picks.scores[keep])


def drop_claimed_by_smaller(picks: dict[str, Picks], tasks: list[Task], volume) -> tuple[dict[str, Picks], dict]:
    """The rule above on one run's picks (``{name: Picks}``, every task present): (picks kept, ``{name: number
    dropped}`` for the classes that lost any)."""
    radius = {t.name: float(t.window.radius) for t in tasks}
    kept, dropped = dict(picks), {}
    for large in tasks:
        others = [(picks[t.name].centers_zyx_vox, radius[t.name]) for t in tasks if t.name != large.name]
        kept[large.name] = check_class(picks[large.name], radius[large.name], others, volume)
        if len(kept[large.name]) < len(picks[large.name]):
            dropped[large.name] = len(picks[large.name]) - len(kept[large.name])
    return kept, dropped
