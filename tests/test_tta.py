"""pipeline.tta: octopi's 8 transforms in order, each inverse undoes its transform (spec section 3)."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import MAX_NTTA
from pipeline.errors import ConfigError
from pipeline.tta import MAX_TTA, OCTOPI_TRANSFORMS, tta_transforms

# octopi 1.7's own lambdas (Predictor.create_tta_augmentations) on a 5D [B, C, Z, Y, X] input
OCTOPI_FORWARD = [
    lambda x: x,
    lambda x: torch.rot90(x, k=2, dims=(3, 4)),
    lambda x: torch.flip(x, dims=(2,)),
    lambda x: torch.flip(x, dims=(4,)),
    lambda x: torch.flip(x, dims=(3,)),
    lambda x: torch.rot90(x, k=1, dims=(3, 4)),
    lambda x: torch.rot90(x, k=3, dims=(3, 4)),
    lambda x: torch.flip(x, dims=(2, 3, 4)),
]
# ... and its inverses on 4D [C, Z, Y, X] logits
OCTOPI_INVERSE = [
    lambda x: x,
    lambda x: torch.rot90(x, k=-2, dims=(2, 3)),
    lambda x: torch.flip(x, dims=(1,)),
    lambda x: torch.flip(x, dims=(3,)),
    lambda x: torch.flip(x, dims=(2,)),
    lambda x: torch.rot90(x, k=-1, dims=(2, 3)),
    lambda x: torch.rot90(x, k=-3, dims=(2, 3)),
    lambda x: torch.flip(x, dims=(1, 2, 3)),
]


def test_order_and_names_match_octopi():
    assert len(OCTOPI_TRANSFORMS) == MAX_TTA == MAX_NTTA == 8  # the config's bound is octopi's count
    assert [t.name for t in OCTOPI_TRANSFORMS] == [
        "identity", "rot180_yx", "flip_z", "flip_x", "flip_y", "rot90_yx", "rot270_yx", "flip_zyx"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_and_inverse_equal_octopi_lambdas(seed):
    g = torch.Generator().manual_seed(seed)
    shape = [int(s) for s in torch.randint(3, 9, (3,), generator=g)]  # non-cubic (z, y, x)
    x5 = torch.randn(1, 1, *shape, generator=g)
    logits4 = torch.randn(3, *shape, generator=g)
    for i, t in enumerate(OCTOPI_TRANSFORMS):
        assert torch.equal(t.forward(x5), OCTOPI_FORWARD[i](x5)), t.name
        y4 = OCTOPI_FORWARD[i](logits4[None])[0]  # logits in the transformed frame
        assert torch.equal(t.inverse(y4), OCTOPI_INVERSE[i](y4)), t.name


@pytest.mark.parametrize("ndim", [3, 4, 5])
def test_every_inverse_undoes_its_transform(ndim):
    g = torch.Generator().manual_seed(ndim)
    shape = (2, 3)[: ndim - 3] + (5, 7, 6)
    x = torch.randn(*shape, generator=g)
    for t in OCTOPI_TRANSFORMS:
        y = t.forward(x)
        assert torch.equal(t.inverse(y), x), t.name
        assert y.shape[-3:] == ((5, 6, 7) if t.swaps_yx else (5, 7, 6)), t.name
        if t.name != "identity":
            assert not torch.equal(y.reshape(-1)[: x.numel()], x.reshape(-1)), t.name  # it does something


def test_transforms_are_distinct():
    x = torch.randn(4, 4, 4, generator=torch.Generator().manual_seed(5))
    outs = [t.forward(x) for t in OCTOPI_TRANSFORMS]
    for i in range(8):
        for j in range(i):
            assert not torch.equal(outs[i], outs[j]), (i, j)


@pytest.mark.parametrize("ntta", [1, 2, 4, 8])
def test_ntta_takes_the_first_transforms(ntta):
    assert tta_transforms(ntta) == OCTOPI_TRANSFORMS[:ntta]


@pytest.mark.parametrize("ntta", [-3, 0, 9, 12, 2.0, True])
def test_ntta_outside_1_to_8_is_refused(ntta):
    with pytest.raises(ConfigError, match="expected 1..8"):
        tta_transforms(ntta)
