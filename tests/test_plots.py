"""Pictures: the circles drawn are where the slice cuts each pick's sphere (x/y not swapped), slices are chosen
through the picks, the PNGs are written."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from pipeline import plots  # noqa: E402
from pipeline.evaluate import score_picks  # noqa: E402
from pipeline.objects import ParticleObject  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_cross_section_radii_against_direct_geometry():
    rng = np.random.default_rng(3)
    for _ in range(50):
        centers = rng.uniform(0, 40, (int(rng.integers(0, 30)), 3))
        radius = float(rng.uniform(1, 10))
        z = float(rng.integers(0, 40))
        idx, radii = plots.cross_section_radii(centers, radius, z)
        for i, c in enumerate(centers):
            dz = abs(c[0] - z)
            if dz < radius:
                k = int(np.flatnonzero(idx == i)[0])
                assert radii[k] == pytest.approx(np.sqrt(radius**2 - dz**2))
            else:
                assert i not in idx


def test_slice_figure_draws_circles_at_x_y_with_the_cut_radius():
    volume = np.random.default_rng(0).normal(size=(37, 64, 51)).astype(np.float32)
    gt = np.array([[10.0, 20.0, 40.0], [30.0, 5.0, 5.0]])  # z, y, x; the second is far from slice 12
    pred = np.array([[13.0, 22.0, 38.0]])
    layers = [
        plots.PickLayer(gt, 6.0, "apo", "ground truth", "#ff0000"),
        plots.PickLayer(pred, 6.0, "apo", "prediction", "#ff0000"),
    ]
    fig = plots.slice_figure(volume, 12, layers)
    ax = fig.axes[0]
    circles = sorted(ax.patches, key=lambda c: c.center[0])
    assert len(circles) == 2
    solid = next(c for c in circles if c.get_linestyle() == "-")
    dashed = next(c for c in circles if c.get_linestyle() != "-")
    assert solid.center == (40.0, 20.0)  # (x, y) of the ground truth
    assert solid.radius == pytest.approx(np.sqrt(36 - 4))
    assert dashed.center == (38.0, 22.0)
    assert dashed.radius == pytest.approx(np.sqrt(36 - 1))
    image = ax.images[0].get_array()
    assert image.shape == (64, 51)
    np.testing.assert_allclose(image, volume[12])


def test_slab_averages_slices():
    volume = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 6, 7), np.float32)
    fig = plots.slice_figure(volume, 4, [], slab=3)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), 4.0)
    fig = plots.slice_figure(volume, 0, [], slab=3)  # clipped at the border: mean of slices 0 and 1
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), 0.5)
    with pytest.raises(ValueError, match="outside the tomogram"):
        plots.slice_figure(volume, 10, [])


def test_choose_slices_goes_through_the_picks():
    centers = [np.array([[5.0, 0, 0], [5.2, 1, 1], [20.0, 3, 3]]), np.zeros((0, 3))]
    zs = plots.choose_slices(centers, depth=48, n_slices=2)
    assert set(zs) <= {5, 20} and len(zs) >= 1
    assert plots.choose_slices([np.array([[100.0, 0, 0]])], depth=48, n_slices=1) == [47]
    # no picks: quarters of 0..47 = 11.75, 23.5, 35.25, rounded
    assert plots.choose_slices([], depth=48, n_slices=3) == [12, 24, 35]


def test_render_slice_and_plot_scores_write_pngs(tmp_path):
    volume = np.random.default_rng(1).normal(size=(20, 30, 25)).astype(np.float32)
    layer = plots.PickLayer(np.array([[10.0, 15.0, 12.0]]), 4.0, "apo", "ground truth", plots.object_color(0))
    path = plots.render_slice(volume, 10, [layer], tmp_path / "a" / "slice.png", title="t", voxel_size=10.0)
    assert path.read_bytes()[:8] == PNG_MAGIC
    objects = [ParticleObject("apo", 1, 60.0, 1.0), ParticleObject("ribo", 2, 150.0, 2.0)]
    gt = np.array([[5.0, 5, 5]])
    result = score_picks({"r": {"apo": (gt, gt), "ribo": (None, gt)}}, objects, 10.0)
    png = plots.plot_scores(result, tmp_path / "scores.png")
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_outcomes_follow_the_evaluation_rule():
    from pipeline.evaluate import score_object

    rng = np.random.default_rng(5)
    for metric in ("octopi", "czii"):
        for _ in range(30):
            gt = rng.uniform(0, 30, (int(rng.integers(0, 12)), 3))
            pred = rng.uniform(0, 30, (int(rng.integers(0, 12)), 3))
            pred_hit, gt_hit = plots.match_outcomes(pred, gt, 5.0, metric)
            counts = score_object(pred, gt, 5.0, metric)
            assert counts.fn == int((~gt_hit).sum())  # missed ground truth = the evaluation's FN, both rules
            if metric == "octopi":
                assert (counts.tp, counts.fp) == (int(pred_hit.sum()), int((~pred_hit).sum()))
    # exactly at the threshold (0.5 x 10 = 5 voxels): czii counts it, octopi (strictly closer) does not
    pred, gt = np.array([[0.0, 0, 0]]), np.array([[5.0, 0, 0]])
    assert plots.match_outcomes(pred, gt, 10.0, "czii")[0][0]
    assert not plots.match_outcomes(pred, gt, 10.0, "octopi", 0.5)[0][0]


def test_slice_figure_colours_by_outcome_and_has_a_scale_bar_in_nm():
    volume = np.zeros((20, 64, 100), np.float32)
    gt = np.array([[10.0, 20.0, 20.0], [10.0, 40.0, 70.0]])
    pred = np.array([[10.0, 21.0, 21.0], [10.0, 50.0, 40.0]])  # one on the first GT particle, one false
    pred_hit, gt_hit = plots.match_outcomes(pred, gt, 5.0)
    assert list(pred_hit) == [True, False] and list(gt_hit) == [True, False]
    layers = [plots.PickLayer(gt, 5.0, "ribo", "ground truth", "#fff", gt_hit, "s"),
              plots.PickLayer(pred, 5.0, "ribo", "prediction", "#fff", pred_hit, "s")]
    fig = plots.slice_figure(volume, 10, layers, voxel_size=10.0)
    ax = fig.axes[0]
    from matplotlib.colors import to_hex

    colour_at = {c.center: to_hex(c.get_edgecolor()) for c in ax.patches}
    want = plots.OUTCOME_COLORS
    assert colour_at[(20.0, 20.0)] == colour_at[(21.0, 21.0)] == want["matched"].lower()
    assert colour_at[(70.0, 40.0)] == want["missed"].lower()
    assert colour_at[(40.0, 50.0)] == want["false"].lower()
    markers = [line for line in ax.lines if line.get_marker() == "s"]
    assert len(markers) == 4  # the object's marker at every centre
    # 100 voxels of 10 A = 100 nm wide: the bar is the longest round length <= 25 nm, i.e. 25 voxels
    bar = next(line for line in ax.lines if line.get_gid() == "scale-bar")
    assert np.diff(bar.get_xdata())[0] == pytest.approx(25.0)
    assert next(t for t in ax.texts if t.get_gid() == "scale-bar-label").get_text() == "25 nm"
    assert plots.scale_bar_nm(630, 10.012) == 100.0
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "ribo: 1 GT found, 1 missed, 1 false" in legend


def test_a_min_score_is_named_in_the_scores_title_and_the_table(tmp_path, monkeypatch):
    """Scores after --min-score 0.5 and without it looked alike in scores.png and the printed table."""
    from pipeline.evaluate_report import format_table

    objects = [ParticleObject("apo", 1, 60.0, 1.0)]
    gt = np.array([[5.0, 5, 5]])
    result = score_picks({"r": {"apo": (gt, gt)}}, objects, 10.0)
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, **kw: figures.append(fig) or path)
    plots.plot_scores(result, tmp_path / "a.png")
    assert "scored" not in figures[-1].axes[0].get_title() and "scored" not in format_table(result)
    result.min_score = 0.5
    plots.plot_scores(result, tmp_path / "b.png")
    assert "picks scored >= 0.5" in figures[-1].axes[0].get_title()
    assert "picks scored >= 0.5" in format_table(result).splitlines()[0]
