"""Synthetic copick projects with ground truth, for tests, the demo and benchmarks.

Each of the six CZII objects gets its own shape and size from its radius (hollow shell, ellipsoid, four-lobed
complex, two-subunit lumpy blob, elongated dimer, thick virus-like shell), random orientation, a share of
touching neighbours, low-pass blur and Gaussian noise at a chosen SNR. Everything is deterministic per seed.

SNR here is amplitude: noise standard deviation = (particle contrast, 1.0) / snr, measured before the blur.
The ground-truth label map marks a sphere of ``label_radius_scale * radius`` around each centre (a training
target that octopi's localization size filter keeps: its volume lies between (0.5 r)^3 and r^3).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from pipeline.errors import ConfigError, ProjectError

log = logging.getLogger(__name__)

VOXEL_SIZE = 10.0
TOMO_ALG = "wbp"
GT_USER_ID = "data-portal"
GT_SESSION_ID = "0"
GT_SEGMENTATION_NAME = "targets"

# Names, labels, radii (Angstrom) and weights of the CZII cryo-ET challenge (dataset 10440); `per_full` is the
# number of particles in a 184x630x630 tomogram, the challenge's density.
CZII_OBJECTS = [
    dict(name="apo-ferritin", label=1, radius=60.0, weight=1.0, per_full=120, color=(0, 117, 220, 255)),
    dict(name="beta-amylase", label=2, radius=65.0, weight=0.0, per_full=30, color=(153, 63, 0, 255)),
    dict(name="beta-galactosidase", label=3, radius=90.0, weight=2.0, per_full=35, color=(76, 0, 92, 255)),
    dict(name="ribosome", label=4, radius=150.0, weight=1.0, per_full=80, color=(0, 92, 49, 255)),
    dict(name="thyroglobulin", label=5, radius=130.0, weight=2.0, per_full=60, color=(43, 206, 72, 255)),
    dict(name="virus-like-particle", label=6, radius=135.0, weight=1.0, per_full=20, color=(255, 204, 153, 255)),
]
FULL_SHAPE = (184, 630, 630)


@dataclass
class _Particle:
    name: str
    label: int
    center_zyx: np.ndarray
    radius_vox: float
    rotation: np.ndarray


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    # uniform random rotation from a unit quaternion
    q = rng.standard_normal(4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _ellipsoid(u, axes):
    return ((u[0] / axes[0]) ** 2 + (u[1] / axes[1]) ** 2 + (u[2] / axes[2]) ** 2) <= 1.0


def _ball(u, center, radius):
    return ((u[0] - center[0]) ** 2 + (u[1] - center[1]) ** 2 + (u[2] - center[2]) ** 2) <= radius * radius


def _shape_density(name: str, u: np.ndarray, r: float, rng: np.random.Generator) -> np.ndarray:
    """Density (0..1) of one particle in its own rotated frame; u is (3, ...) offsets in voxels."""
    d2 = u[0] ** 2 + u[1] ** 2 + u[2] ** 2
    if name == "apo-ferritin":  # hollow protein cage
        return ((d2 <= r * r) & (d2 >= (0.55 * r) ** 2)).astype(np.float32)
    if name == "beta-amylase":  # compact ellipsoid
        return _ellipsoid(u, (0.95 * r, 0.75 * r, 0.6 * r)).astype(np.float32)
    if name == "beta-galactosidase":  # four-lobed tetramer
        out = np.zeros(u.shape[1:], dtype=np.float32)
        for sz in (-1, 1):
            for sy in (-1, 1):
                out[_ball(u, (0.42 * r * sz, 0.3 * r * sy, 0.0), 0.5 * r)] = 1.0
        return out
    if name == "ribosome":  # large + small subunit, lumpy surface
        out = _ball(u, (0.15 * r, 0.1 * r, 0.0), 0.72 * r).astype(np.float32)
        out[_ellipsoid(u - np.array([-0.5 * r, -0.3 * r, 0.0]).reshape(3, *([1] * (u.ndim - 1))),
                       (0.45 * r, 0.6 * r, 0.4 * r))] = 1.0
        lumps = rng.uniform(0.7, 1.0, size=out.shape).astype(np.float32)
        return out * ndimage.uniform_filter(lumps, size=3)
    if name == "thyroglobulin":  # elongated dimer
        off = np.array([0.0, 0.28 * r, 0.0]).reshape(3, *([1] * (u.ndim - 1)))
        a = _ellipsoid(u - off, (0.95 * r, 0.3 * r, 0.35 * r))
        b = _ellipsoid(u + off, (0.95 * r, 0.3 * r, 0.35 * r))
        return (a | b).astype(np.float32)
    if name == "virus-like-particle":  # thick capsid shell with a faint core
        shell = ((d2 <= r * r) & (d2 >= (0.78 * r) ** 2)).astype(np.float32)
        core = (d2 < (0.5 * r) ** 2).astype(np.float32) * 0.3
        return shell + core
    # any other object: a solid sphere
    return (d2 <= r * r).astype(np.float32)


def _count_for(obj: dict, shape_zyx, density: float) -> int:
    frac = float(np.prod(shape_zyx)) / float(np.prod(FULL_SHAPE))
    n = obj.get("per_full", 40) * frac * density
    return max(1, int(round(n)))


def _place_particles(shape_zyx, objects, rng, density: float, touching_fraction: float) -> list[_Particle]:
    shape = np.asarray(shape_zyx, dtype=np.float64)
    placed: list[_Particle] = []
    centers = np.zeros((0, 3))
    radii = np.zeros(0)
    # big particles first: they are the hardest to fit
    order = sorted(objects, key=lambda o: -o["radius"])
    for obj in order:
        r = obj["radius"] / VOXEL_SIZE
        margin = 0.75 * r + 1.0  # the label sphere (0.6 r) stays inside the volume
        lo, hi = np.full(3, margin), shape - 1 - margin
        if np.any(hi <= lo):
            log.debug("volume %s too small for %s (radius %.1f vox)", tuple(shape_zyx), obj["name"], r)
            continue
        want = _count_for(obj, shape_zyx, density)
        got, tries = 0, 0
        while got < want and tries < 200 * want:
            tries += 1
            if len(placed) and rng.random() < touching_fraction:
                j = rng.integers(len(placed))
                direction = rng.standard_normal(3)
                direction /= np.linalg.norm(direction)
                c = centers[j] + direction * (radii[j] + r) * 1.001  # bounding spheres touch
            else:
                c = rng.uniform(lo, hi)
            if np.any(c < lo) or np.any(c > hi):
                continue
            if len(placed) and np.any(np.linalg.norm(centers - c, axis=1) < (radii + r)):
                continue
            placed.append(_Particle(obj["name"], obj["label"], c, r, _random_rotation(rng)))
            centers = np.vstack([centers, c])
            radii = np.append(radii, r)
            got += 1
        if got < want:
            log.debug("placed %d of %d %s", got, want, obj["name"])
    return placed


def synth_run_arrays(
    shape_zyx=(96, 128, 128),
    seed: int = 0,
    snr: float = 2.0,
    objects=None,
    density: float = 1.0,
    blur_sigma: float = 1.0,
    touching_fraction: float = 0.25,
    label_radius_scale: float = 0.6,
):
    """One synthetic run in memory.

    Returns ``(tomogram_zyx float32, label_map_zyx uint8, centers)`` where ``centers`` maps each object name to
    its (N, 3) float64 (z, y, x) voxel centres.
    """
    objects = CZII_OBJECTS if objects is None else objects
    shape_zyx = tuple(int(s) for s in shape_zyx)
    check_settings(1, shape_zyx, snr, density)
    rng = np.random.default_rng(seed)
    particles = _place_particles(shape_zyx, objects, rng, density, touching_fraction)

    signal = np.zeros(shape_zyx, dtype=np.float32)
    label_map = np.zeros(shape_zyx, dtype=np.uint8)
    for p in particles:
        half = int(np.ceil(p.radius_vox)) + 2
        lo = np.maximum(np.floor(p.center_zyx).astype(int) - half, 0)
        hi = np.minimum(np.floor(p.center_zyx).astype(int) + half + 1, shape_zyx)
        grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")).astype(np.float32)
        offset = grid - p.center_zyx.reshape(3, 1, 1, 1).astype(np.float32)
        local = np.tensordot(p.rotation.T.astype(np.float32), offset, axes=1)  # into the particle's frame
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        signal[box] = np.maximum(signal[box], _shape_density(p.name, local, p.radius_vox, rng))
        d2 = (offset ** 2).sum(axis=0)
        label_map[box][d2 <= (label_radius_scale * p.radius_vox) ** 2] = p.label

    # cryo-ET contrast: protein is dark; blur = the microscope's low-pass; then noise at the asked SNR
    tomogram = ndimage.gaussian_filter(-signal, sigma=blur_sigma) if blur_sigma > 0 else -signal
    tomogram += rng.standard_normal(shape_zyx, dtype=np.float32) * np.float32(1.0 / snr)
    tomogram = tomogram.astype(np.float32, copy=False)

    centers = {o["name"]: np.zeros((0, 3)) for o in objects}
    for name in centers:
        pts = [p.center_zyx for p in particles if p.name == name]
        if pts:
            centers[name] = np.asarray(pts, dtype=np.float64)
    return tomogram, label_map, centers


def copick_config_dict(overlay_dir: Path, objects=None, name: str = "tomopick synthetic") -> dict:
    objects = CZII_OBJECTS if objects is None else objects
    return {
        "config_type": "filesystem",
        "name": name,
        "description": "Synthetic tomograms with the six CZII particle classes, made by `tomopick synth`.",
        "version": "1.31.0",
        "pickable_objects": [
            {
                "name": o["name"],
                "is_particle": True,
                "label": int(o["label"]),
                "color": list(o.get("color", (100, 100, 100, 255))),
                "radius": float(o["radius"]),
                "metadata": {"weight": float(o["weight"])},
            }
            for o in objects
        ],
        "overlay_root": f"local://{Path(overlay_dir).resolve()}",
        "overlay_fs_args": {"auto_mkdir": True},
    }


def _synth_one_run(root, seed: int, i: int, shape, snr: float, density: float, write_label_map: bool) -> None:
    """One run TS_{seed}_{i}: its tomogram, ground-truth picks and, if asked, the label map."""
    from pipeline import copick_io
    from pipeline.selectors import SegSelector

    run_name = f"TS_{seed}_{i}"
    tomogram, label_map, centers = synth_run_arrays(shape, seed=(seed, i), snr=snr, density=density)
    run = root.new_run(run_name, exist_ok=True)
    vs = run.new_voxel_spacing(VOXEL_SIZE, exist_ok=True)
    vs.new_tomogram(TOMO_ALG, exist_ok=True).from_numpy(tomogram, levels=3)
    for name, pts in centers.items():
        copick_io.write_picks(root, run_name, name, pts, VOXEL_SIZE, GT_USER_ID, GT_SESSION_ID)
    if write_label_map:
        seg = SegSelector(GT_SEGMENTATION_NAME, GT_USER_ID, GT_SESSION_ID)
        copick_io.write_segmentation(root, run_name, label_map, VOXEL_SIZE, seg)
    log.debug("synthetic run %s: %s", run_name, {k: len(v) for k, v in centers.items()})


def check_settings(runs: int, shape, snr: float, density: float) -> None:
    """Refuse settings that make no project, naming the flag (and the synthetic: key of a run config)."""
    problems = []
    if runs < 1:
        problems.append(f"--runs {runs}: need at least 1 run")
    if len(tuple(shape)) != 3 or min(shape) < 8:
        problems.append(f"--shape {','.join(map(str, shape))}: need three sides of at least 8 voxels (z, y, x)")
    if not snr > 0:
        problems.append(f"--snr {snr:g}: must be > 0 (particle contrast over noise std)")
    if not density > 0:
        problems.append(f"--density {density:g}: must be > 0 (1 is the CZII challenge's particle density)")
    if problems:
        raise ConfigError("synthetic project: " + "; ".join(problems) + " (tomopick synth, or synthetic: in a run "
                          "config)")


def make_synthetic_project(
    out_dir,
    runs: int = 2,
    shape=(96, 128, 128),
    seed: int = 0,
    snr: float = 2.0,
    density: float = 1.0,
    write_label_map: bool = True,
    progress: bool = False,
) -> Path:
    """Write a complete copick project under ``out_dir``; returns the path of its ``config.json``.

    Runs are named ``TS_{seed}_{i}``; run i is drawn from seed ``(seed, i)``, so the same call makes the same
    project. Tomograms: ``wbp`` at 10 A (OME-Zarr, 3 levels). GT picks: user ``data-portal``, session ``0``.
    With ``write_label_map``, the GT label map is the multilabel segmentation ``targets`` of that user/session.
    """
    from contextlib import nullcontext

    from pipeline import copick_io
    from pipeline.progress import Progress

    out_dir = Path(out_dir)
    config_path = out_dir / "config.json"
    if config_path.exists():
        raise ProjectError(f"synthetic project '{config_path}' exists already; choose another --out or delete it")
    check_settings(runs, shape, snr, density)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ProjectError(f"synthetic project: '{out_dir}' exists and is not empty; choose another --out")
    # built aside and renamed into place whole: a crash leaves no half project, and of two processes making the
    # same project at once (the same seed gives the same data) the first rename wins and the other uses it
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # not tempfile.mkdtemp: its 0700 would stay on the project once renamed; mkdir gives the umask's mode
    build = out_dir.parent / f".{out_dir.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
    build.mkdir()
    try:
        overlay = build / "overlay"
        overlay.mkdir()
        (build / "config.json").write_text(json.dumps(copick_config_dict(overlay), indent=2))
        root = copick_io.open_project(build / "config.json")
        t0 = time.perf_counter()
        # a bar on a terminal only; a log file or a pipe gets log lines, never a bar's carriage returns
        reporter = Progress("synthetic runs", total=runs, unit="run") if progress else nullcontext()
        with reporter:
            for i in range(runs):
                _synth_one_run(root, seed, i, shape, snr, density, write_label_map)
                if progress:
                    reporter.update()
        # the config names the overlay where it will be once in place
        (build / "config.json").write_text(json.dumps(copick_config_dict(out_dir.resolve() / "overlay"), indent=2))
        try:
            os.rename(build, out_dir)  # onto a missing or empty folder only
        except OSError:
            if not config_path.is_file():
                raise
            log.info("synthetic project %s was made meanwhile by another process; using it", out_dir)
            return config_path
    finally:
        shutil.rmtree(build, ignore_errors=True)
    log.info("synthetic project %s: %d runs of %s in %.1f s", config_path, runs, tuple(shape), time.perf_counter() - t0)
    return config_path
