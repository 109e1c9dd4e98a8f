"""The localization methods: what each one needs and how its regions are sized. One registry entry per method.

A method turns one object class of a volume into candidate centres and region sizes; every backend
(reference, cpu, gpu) implements each registered method with the same meaning (its ``_CANDIDATES`` table), and
``pipeline.localize.localize`` does the rest (merge within ``r_min``, border rule, scores) once for all. An
unknown name is an error, never a fall-through to another method. This module imports nothing of the pipeline,
so ``pipeline.config`` can ask it for the valid names.
"""

from __future__ import annotations

from dataclasses import dataclass

LABELS = "labels"  # a (z, y, x) integer label map of class ids
PROBABILITIES = "probabilities"  # (classes, z, y, x) class probabilities


@dataclass(frozen=True)
class Method:
    name: str
    needs: str  # LABELS or PROBABILITIES
    strict_sizes: bool  # region sizes kept inside open (True) or closed (False) volume bounds
    summary: str  # one line for --help and the README
    score: str = "size"  # what a pick's score is: "size" (region / sphere volume) or "peak" (peak probability)


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.needs not in (LABELS, PROBABILITIES) or method.score not in ("size", "peak"):
        raise ValueError(f"method {method.name!r}: needs {LABELS!r} or {PROBABILITIES!r}, score 'size' or 'peak'")
    _REGISTRY[method.name] = method
    return method


register(Method("watershed", LABELS, False,
                "distance-transform watershed of each class's opened mask: splits touching particles (octopi's "
                "default)"))
register(Method("com", LABELS, True, "one pick per 6-connected component, at its centre of mass"))
register(Method("peaks", PROBABILITIES, False,
                "local maxima of each class's smoothed probability above a per-class threshold; the score is the "
                "peak probability", score="peak"))


def method_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_method(name: str) -> Method:
    """The registered method called ``name``; an unknown name is refused with the valid ones."""
    from pipeline.errors import ConfigError

    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"localization method {name!r}: expected one of {', '.join(_REGISTRY)}") from None


def backend_function(table: dict, method: Method, backend: str):
    """The function of ``table`` (a backend's ``_CANDIDATES``) that implements ``method``."""
    from pipeline.errors import ConfigError

    try:
        return table[method.name]
    except KeyError:
        raise ConfigError(f"localization method {method.name!r} has no {backend} backend (it has "
                          f"{', '.join(table) or 'no methods'})") from None
