"""Seeded label maps for localization tests: spheres (some touching), irregular blobs, edge cases."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from pipeline.objects import ParticleObject

# radii in Angstrom at 10 A/voxel: 3.5 .. 8 voxels, small enough for 20..64 voxel volumes
OBJECTS = [
    ParticleObject("small", 1, 35.0),
    ParticleObject("medium", 2, 55.0),
    ParticleObject("large", 3, 80.0),
]
VOXEL_SIZE = 10.0


def ball(shape, center_zyx, radius) -> np.ndarray:
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    c = center_zyx
    return (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= radius * radius


def spheres(shape, rng, n=None, objects=OBJECTS, touching=0.4, scale=(0.6, 1.1)) -> np.ndarray:
    """Spheres of the objects' sizes at random (sub-voxel) centres; a share placed touching the previous one."""
    label_map = np.zeros(shape, np.uint8)
    n = int(rng.integers(1, 25)) if n is None else n
    last = None
    for _ in range(n):
        obj = objects[int(rng.integers(len(objects)))]
        r = obj.radius / VOXEL_SIZE * rng.uniform(*scale)
        if last is not None and rng.random() < touching:
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            center = last[0] + direction * (last[1] + r) * rng.uniform(0.75, 1.0)
        else:
            center = rng.uniform(0, shape)
        label_map[ball(shape, center, r)] = obj.label
        last = (center, r)
    return label_map


def blobs(shape, rng, objects=OBJECTS, sigma=None, level=None) -> np.ndarray:
    """Irregular blobs: smoothed noise above a level, each connected piece given a random class."""
    sigma = rng.uniform(1.5, 3.0) if sigma is None else sigma
    field = ndi.gaussian_filter(rng.normal(size=shape), sigma)
    level = np.quantile(field, rng.uniform(0.75, 0.9)) if level is None else level
    pieces, n = ndi.label(field > level)
    classes = np.concatenate([[0], rng.integers(1, len(objects) + 1, n)]).astype(np.uint8)
    return classes[pieces]


def mixed(shape, rng) -> np.ndarray:
    """Spheres with blob noise pasted over part of them (plateaus, thin bridges, fragments)."""
    label_map = spheres(shape, rng)
    noise = blobs(shape, rng, sigma=1.0)
    paste = rng.random(shape) < 0.5
    label_map[paste & (noise > 0)] = noise[paste & (noise > 0)]
    return label_map


def random_case(seed: int):
    """(label_map, kind) for a seed: shape and generator both drawn from the seed."""
    rng = np.random.default_rng(seed)
    shapes = [(37, 64, 51), (24, 40, 33), tuple(int(s) for s in rng.integers(18, 56, 3))]
    shape = shapes[int(rng.integers(len(shapes)))]
    kind = ("spheres", "blobs", "mixed")[seed % 3]
    return {"spheres": spheres, "blobs": blobs, "mixed": mixed}[kind](shape, rng), kind
