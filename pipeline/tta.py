"""The 8 test-time transforms of octopi, in octopi's order, as data, each with its exact inverse (spec section 3).

A transform is a rotation by ``rot90_k`` quarter turns in the (y, x) plane followed by flips of ``flip_axes``
(0 = z, 1 = y, 2 = x), both applied to the last three (z, y, x) axes of a tensor of any rank. Being data,
transforms can be compared, logged and applied to a whole volume (compat mode) or to a batch of windows (fast
mode) by the same two functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Transform:
    name: str
    rot90_k: int = 0  # quarter turns in the (y, x) plane, as torch.rot90(dims=(y, x))
    flip_axes: tuple[int, ...] = ()  # of (z, y, x) = (0, 1, 2)

    @property
    def swaps_yx(self) -> bool:
        """True when the output's y and x sides are the input's x and y sides (odd quarter turns)."""
        return self.rot90_k % 2 == 1

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        dims = (t.ndim - 2, t.ndim - 1)
        if self.rot90_k % 4:
            t = torch.rot90(t, k=self.rot90_k, dims=dims)
        if self.flip_axes:
            t = torch.flip(t, dims=tuple(t.ndim - 3 + a for a in self.flip_axes))
        return t

    def inverse(self, t: torch.Tensor) -> torch.Tensor:
        """Undo ``forward``: flips first (they are their own inverse), then the opposite rotation."""
        if self.flip_axes:
            t = torch.flip(t, dims=tuple(t.ndim - 3 + a for a in self.flip_axes))
        if self.rot90_k % 4:
            t = torch.rot90(t, k=-self.rot90_k, dims=(t.ndim - 2, t.ndim - 1))
        return t


# octopi 1.7 Predictor.create_tta_augmentations, in its order (spec section 3)
OCTOPI_TRANSFORMS: tuple[Transform, ...] = (
    Transform("identity"),
    Transform("rot180_yx", rot90_k=2),
    Transform("flip_z", flip_axes=(0,)),
    Transform("flip_x", flip_axes=(2,)),
    Transform("flip_y", flip_axes=(1,)),
    Transform("rot90_yx", rot90_k=1),
    Transform("rot270_yx", rot90_k=3),
    Transform("flip_zyx", flip_axes=(0, 1, 2)),
)
MAX_TTA = len(OCTOPI_TRANSFORMS)


def tta_transforms(ntta: int) -> tuple[Transform, ...]:
    """The first ``ntta`` of octopi's transforms; ``ntta`` outside 1..8 is refused (one policy everywhere)."""
    if isinstance(ntta, bool) or not isinstance(ntta, int) or not 1 <= ntta <= MAX_TTA:
        from pipeline.errors import ConfigError

        raise ConfigError(f"ntta {ntta!r}: expected 1..{MAX_TTA} (the number of octopi's test-time transforms)")
    return OCTOPI_TRANSFORMS[:ntta]
