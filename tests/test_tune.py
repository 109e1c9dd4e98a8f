"""pipeline.tune's choice per class: the settings given unless another grid point gains MIN_GAIN on enough
ground-truth particles."""

from __future__ import annotations

from pipeline.evaluate import Counts, object_fbeta
from pipeline.tune import MIN_GAIN, _best

GIVEN = (0.25, 1.0, 0.25)
FEWER_FALSE = (0.25, 1.0, 0.40)


def _table(tp: int, fp_given: int, fp_other: int, runs: int = 2) -> dict:
    return {GIVEN: [Counts(tp, fp_given, 1)] * runs, FEWER_FALSE: [Counts(tp, fp_other, 1)] * runs}


def test_a_clear_gain_on_enough_particles_is_taken():
    table = _table(tp=10, fp_given=40, fp_other=0)  # 2 runs x 11 ground-truth particles
    gain = object_fbeta(Counts(20, 0, 2), 4)[2] - object_fbeta(Counts(20, 80, 2), 4)[2]
    assert gain >= MIN_GAIN
    assert _best(table, [0, 1], 4, GIVEN, min_particles=22)[0] == FEWER_FALSE


def test_the_same_gain_on_too_few_particles_keeps_the_settings_given():
    table = _table(tp=10, fp_given=40, fp_other=0)
    key, counts, fbeta = _best(table, [0, 1], 4, GIVEN, min_particles=23)
    assert key == GIVEN
    assert counts == Counts(20, 80, 2) and fbeta == object_fbeta(counts, 4)[2]
    # counted over the runs tuned on only: one run's 11 particles are too few for 12
    assert _best(table, [1], 4, GIVEN, min_particles=12)[0] == GIVEN
    assert _best(table, [1], 4, GIVEN, min_particles=11)[0] == FEWER_FALSE


def test_a_small_gain_keeps_the_settings_given():
    table = _table(tp=100, fp_given=3, fp_other=2)
    assert _best(table, [0, 1], 4, GIVEN, min_particles=0)[0] == GIVEN
