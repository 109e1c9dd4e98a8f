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
