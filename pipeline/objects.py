"""Particle objects as the pipeline sees them (copick-free, so every stage can use it without importing copick)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ParticleObject:
    """A pickable particle class: ``radius`` in Angstrom, ``weight`` from ``metadata["weight"]`` (default 1)."""

    name: str
    label: int
    radius: float
    weight: float = 1.0


def select_objects(objects: Sequence[ParticleObject], names: Iterable[str] | None) -> list[ParticleObject]:
    """The objects named (in the order given), or all when ``names`` is None; unknown names are an error."""
    objects = list(objects)
    if not names:
        return objects
    by_name = {o.name: o for o in objects}
    names = list(names)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        from pipeline.errors import ConfigError

        raise ConfigError(
            f"object names {unknown} are not particle objects of the project; "
            f"known particle objects: {', '.join(by_name) or '(none)'}"
        )
    return [by_name[n] for n in dict.fromkeys(names)]
