"""Particle objects as the pipeline sees them (copick-free, so every stage can use it without importing copick)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParticleObject:
    """A pickable particle class: ``radius`` in Angstrom, ``weight`` from ``metadata["weight"]`` (default 1)."""

    name: str
    label: int
    radius: float
    weight: float = 1.0
