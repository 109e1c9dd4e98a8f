"""Pictures: per-object scores of an evaluation, and tomogram slices with picks drawn on them.

matplotlib is imported inside the functions and drawn through its Agg canvas directly (no pyplot, no global
backend switch), so importing this module costs nothing and it works on machines without a display.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Saturated colours that stay apart from each other on a grey tomogram, one per object in label order (cycles).
PLOT_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")  # on white
OBJECT_COLORS = ("#FF3B30", "#00E5FF", "#76FF03", "#FF40FF", "#FFD600", "#FF9100", "#2979FF", "#FFFFFF")


def _new_figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, **kwargs) -> Path:
    """PNG through the one atomic writer (aside, then renamed; the umask's mode)."""
    import io

    from pipeline import atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **kwargs)
    return atomic.write_bytes(path, buffer.getvalue())


def plot_scores(result, path) -> Path:
    """Grouped bars of precision, recall and F-beta per object (counts summed over runs, as the final score
    uses them), with each object's weight and the final weighted score in the title; beside them, when the
    picks have scores, precision against recall per object as picks scored below a rising level are left out
    (``result.pr_curves``). Returns ``path``."""
    path = Path(path)
    names = [o.name for o in result.objects]
    scores = result.object_scores()
    values = np.array([scores[n] for n in names], dtype=float).reshape(-1, 3)
    curves = getattr(result, "pr_curves", None) or {}
    bars_width = max(6.0, 1.3 * len(names) + 2.0)
    fig = _new_figure(bars_width + (4.8 if curves else 0.0), 4.5)
    ax = fig.add_subplot(1, 2, 1) if curves else fig.add_subplot(1, 1, 1)
    x = np.arange(len(names))
    width = 0.26
    bar_labels = ("precision", "recall", f"F{result.beta:g}")
    bar_colors = ("#56B4E9", "#E69F00", "#009E73")
    for i, (label, color) in enumerate(zip(bar_labels, bar_colors)):
        bars = ax.bar(x + (i - 1) * width, values[:, i], width, label=label, color=color)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(x)
    ax.set_xticklabels(
        [f"{n}\nweight {o.weight:g}" for n, o in zip(names, result.objects)], fontsize=8, rotation=0
    )
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("score")
    ax.legend(loc="upper left", ncols=3, fontsize=8, frameon=False)
    ax.set_title(
        f"{result.metric} rule ({result.distance_threshold_scale:g} x radius), {len(result.run_ids)} runs"
        f"{getattr(result, 'picks_scope', '')}: "
        f"final weighted F{result.beta:g} = {result.final_fbeta_score:.3f}",
        fontsize=10,
    )
    ax.spines[["top", "right"]].set_visible(False)
    if curves:
        pr = fig.add_subplot(1, 2, 2)
        for i, name in enumerate(names):
            if name not in curves:
                continue
            _, precision, recall, _ = np.array(curves[name]).T
            pr.plot(recall, precision, "-o", ms=2.5, lw=1.2, color=PLOT_COLORS[i % len(PLOT_COLORS)], label=name)
        pr.set_xlim(0, 1.02)
        pr.set_ylim(0, 1.02)
        pr.set_xlabel("recall")
        pr.set_ylabel("precision")
        pr.set_title("picks scored >= a rising level", fontsize=10)
        pr.legend(fontsize=7, frameon=False, loc="lower left")
        pr.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return _save(fig, path, dpi=120)


# ---------------------------------------------------------------------------------------------------------------
# Slices with picks
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PickLayer:
    """One set of picks to draw: ``centers_zyx_vox`` (N, 3), the object's radius in voxels, a legend name."""

    centers_zyx_vox: np.ndarray
    radius_vox: float
    object_name: str
    source: str  # "ground truth" or "prediction"
    color: str
    matched: np.ndarray | None = None  # per pick, when ground truth exists: matched (True) or missed / false
    marker: str = "o"  # the object's marker, drawn at each circle's centre when outcomes are shown

    def outcomes(self) -> list[str] | None:
        """Per pick: "matched", or "missed" (ground truth) / "false" (prediction); None without ground truth."""
        if self.matched is None:
            return None
        other = "missed" if self.source == "ground truth" else "false"
        return ["matched" if m else other for m in np.asarray(self.matched, dtype=bool)]


# Outcome colours (colour-blind safe on grey: green, yellow, magenta); objects are told apart by markers then.
OUTCOME_COLORS = {"matched": "#00E676", "missed": "#FFD600", "false": "#FF2BD6"}
OBJECT_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def object_marker(index: int) -> str:
    return OBJECT_MARKERS[index % len(OBJECT_MARKERS)]


def match_outcomes(pred_zyx, gt_zyx, radius_vox: float, metric: str = "octopi",
                   threshold_scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(prediction matched, ground truth matched) as the evaluation decides them: a prediction matches when a
    ground-truth point is within the threshold (scale x radius; octopi: closer than, czii: at most), a
    ground-truth point is matched when a prediction is. (The czii rule counts two picks on one particle as one
    TP and one FP; here both show as matched.)"""
    from pipeline.evaluate import nearest_distances, resolve_threshold_scale

    pred = np.asarray(pred_zyx, dtype=np.float64).reshape(-1, 3)
    gt = np.asarray(gt_zyx, dtype=np.float64).reshape(-1, 3)
    if not len(pred) or not len(gt):
        return np.zeros(len(pred), bool), np.zeros(len(gt), bool)
    threshold = float(radius_vox) * resolve_threshold_scale(metric, threshold_scale)
    d_pred = nearest_distances(pred, gt, threshold)
    d_gt = nearest_distances(gt, pred, threshold)
    if metric == "octopi":
        return d_pred < threshold, d_gt < threshold
    return d_pred <= threshold, d_gt <= threshold


def cross_section_radii(centers_zyx_vox: np.ndarray, radius_vox: float, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Which spheres of radius ``radius_vox`` the plane ``z`` cuts, and the radius of each cut circle.

    Returns (indices into ``centers_zyx_vox``, circle radii in voxels)."""
    centers = np.asarray(centers_zyx_vox, dtype=np.float64).reshape(-1, 3)
    dz = centers[:, 0] - float(z)
    inside = np.abs(dz) < radius_vox
    idx = np.flatnonzero(inside)
    return idx, np.sqrt(radius_vox**2 - dz[idx] ** 2)


def choose_slices(centers_zyx_vox: Sequence[np.ndarray], depth: int, n_slices: int) -> list[int]:
    """Up to ``n_slices`` z indices through pick centres (evenly spaced quantiles of the picks' z); evenly spaced
    through the volume when there are no picks."""
    if depth < 1 or n_slices < 1:
        return []
    zs = [np.asarray(c, dtype=np.float64).reshape(-1, 3)[:, 0] for c in centers_zyx_vox]
    z_all = np.concatenate(zs) if zs else np.zeros(0)
    z_all = z_all[np.isfinite(z_all)]
    if len(z_all) == 0:
        picked = np.linspace(0, depth - 1, n_slices + 2)[1:-1]
    else:
        # "nearest": each chosen slice goes through an actual pick centre
        picked = np.quantile(z_all, (np.arange(n_slices) + 0.5) / n_slices, method="nearest")
    out = sorted({int(min(max(round(float(z)), 0), depth - 1)) for z in picked})
    return out


def render_slice(
    volume_zyx: np.ndarray,
    z: int,
    layers: Sequence[PickLayer],
    path,
    *,
    title: str = "",
    slab: int = 1,
    voxel_size: float | None = None,
) -> Path:
    """Draw tomogram slice ``z`` with its picks (see ``slice_figure``) and save it as a PNG at ``path``."""
    path = Path(path)
    fig = slice_figure(volume_zyx, z, layers, title=title, slab=slab, voxel_size=voxel_size)
    return _save(fig, path, dpi=100, bbox_inches="tight")


def slice_figure(
    volume_zyx: np.ndarray,
    z: int,
    layers: Sequence[PickLayer],
    *,
    title: str = "",
    slab: int = 1,
    voxel_size: float | None = None,
):
    """A matplotlib Figure of tomogram slice ``z`` (mean of ``slab`` slices centred on it, for contrast) with
    every pick whose sphere the slice cuts drawn as a circle of the cut radius: ground truth solid, predictions
    dashed. Layers with outcomes (``matched``) are coloured by them (matched green, missed GT yellow, false picks
    magenta) with the object's marker at each centre; otherwise one colour per object and a cross at centres
    within half a voxel of the slice. With ``voxel_size``, a scale bar in nm. Image axes: x to the right, y down,
    in voxels."""
    from matplotlib.patches import Circle

    depth = volume_zyx.shape[0]
    if not 0 <= z < depth:
        raise ValueError(f"slice z={z} is outside the tomogram (0 to {depth - 1})")
    half = max(int(slab), 1) // 2
    z0, z1 = max(z - half, 0), min(z + half + 1, depth)
    image = np.asarray(volume_zyx[z0:z1], dtype=np.float32).mean(axis=0)
    lo, hi = np.percentile(image, (1, 99)) if image.size else (0.0, 1.0)
    if not hi > lo:
        hi = lo + 1.0

    ny, nx = image.shape
    scale = 8.0 / max(nx, ny)
    fig = _new_figure(nx * scale, ny * scale)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest", origin="upper")
    counts: dict = {}
    for layer in layers:
        idx, radii = cross_section_radii(layer.centers_zyx_vox, layer.radius_vox, z)
        centers = np.asarray(layer.centers_zyx_vox, dtype=np.float64).reshape(-1, 3)
        outcomes = layer.outcomes()
        dashed = layer.source != "ground truth"
        for i, r in zip(idx, radii):
            cz, cy, cx = centers[i]
            color = OUTCOME_COLORS[outcomes[i]] if outcomes is not None else layer.color
            ax.add_patch(
                Circle(
                    (cx, cy), r, fill=False, edgecolor=color, linewidth=1.3 if dashed else 2.0,
                    linestyle="--" if dashed else "-",
                )
            )
            if outcomes is not None:  # the object by its marker, at every circle's centre
                ax.plot([cx], [cy], marker=layer.marker, color=color, markersize=4, linestyle="none",
                        markerfacecolor="none" if dashed else color)
            elif abs(cz - z) <= 0.5:
                ax.plot([cx], [cy], marker="+", color=layer.color, markersize=5, markeredgewidth=1)
            key = (layer.object_name, layer.source, outcomes[i] if outcomes is not None else None)
            counts[key] = counts.get(key, 0) + 1
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(ny - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    size = f" ({voxel_size:g} A/voxel)" if voxel_size else ""
    ax.set_title(f"{title}  z = {z}{size}" if title else f"z = {z}{size}", fontsize=10)
    if voxel_size:
        draw_scale_bar(ax, nx, ny, voxel_size)
    ax.legend(handles=_legend_handles(layers, counts), loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
              frameon=False)
    return fig


def _legend_handles(layers, counts) -> list:
    from matplotlib.lines import Line2D

    with_outcomes = any(layer.matched is not None for layer in layers)
    handles, seen = [], set()
    for layer in layers:
        if layer.object_name in seen:
            continue
        seen.add(layer.object_name)
        n = {k[1:]: v for k, v in counts.items() if k[0] == layer.object_name}
        if with_outcomes:
            label = (f"{layer.object_name}: {n.get(('ground truth', 'matched'), 0)} GT found, "
                     f"{n.get(('ground truth', 'missed'), 0)} missed, {n.get(('prediction', 'false'), 0)} false")
            handles.append(Line2D([], [], color="black", marker=layer.marker, linestyle="none", label=label))
        else:
            label = (f"{layer.object_name} ({n.get(('ground truth', None), 0)} GT, "
                     f"{n.get(('prediction', None), 0)} pred)")
            handles.append(Line2D([], [], color=layer.color, linewidth=2, label=label))
    if with_outcomes:
        handles += [Line2D([], [], color=OUTCOME_COLORS["matched"], linewidth=2, label="matched (GT and pick)"),
                    Line2D([], [], color=OUTCOME_COLORS["missed"], linewidth=2, label="missed (GT, no pick)"),
                    Line2D([], [], color=OUTCOME_COLORS["false"], linewidth=2, label="false pick (no GT)")]
    handles.append(Line2D([], [], color="black", linestyle="-", label="ground truth"))
    handles.append(Line2D([], [], color="black", linestyle="--", label="prediction"))
    return handles


SCALE_BAR_NM = (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000)


def scale_bar_nm(width_vox: int, voxel_size: float, fraction: float = 0.25) -> float:
    """The longest round length in nm that is at most ``fraction`` of the image width (at least the shortest)."""
    width_nm = width_vox * voxel_size / 10.0
    fitting = [n for n in SCALE_BAR_NM if n <= fraction * width_nm]
    return float(fitting[-1] if fitting else SCALE_BAR_NM[0])


def draw_scale_bar(ax, nx: int, ny: int, voxel_size: float) -> None:
    """A white bar with black outline and its length in nm in the image's lower left corner."""
    import matplotlib.patheffects as pe

    length_nm = scale_bar_nm(nx, voxel_size)
    length_vox = length_nm * 10.0 / voxel_size
    x0, y = 0.04 * nx, ny - 0.05 * ny
    outline = [pe.Stroke(linewidth=3, foreground="black"), pe.Normal()]
    ax.plot([x0, x0 + length_vox], [y, y], color="white", linewidth=4, solid_capstyle="butt", gid="scale-bar",
            path_effects=[pe.Stroke(linewidth=6, foreground="black"), pe.Normal()])
    ax.text(x0 + length_vox / 2, y - 0.02 * ny, f"{length_nm:g} nm", color="white", ha="center", va="bottom",
            fontsize=9, gid="scale-bar-label", path_effects=outline)


def object_color(index: int) -> str:
    return OBJECT_COLORS[index % len(OBJECT_COLORS)]

