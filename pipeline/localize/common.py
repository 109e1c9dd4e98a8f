"""What every localization backend shares (spec section 4): size windows, pick merging, the border rule, scores.

The backends (reference, cpu, gpu) differ only in how they turn one class of the label map into candidate
centres and region sizes; everything after that (merge within ``r_min``, drop picks near the border, score)
happens here, once, on the host, on at most a few thousand points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from pipeline.errors import ConfigError
from pipeline.localize.methods import get_method
from pipeline.objects import ParticleObject

BACKENDS = ("auto", "reference", "cpu", "gpu")
BORDER_FRACTION = 0.005  # octopi: drop picks closer than 0.5% of that axis' length to the volume border


@dataclass
class Picks:
    """Particle centres of one object in one run, in (z, y, x) voxels, and one score per pick.

    ``scores``: for ``watershed`` / ``com``, voxels in the region(s) (or connected component(s), for
    ``com``) that made the pick, divided by the voxels of a sphere of the object's radius,
    ``4/3 pi (radius / voxel_size)^3``: a size ratio, not a confidence, and well below 1 in practice because
    segmentations cover less than the whole particle (a pick merged from several regions within ``r_min``
    sums their sizes). For ``peaks``, the peak's smoothed class probability (0-1).
    """

    centers_zyx_vox: np.ndarray = field(default_factory=lambda: np.empty((0, 3), np.float64))
    scores: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))

    def __len__(self) -> int:
        return int(self.centers_zyx_vox.shape[0])


class Candidates(NamedTuple):
    """What a backend finds for one class: centres (N, 3) z, y, x voxels and region sizes (N,) in voxels."""

    centers_zyx_vox: np.ndarray
    sizes: np.ndarray


NO_CANDIDATES = Candidates(np.empty((0, 3)), np.empty(0))


@dataclass(frozen=True)
class SizeWindow:
    """Radii (voxels) and region-size bounds (voxels) of one object: ``V = 4/3 pi r^3``."""

    r_min: float
    r_max: float
    v_min: float
    v_max: float
    v_sphere: float  # volume of a sphere of the object's full radius: the score's denominator
    radius: float = 0.0  # the object's radius in voxels

    def keeps(self, sizes, strict: bool):
        """Mask of region sizes inside the window: open bounds for ``com`` (strict), closed for watershed."""
        if strict:
            return (sizes > self.v_min) & (sizes < self.v_max)
        return (sizes >= self.v_min) & (sizes <= self.v_max)


class Task(NamedTuple):
    """One object class to localize: its name, its label (class id or probability channel) and size window."""

    name: str
    label: int
    window: SizeWindow


def sphere_volume(radius_vox: float) -> float:
    return 4.0 / 3.0 * math.pi * radius_vox**3


def size_window(obj: ParticleObject, voxel_size: float, radius_min_scale: float, radius_max_scale: float) -> SizeWindow:
    r_min = obj.radius * radius_min_scale / voxel_size
    r_max = obj.radius * radius_max_scale / voxel_size
    radius = obj.radius / voxel_size
    return SizeWindow(r_min, r_max, sphere_volume(r_min), sphere_volume(r_max), sphere_volume(radius), radius)


def check_parameters(method: str, filter_size, radius_min_scale, radius_max_scale, voxel_size, backend: str) -> None:
    """Refuse bad parameters before any work, naming the parameter, the value and what is expected."""
    get_method(method)
    if backend not in BACKENDS:
        raise ConfigError(f"localization backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if method == "watershed" and (
        isinstance(filter_size, bool) or not isinstance(filter_size, (int, np.integer)) or filter_size <= 0
    ):
        raise ConfigError(
            f"localization filter_size {filter_size!r}: the maximum-filter side must be a positive integer "
            "number of voxels (octopi's default is 10)"
        )
    for name, value in (("radius_min_scale", radius_min_scale), ("radius_max_scale", radius_max_scale)):
        if not (isinstance(value, (int, float, np.floating, np.integer)) and value >= 0 and math.isfinite(value)):
            raise ConfigError(f"localization {name} {value!r}: expected a finite number >= 0 (e.g. 0.5 / 1.0)")
    if not (isinstance(voxel_size, (int, float, np.floating, np.integer)) and voxel_size > 0):
        raise ConfigError(f"localization voxel_size {voxel_size!r}: expected Angstrom per voxel > 0, e.g. 10")


def check_objects(objects) -> list[ParticleObject]:
    objects = list(objects)
    seen: dict[str, int] = {}
    for obj in objects:
        if not isinstance(obj, ParticleObject):
            raise ConfigError(f"localization object {obj!r}: expected a pipeline.objects.ParticleObject")
        if not 1 <= int(obj.label) <= 255:
            raise ConfigError(
                f"object {obj.name!r}: label {obj.label} cannot occur in a uint8 label map (expected 1..255; 0 is "
                "background)"
            )
        if obj.name in seen:
            raise ConfigError(f"object {obj.name!r} is listed twice (labels {seen[obj.name]} and {obj.label})")
        seen[obj.name] = int(obj.label)
    return objects


def merge_close_picks(centers_zyx_vox: np.ndarray, sizes: np.ndarray, r_min: float,
                      reduce: str = "sum") -> tuple[np.ndarray, np.ndarray]:
    """Replace each connected group of picks (pairs at distance <= ``r_min``, transitively) by its mean.

    octopi's ``remove_repeated_picks``: a KD-tree neighbour graph with the threshold inclusive, connected
    components, the unweighted mean of each group. Returns (centres, the group's values summed or, with
    ``reduce="max"``, their maximum), groups ordered by their first member.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = centers_zyx_vox.shape[0]
    if n <= 1:
        return centers_zyx_vox.astype(np.float64, copy=True), sizes.astype(np.float64, copy=True)
    pairs = np.array(sorted(cKDTree(centers_zyx_vox).query_pairs(r_min)), dtype=np.int64).reshape(-1, 2)
    if pairs.shape[0] == 0:
        return centers_zyx_vox.astype(np.float64, copy=True), sizes.astype(np.float64, copy=True)
    graph = coo_matrix((np.ones(pairs.shape[0]), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    n_groups, group = connected_components(graph, directed=False)
    counts = np.bincount(group, minlength=n_groups).astype(np.float64)
    merged = np.empty((n_groups, 3), np.float64)
    for axis in range(3):
        merged[:, axis] = np.bincount(group, weights=centers_zyx_vox[:, axis], minlength=n_groups) / counts
    if reduce == "max":
        merged_sizes = np.full(n_groups, -np.inf)
        np.maximum.at(merged_sizes, group, sizes.astype(np.float64))
    else:
        merged_sizes = np.bincount(group, weights=sizes.astype(np.float64), minlength=n_groups)
    return merged, merged_sizes


def inside_border(centers_zyx_vox: np.ndarray, shape_zyx) -> np.ndarray:
    """Boolean keep-mask: every coordinate within ``[0.005 * n, n - 0.005 * n]`` of its own axis (inclusive)."""
    size = np.asarray(shape_zyx, dtype=np.float64)
    margin = size * BORDER_FRACTION
    return np.all((centers_zyx_vox >= margin) & (centers_zyx_vox <= size - margin), axis=1)


def finalize(centers_zyx_vox: np.ndarray, values: np.ndarray, shape_zyx, window: SizeWindow,
             score: str = "size") -> Picks:
    """Candidates of one object -> Picks: merge within ``r_min``, drop near the border, score (see Picks).

    ``score="size"``: ``values`` are region sizes (merged picks sum them; score = size / sphere volume);
    ``"peak"``: ``values`` are peak probabilities (merged picks keep the highest; score = that probability).
    """
    centers = np.asarray(centers_zyx_vox, dtype=np.float64).reshape(-1, 3)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if centers.shape[0] == 0:
        return Picks()
    centers, values = merge_close_picks(centers, values, window.r_min, reduce="max" if score == "peak" else "sum")
    keep = inside_border(centers, shape_zyx)
    if score == "peak":
        scores = values[keep]
    else:
        scores = values[keep] / window.v_sphere if window.v_sphere > 0 else np.zeros(int(keep.sum()))
    return Picks(np.ascontiguousarray(centers[keep]), np.asarray(scores, np.float64))


def report(progress, done: int, total: int) -> None:
    """A backend's progress callback, when it has one."""
    if progress is not None:
        progress(done, total)


def per_class(mapping: dict, name: str) -> float:
    """A per-class setting (``{"default": 0.3, "ribosome": 0.4}``): the object's own value, else the default."""
    return float(mapping.get(name, mapping["default"]))


MAX_PEAK_BIN = 4


@dataclass(frozen=True)
class PeakParameters:
    """``peaks`` for one object: Gaussian sigma and maximum-filter side (full-resolution voxels), threshold, and
    the block side ``bin`` over which probabilities are averaged first.

    Smoothing with sigma >= 1.5 voxels leaves nothing a grid of about sigma voxels cannot hold, so the work is
    done on ``bin``^3 block means (bin = sigma rounded, 1..4): the box average already smooths by a variance of
    (bin^2 - 1) / 12 per axis, the Gaussian on the coarse grid adds the rest, and a peak's block centre maps back
    within bin / 2 voxels (the CZII rule matches within half a radius, >= 3 voxels for every CZII object)."""

    sigma: float
    side: int
    threshold: float
    bin: int = 1

    @property
    def binned_sigma(self) -> float:
        return math.sqrt(max(self.sigma**2 - (self.bin**2 - 1) / 12.0, 1e-6)) / self.bin

    @property
    def binned_side(self) -> int:
        return max(3, int(round(self.side / self.bin)) | 1)

    def to_full(self, centers_binned: np.ndarray) -> np.ndarray:
        """Block-grid coordinates -> full-resolution voxels (a block's centre)."""
        return centers_binned * self.bin + (self.bin - 1) / 2.0


def refine_peaks(centers: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Sub-voxel peak positions: along each axis, the vertex of the parabola through the smoothed values at the
    peak voxel and its two neighbours (``neighbours``: (N, 3, 3) values at offsets -1, 0, +1 per axis; NaN where
    the volume ends), at most half a voxel away. Plateaus of several voxels (their centroid is not on a voxel)
    keep their centroid."""
    out = centers.copy()
    on_voxel = np.all(np.abs(centers - np.round(centers)) < 1e-9, axis=1)
    left, mid, right = neighbours[..., 0], neighbours[..., 1], neighbours[..., 2]
    curvature = left - 2 * mid + right
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(curvature < 0, 0.5 * (left - right) / curvature, 0.0)
    shift = np.clip(np.nan_to_num(shift), -0.5, 0.5)
    out[on_voxel] += shift[on_voxel]
    return out


def neighbour_values(smooth, centers: np.ndarray, take=None) -> np.ndarray:
    """(N, 3, 3): the values at each rounded centre and its -1 / +1 neighbours along z, y, x (NaN outside).

    ``take(rows)``: the values of ``smooth`` at the (M, 3) host index ``rows`` as a host array; the default
    indexes a host ``smooth`` (the gpu backend gathers on the device and copies back only these)."""
    if take is None:
        def take(rows):
            return smooth[rows[:, 0], rows[:, 1], rows[:, 2]]
    idx = np.round(centers).astype(np.int64)
    out = np.full((len(idx), 3, 3), np.nan)
    for axis in range(3):
        for k, step in enumerate((-1, 0, 1)):
            j = idx.copy()
            j[:, axis] += step
            ok = (j[:, axis] >= 0) & (j[:, axis] < smooth.shape[axis])
            if ok.any():
                out[ok, axis, k] = take(j[ok])
    return out


def peak_parameters(settings, task) -> PeakParameters:
    """Smoothing ``sigma = smoothing x radius``, a window of ``peak_window x radius`` (odd, >= 3) and the
    threshold, each from the object's own entry or the default; the block side from sigma."""
    radius = task.window.radius
    sigma = per_class(settings.smoothing, task.name) * radius
    side = max(3, int(round(per_class(settings.peak_window, task.name) * radius)) | 1)
    bin_side = min(MAX_PEAK_BIN, max(1, int(round(sigma))))
    return PeakParameters(sigma, side, per_class(settings.thresholds, task.name), bin_side)
