"""The figures the notebook shows: every panel with a title, a colour bar and its unit.

    fig = plot_dataset_examples("data", split="train", n=4)      # phase | nuclei | membrane | mask
    plot_predictions(phase, stain, {"GAN": gan, "regression": l1}, crop=(slice(0, 128),) * 2)
    plot_metric_distributions({"GAN": gan_table, "regression": l1_table})
    plot_uncertainty_maps(maps["mean"], maps["std"], stain, cv=maps["cv"])
    plot_training_curves(logs.read_scalars("runs/pix2pixhd_nuclei/logs"))

Functions take arrays and tables (only `plot_dataset_examples` reads files), return a
matplotlib Figure and, given a path, also save it as a PNG, so the command line and the
notebook make the same pictures. Colour maps are perceptually uniform: gray for phase (rad),
magma for stains (a.u.), viridis for spreads, a diverging map centred on 0 for signed
differences. Every stain panel of one figure shares one colour scale, the real stain's 1st to
99.9th percentile (`STAIN_PERCENTILES`), so brightness compares; the colour bar says so, and
a prediction that cannot be as bright as the brightest real nuclei shows them dimmer.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from pix2pixhd import layout, logs, metrics, normalisation
from pix2pixhd.evaluate import REAL_STAIN
from pix2pixhd.files import write_atomically

log = logging.getLogger(__name__)

_PANELS = (
    ("phase", "phase", "gray", "rad"),
    ("nuclei", "nuclei (Hoechst)", "magma", "a.u."),
    ("membrane", "membrane (CellMask)", "viridis", "a.u."),
)

PHASE_CMAP, STAIN_CMAP, SPREAD_CMAP, ERROR_CMAP, SIGNED_CMAP = (
    "gray", "magma", "viridis", "inferno", "RdBu_r")
PHASE_UNIT = "phase (rad)"
STAIN_UNIT = "intensity (a.u.)"
AU = "(a.u.)"
STAIN_PERCENTILES = normalisation.STAIN_DISPLAY_PERCENTILES
"""The stain colour scale: the real stain's 1st to 99.9th percentile, shared by all stain panels.

High enough that whole bright nuclei (dividing cells) keep their brightness: a scale that ended
near the normaliser's p_high (the 99.5th percentile of the train split) would show a real
stain and a prediction clipped at p_high alike. The 0.1 % of pixels above it get the top colour,
which the colour bar's arrow marks."""

OUTLINE_COLOURS = {"truth": "#56B4E9", "prediction": "#E69F00"}
"""Sky blue and orange (Okabe-Ito): distinct on gray and for colour-blind readers."""

ERROR_OUTLINES = {
    "matched": ("#009E73", "green", "matched at IoU 0.5 (predicted outline)"),
    "missed": ("#56B4E9", "blue", "missed (true outline)"),
    "invented": ("#D55E00", "red", "invented (predicted outline)"),
    "other": ("#F0E442", "yellow", "other unmatched (true and predicted outlines): too "
              "large, merged, split, shifted"),
}
"""Outline colour, its name and meaning in `plot_instance_errors` (Okabe-Ito colours)."""

CROP_COLOUR = "#00E5FF"

METRIC_LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM (1 = identical)",
    "pearson": "Pearson r",
    "mae": "MAE (a.u.)",
    "nrmse": "NRMSE (fraction of range)",
    "f1_iou50": "F1 of nuclei at IoU 0.5",
    "f1_mean": "F1 averaged over IoU 0.5-0.95",
    "hf_power_ratio": "HF power ratio (1 = as sharp as real)",
    "mean_matched_iou": "mean IoU of matched nuclei",
}

DPI = 110


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write the figure as a PNG at `path`, whole or not at all; a link there is replaced,
    its target left alone (`files.write_atomically`)."""
    written = write_atomically(path, lambda temporary: figure.savefig(
        temporary, format="png", dpi=DPI, bbox_inches="tight"))
    log.info("wrote %s", path)
    return written


def _save(figure: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        save_figure(figure, path)
    return figure


# --- the data ------------------------------------------------------------------------------------


def plot_dataset_examples(
    root: str | Path, *, split: str = "train", n: int = 4, path: str | Path | None = None
) -> Figure:
    """Show `n` fields of view of a split, one row each: phase | nuclei | membrane | nuclei mask.

    Phase is shown between the 0.5th and 99.5th percentile of each image so one bright pixel
    does not hide the rest, stains between their `STAIN_PERCENTILES`, so the brightest nuclei
    stand out. Channels missing on disk are left blank with a note.
    """
    fovs = layout.list_fovs(root, split)
    if not fovs:
        raise layout.DataError(f"{Path(root) / split} has no images; {layout.HOW_TO_GET_DATA}")
    fovs = fovs[: max(n, 1)]
    figure, axes = plt.subplots(
        len(fovs), 4, figsize=(4 * 3.4, len(fovs) * 3.0), squeeze=False, layout="constrained"
    )
    for row, fov in zip(axes, fovs, strict=True):
        for ax, (channel, title, cmap, unit) in zip(row[:3], _PANELS, strict=True):
            file = layout.image_path(root, split, channel, fov)
            if not file.is_file():
                _blank(ax, f"{title}\n(no file)")
                continue
            image = layout.read_image(file)
            stain = channel != "phase"
            low, high = _range(image, STAIN_PERCENTILES if stain else normalisation.PERCENTILES)
            shown = ax.imshow(image, cmap=cmap, vmin=low, vmax=high)
            if stain:
                _stain_colorbar(figure, shown, ax, source="this image's", compact=True,
                                shrink=0.85)
            else:
                figure.colorbar(shown, ax=ax, shrink=0.85, label=unit)
            ax.set_title(f"{fov}: {title}", fontsize=9)
            ax.set_axis_off()
        _show_mask(figure, row[3], layout.image_path(root, split, layout.MASKS, fov), fov)
    figure.suptitle(f"{Path(root).name or root} / {split}: {len(fovs)} fields of view")
    return _save(figure, path)


def _show_mask(figure: Figure, ax: plt.Axes, file: Path, fov: str) -> None:
    if not file.is_file():
        _blank(ax, "nuclei mask\n(no file)")
        return
    labels = layout.read_mask(file)
    count = int(len(np.unique(labels[labels > 0])))
    shown = ax.imshow(labels, cmap=_label_colormap(int(labels.max())), interpolation="nearest")
    figure.colorbar(shown, ax=ax, shrink=0.85, label="nucleus label")
    ax.set_title(f"{fov}: nuclei mask ({count} nuclei)", fontsize=9)
    ax.set_axis_off()


def _label_colormap(n_labels: int) -> ListedColormap:
    """Black background, then shuffled bright colours so touching nuclei differ."""
    rng = np.random.default_rng(0)
    colours = plt.get_cmap("hsv")(np.linspace(0, 1, max(n_labels, 1), endpoint=False))
    colours = colours[rng.permutation(len(colours))]
    colours[:, :3] = 0.35 + 0.65 * colours[:, :3]
    return ListedColormap(np.vstack([[0, 0, 0, 1], colours]))


def _blank(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


# --- images side by side -------------------------------------------------------------------------


def _images(**named: np.ndarray) -> dict[str, np.ndarray]:
    """The named arrays as float 2-D images of one shape, or a ValueError naming the odd one."""
    arrays = {name: np.asarray(value, dtype=np.float64) for name, value in named.items()}
    shape = None
    for name, array in arrays.items():
        if array.ndim != 2:
            raise ValueError(f"{name} has shape {array.shape}; expected one 2-D image (H, W)")
        shape = shape or (next(iter(arrays)), array.shape)
        if array.shape != shape[1]:
            raise ValueError(f"{name} has shape {array.shape} but {shape[0]} has {shape[1]}; "
                             "pass images of one field of view, aligned pixel for pixel")
    return arrays


def _range(image: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """A colour scale (low, high) from robust percentiles; never empty, even for a flat image."""
    low, high = (float(v) for v in np.percentile(image, percentiles))
    if high <= low:
        high = low + (abs(low) or 1.0) * 1e-3
    return low, high


def _show(
    ax: plt.Axes, image: np.ndarray, title: str, cmap: str, limits: tuple[float, float]
) -> plt.AxesImage:
    shown = ax.imshow(image, cmap=cmap, vmin=limits[0], vmax=limits[1], interpolation="antialiased")
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()
    return shown


def _stain_colorbar(
    figure: Figure, shown: plt.AxesImage, ax, source: str = "the real stain's",
    compact: bool = False, **kwargs
) -> None:
    """The colour bar of stain panels: its unit, where its range comes from, arrows for beyond.

    compact: a two-line label for short colour bars."""
    low, high = STAIN_PERCENTILES
    label = (f"a.u.; colours: {source}\npercentiles {low:g}-{high:g}" if compact else
             f"stain {STAIN_UNIT}\ncolours span {source} percentiles {low:g}-{high:g};\n"
             "pixels beyond get the end colours")
    figure.colorbar(shown, ax=ax, extend="both", label=label, **kwargs)


def _crop_box(crop: tuple[slice, slice], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a (rows, columns) crop, or a ValueError if it is empty."""
    if len(crop) != 2 or not all(isinstance(s, slice) for s in crop):
        raise ValueError(f"crop={crop!r} must be two slices (rows, columns), "
                         "e.g. (slice(100, 228), slice(50, 178))")
    (top, bottom, step_y), (left, right, step_x) = (
        s.indices(n) for s, n in zip(crop, shape, strict=True))
    if step_y != 1 or step_x != 1 or bottom <= top or right <= left:
        raise ValueError(f"crop={crop!r} selects nothing (or has a step) in an image of {shape}")
    return top, bottom, left, right


def _outline_crop(ax: plt.Axes, box: tuple[int, int, int, int]) -> None:
    top, bottom, left, right = box
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                           edgecolor=CROP_COLOUR, linewidth=1.3))


def plot_predictions(
    phase: np.ndarray,
    target: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    *,
    titles: Sequence[str] | None = None,
    crop: tuple[slice, slice] | None = None,
    path: str | Path | None = None,
) -> Figure:
    """One field of view: phase | real stain | each model's prediction, e.g. {"GAN": .., ...}.

    All images (H, W); predictions in the real stain's units. Every stain panel uses the same
    colour scale (the real stain's `STAIN_PERCENTILES`), so a dimmer or brighter prediction
    looks dimmer or brighter, and one clipped below the brightest real nuclei shows them dim.
    titles: one per column, replacing the defaults.
    crop: (rows, columns) slices; draws that box on the first row and adds a second row with
    the zoomed crop of every column, where blur and invented texture show.
    """
    images = _images(phase=phase, target=target,
                     **{f"prediction {name!r}": image for name, image in predictions.items()})
    columns = list(images.values())
    names = ["phase", "real stain", *(f"{name} prediction" for name in predictions)]
    if titles is not None:
        if len(titles) != len(names):
            raise ValueError(f"{len(titles)} titles for {len(names)} columns ({', '.join(names)})")
        names = list(titles)
    box = None if crop is None else _crop_box(crop, columns[0].shape)
    rows = 1 if box is None else 2
    figure, axes = plt.subplots(rows, len(columns), figsize=(3.2 * len(columns) + 1.6, 3.3 * rows),
                                squeeze=False, layout="constrained")
    phase_limits = _range(columns[0], normalisation.PERCENTILES)
    stain_limits = _range(columns[1], STAIN_PERCENTILES)
    for column, (image, name) in enumerate(zip(columns, names, strict=True)):
        cmap, limits = (PHASE_CMAP, phase_limits) if column == 0 else (STAIN_CMAP, stain_limits)
        _show(axes[0, column], image, name, cmap, limits)
        if box is not None:
            _outline_crop(axes[0, column], box)
            top, bottom, left, right = box
            _show(axes[1, column], image[top:bottom, left:right], f"{name} (zoom)", cmap, limits)
    figure.colorbar(axes[0, 0].images[0], ax=axes[:, 0], location="left", shrink=0.8,
                    label=PHASE_UNIT)
    if len(columns) > 1:
        _stain_colorbar(figure, axes[0, 1].images[0], axes[:, 1:], shrink=0.8)
    return _save(figure, path)


def plot_prediction_grid(
    phases: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    fovs: Sequence[str],
    *,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Several fields of view, one row each: phase | real stain | prediction (e.g. best, worst).

    Each row's stain and prediction share that row's colour scale (its real stain's
    `STAIN_PERCENTILES`). fovs label the rows; put a score in them to say why a row is shown,
    e.g. "fov_0003 (PSNR 31.2 dB)".
    """
    counts = {len(phases), len(targets), len(predictions), len(fovs)}
    if len(counts) != 1 or not len(fovs):
        raise ValueError(f"{len(phases)} phases, {len(targets)} targets, {len(predictions)} "
                         f"predictions and {len(fovs)} fovs: pass one of each per row (>= 1 row)")
    figure, axes = plt.subplots(len(fovs), 3, figsize=(11.5, 3.4 * len(fovs)), squeeze=False,
                                layout="constrained")
    for row, phase, target, prediction, fov in zip(axes, phases, targets, predictions, fovs,
                                                   strict=True):
        images = _images(**{f"phase of {fov}": phase, f"target of {fov}": target,
                            f"prediction of {fov}": prediction})
        phase, target, prediction = images.values()
        shown = _show(row[0], phase, f"{fov}: phase", PHASE_CMAP,
                      _range(phase, normalisation.PERCENTILES))
        figure.colorbar(shown, ax=row[0], location="left", shrink=0.85, label=PHASE_UNIT)
        limits = _range(target, STAIN_PERCENTILES)
        _show(row[1], target, f"{fov}: real stain", STAIN_CMAP, limits)
        shown = _show(row[2], prediction, f"{fov}: prediction", STAIN_CMAP, limits)
        _stain_colorbar(figure, shown, row[1:], compact=True, shrink=0.85)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_segmentation_overlay(
    stain: np.ndarray,
    true_labels: np.ndarray,
    predicted_labels: np.ndarray,
    *,
    title: str = "",
    reference: np.ndarray | None = None,
    path: str | Path | None = None,
) -> Figure:
    """A stain (H, W) in gray with the outlines of true nuclei and of segmented nuclei on it.

    Labels are integer images (H, W), 0 = background. True outlines are drawn just outside each
    nucleus and predicted ones just inside, so where they agree both stay visible as a double
    line; a lone colour is a nucleus missed (blue) or invented or misshapen (orange).
    reference: the real stain (H, W) whose `STAIN_PERCENTILES` set the gray scale when `stain`
    is a prediction, so it compares with the real stain; None: `stain`'s own.
    """
    named = {"stain": stain, "true_labels": true_labels, "predicted_labels": predicted_labels}
    images = _images(**named, **({} if reference is None else {"reference": reference}))
    stain = images["stain"]
    # int32, not int64: scikit-image's "outer" boundaries of 64-bit labels also mark pixels
    # inside the nuclei (its erosion loses the 64-bit maximum it uses as a sentinel)
    true_labels, predicted_labels = (np.asarray(a).astype(np.int32) for a in
                                     (true_labels, predicted_labels))
    figure, ax = plt.subplots(figsize=(7.0, 6.6), layout="constrained")
    shown = _show(ax, stain, title or "nuclei outlines on the stain", "gray",
                  _range(images.get("reference", stain), STAIN_PERCENTILES))
    _stain_colorbar(figure, shown, ax, shrink=0.8,
                    source="this image's" if reference is None else "the real stain's")
    width = max(1, round(max(stain.shape) / 300))  # a 1-pixel line vanishes in a large image
    handles = []
    for labels, mode, key, name in ((true_labels, "outer", "truth", "ground truth"),
                                    (predicted_labels, "inner", "prediction", "segmented")):
        outline = np.zeros((*stain.shape, 4))
        outline[_outline(labels, mode, width)] = to_rgba(OUTLINE_COLOURS[key])
        ax.imshow(outline, interpolation="nearest")
        count = int(np.count_nonzero(np.unique(labels)))
        handles.append(Line2D([], [], color=OUTLINE_COLOURS[key], lw=2.5,
                              label=f"{name} ({count} {'nucleus' if count == 1 else 'nuclei'})"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=2,
              frameon=False, fontsize=9)
    return _save(figure, path)


def plot_instance_errors(
    stains: Sequence[np.ndarray],
    true_labels: Sequence[np.ndarray],
    predicted_labels: Sequence[np.ndarray],
    causes: Sequence[Mapping[str, np.ndarray]],
    titles: Sequence[str],
    *,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Fields of view (e.g. a model's worst and best) with their nuclei outlined by outcome.

    stains: the images to draw on (H, W), e.g. the virtual stains; true_labels and
    predicted_labels: integer labels (H, W); causes: `metrics.error_causes` of each pair. On
    the stain in gray: matched predictions in green, missed true nuclei in blue, invented
    predictions in red, and the other unmatched nuclei (too large, merged, split, shifted), true
    and predicted, in yellow (ERROR_OUTLINES): true outlines lie just outside a nucleus and
    predicted ones just inside, so where both are drawn their gap shows the size error. Each
    panel's title adds its counts.
    """
    counts = {len(stains), len(true_labels), len(predicted_labels), len(causes), len(titles)}
    if len(counts) != 1 or not len(titles):
        raise ValueError(f"{len(stains)} stains, {len(true_labels)} true and "
                         f"{len(predicted_labels)} predicted label images, {len(causes)} causes "
                         f"and {len(titles)} titles: pass one of each per panel (>= 1 panel)")
    columns = min(len(titles), 2)
    rows = math.ceil(len(titles) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.2 * columns, 5.6 * rows + 0.6),
                                squeeze=False, layout="constrained")
    for ax, stain, truth, predicted, found, name in zip(
            axes.flat, stains, true_labels, predicted_labels, causes, titles, strict=False):
        images = _images(stain=stain, true_labels=truth, predicted_labels=predicted)
        stain = images["stain"]
        truth, predicted = (np.asarray(a).astype(np.int32) for a in (truth, predicted))
        other_pred = np.setdiff1d(np.unique(predicted[predicted > 0]),
                                  np.union1d(found["matched_pred"], found["invented"]))
        other_true = np.setdiff1d(np.unique(truth[truth > 0]),
                                  np.union1d(found["matched_true"], found["missed"]))
        drawn = {"matched": [(predicted, found["matched_pred"], "inner")],
                 "missed": [(truth, found["missed"], "outer")],
                 "invented": [(predicted, found["invented"], "inner")],
                 "other": [(predicted, other_pred, "inner"), (truth, other_true, "outer")]}
        shown = _show(ax, stain, f"{name}\n{found['matched_pred'].size} matched, "
                      f"{found['missed'].size} missed, {found['invented'].size} invented",
                      "gray", _range(stain, STAIN_PERCENTILES))
        figure.colorbar(shown, ax=ax, shrink=0.8, label=f"stain {STAIN_UNIT}")
        width = max(1, round(max(stain.shape) / 300))
        for key, layers in drawn.items():
            outline = np.zeros((*stain.shape, 4))
            for labels, ids, mode in layers:
                line = _outline(np.where(np.isin(labels, ids), labels, 0), mode, width)
                outline[line] = to_rgba(ERROR_OUTLINES[key][0])
            ax.imshow(outline, interpolation="nearest")
    for ax in axes.flat[len(titles):]:
        ax.set_axis_off()
    handles = [Line2D([], [], color=colour, lw=2.5, label=f"{colour_name}: {meaning}")
               for colour, colour_name, meaning in ERROR_OUTLINES.values()]
    figure.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False, fontsize=9)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def _outline(labels: np.ndarray, mode: str, width: int) -> np.ndarray:
    """Boolean (H, W): the labels' boundaries, `width` pixels thick, grown only to the
    side `mode` puts them on (outside the nuclei for "outer", inside for "inner")."""
    line = find_boundaries(labels, mode=mode)
    side = labels == 0 if mode == "outer" else labels != 0
    for _ in range(width - 1):
        line |= ndi.binary_dilation(line) & side
    return line


# --- tables of metrics ---------------------------------------------------------------------------


def plot_metric_distributions(
    tables: Mapping[str, pd.DataFrame],
    metrics: Sequence[str] = ("psnr", "ssim", "pearson", "f1_iou50"),
    *,
    path: str | Path | None = None,
) -> Figure:
    """One panel per metric: each model's per-image values (from `evaluate_predictions`) as a
    box (median, quartiles) with every image as a point.

    A dashed line marks the mean of `real_stain_<metric>` where the tables have it: the real
    stain segmented the same way, the ceiling of the instance metrics. Metrics that no table
    has (e.g. F1 without ground-truth masks) are skipped with a warning; non-finite values
    (an inf PSNR of a perfect prediction) are left out of their panel.
    """
    if not tables:
        raise ValueError("no tables: pass {model name: evaluate_predictions table}")
    shown = [m for m in metrics if any(m in table for table in tables.values())]
    skipped = [m for m in metrics if m not in shown]
    if skipped:
        log.warning("no table has %s; those panels are left out", ", ".join(skipped))
    if not shown:
        known = sorted(set().union(*(t.columns for t in tables.values())))
        raise ValueError(f"none of the metrics {list(metrics)} is a column of the tables; "
                         f"they have: {', '.join(known)}")
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    panel_width = max(3.4, 1.4 + 1.0 * len(tables))
    figure, axes = plt.subplots(1, len(shown), figsize=(panel_width * len(shown), 3.8),
                                squeeze=False, layout="constrained")
    for ax, metric in zip(axes[0], shown, strict=True):
        names = [name for name, table in tables.items() if metric in table]
        values = [_finite(tables[name][metric]) for name in names]
        positions = np.arange(1, len(names) + 1)
        ax.boxplot(values, positions=positions, widths=0.5, showfliers=False,
                   medianprops={"color": "black"}, boxprops={"color": "0.35"},
                   whiskerprops={"color": "0.35"}, capprops={"color": "0.35"})
        for i, (position, points) in enumerate(zip(positions, values, strict=True)):
            jitter = rng.uniform(-0.13, 0.13, len(points))
            ax.scatter(position + jitter, points, s=14, alpha=0.7, color=f"C{i}", zorder=3,
                       edgecolors="none")
        ax.set_xticks(positions, [textwrap.fill(name, 14) for name in names], fontsize=9)
        ax.set_xlim(0.4, len(names) + 0.6)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.set_title(f"{METRIC_LABELS.get(metric, metric).split(' (')[0]} per image", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        reference = [table[REAL_STAIN + metric] for table in tables.values()
                     if REAL_STAIN + metric in table]
        if reference:
            mean = float(np.nanmean(_finite(reference[0])))
            ax.axhline(mean, color="0.2", linestyle="--", lw=1.2,
                       label=f"real stain: {mean:.3g}")
            ax.legend(fontsize=8, loc="best")
    n_images = ", ".join(f"{name}: {len(table)}" for name, table in tables.items())
    figure.suptitle(f"per-image metrics on the test images ({n_images} images)", fontsize=11)
    return _save(figure, path)


def _finite(values: pd.Series | np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]


def plot_f1_vs_threshold(
    curves: Mapping[str, pd.DataFrame], *, path: str | Path | None = None
) -> Figure:
    """F1 of the nuclei against the IoU a match needs, one line per model.

    curves: {model: `evaluate.f1_per_threshold` table (threshold, f1, real_stain_f1)}. The
    real stain, segmented the same way, is the dashed line: what a perfect virtual stain would
    reach with this segmentation. A curve that falls early finds the nuclei but not their shape.
    """
    if not curves:
        raise ValueError("no curves: pass {model name: evaluate.f1_per_threshold(table)}")
    figure, ax = plt.subplots(figsize=(6.0, 4.2), layout="constrained")
    for i, (name, curve) in enumerate(curves.items()):
        _require(curve, ("threshold", "f1"), f"curve of {name!r}", "evaluate.f1_per_threshold")
        ax.plot(curve["threshold"], curve["f1"], marker="o", ms=4, lw=1.8, color=f"C{i}",
                label=name)
    real = [curve for curve in curves.values() if "real_stain_f1" in curve]
    if real:
        ax.plot(real[0]["threshold"], real[0]["real_stain_f1"], color="black", linestyle="--",
                lw=1.5, label="real stain (same segmentation)")
    ax.set_xlabel("IoU threshold for a match")
    ax.set_ylabel("F1 (mean over images)")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0.48, 0.97)
    ax.set_title("nuclei found in the virtual stain, by required overlap")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return _save(figure, path)


ROBUSTNESS_AXES = {"blur_sigma": "blur of the phase input, sigma (pixels)",
                   "offset": "offset added to the phase input (IQRs)",
                   "noise": "noise added to the phase input, std (IQRs)"}


def plot_robustness(
    table: pd.DataFrame, *, band: str = "mid", path: str | Path | None = None
) -> Figure:
    """How each model's stain degrades as its input does: one column per perturbation.

    table: `robustness.robustness_table` (model, perturbation, level, f1_iou50,
    band_power_ratio_<band>). Top row: nuclei F1 at IoU 0.5, the real stain's as a dashed line;
    bottom row: the stain's power in one spectral band over the real stain's (1 = as much
    detail as the real stain, log scale).
    """
    _require(table, ("model", "perturbation", "level", "f1_iou50", f"band_power_ratio_{band}"),
             "robustness table", "robustness.robustness_table")
    kinds = list(dict.fromkeys(table["perturbation"]))
    models = [m for m in dict.fromkeys(table["model"]) if m != "real stain"]
    figure, axes = plt.subplots(2, len(kinds), figsize=(3.6 * len(kinds), 5.6), squeeze=False,
                                sharey="row", layout="constrained")
    for column, kind in enumerate(kinds):
        rows = table[table["perturbation"] == kind]
        top, bottom = axes[0, column], axes[1, column]
        for i, model in enumerate(models):
            line = rows[rows["model"] == model].sort_values("level")
            for ax, key in ((top, "f1_iou50"), (bottom, f"band_power_ratio_{band}")):
                # markers and dashes differ, so that equal scores stay visible one over another
                ax.plot(line["level"], line[key], marker="os^v"[i % 4], ms=6 - 1.5 * (i % 2),
                        lw=1.8, linestyle=("-", "--")[i % 2], color=f"C{i}", label=model)
        real = rows[rows["model"] == "real stain"].sort_values("level")
        if len(real):
            top.plot(real["level"], real["f1_iou50"], color="black", linestyle="--", lw=1.2,
                     label="real stain")
        bottom.axhline(1.0, color="black", linestyle="--", lw=1.2)
        bottom.set_yscale("log")
        bottom.set_xlabel(ROBUSTNESS_AXES.get(kind, kind))
        top.set_title(kind.replace("_sigma", ""), fontsize=10)
        top.set_ylim(0, 1.02)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("nuclei F1 at IoU 0.5")
    low, high = metrics.SPECTRAL_BANDS[band]
    axes[1, 0].set_ylabel(f"{band}-band power / real stain's\n({low}-{high} cycles/pixel)")
    axes[0, 0].legend(fontsize=9, loc="lower left")
    figure.suptitle("when does it break? the stain of a degraded phase input")
    return _save(figure, path)


def _require(table: pd.DataFrame, columns: Sequence[str], name: str, source: str) -> None:
    missing = [c for c in columns if c not in table]
    if missing:
        raise ValueError(f"the {name} has no column {', '.join(missing)} (it has "
                         f"{', '.join(map(str, table.columns))}); make it with {source}")


def plot_power_spectra(
    spectra: Mapping[str, pd.DataFrame],
    *,
    bands: Mapping[str, tuple[float, float]] | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Radially averaged power against spatial frequency, one line per model and the real stain.

    spectra: {model: `evaluate.radial_spectra` table (frequency in cycles/pixel, prediction,
    real_stain)}; the real stain's curve is drawn once, from the first table. Fine detail is at
    high frequency: a blurry model's curve drops below the real stain's there, a noisy or
    hallucinating one stays at or above it. The `bands` whose power ratios the tables report
    (default `metrics.SPECTRAL_BANDS`; {} marks none) are shaded and labelled.
    """
    if not spectra:
        raise ValueError("no spectra: pass {model name: evaluate.radial_spectra(...)}")
    figure, ax = plt.subplots(figsize=(6.4, 4.3), layout="constrained")
    for i, (name, table) in enumerate(spectra.items()):
        _require(table, ("frequency", "prediction", "real_stain"), f"spectrum of {name!r}",
                 "evaluate.radial_spectra")
        if i == 0:
            ax.plot(table["frequency"], _positive(table["real_stain"]), color="black", lw=2.2,
                    label="real stain", zorder=3)
        ax.plot(table["frequency"], _positive(table["prediction"]), color=f"C{i}", lw=1.6,
                label=name)
    bands = metrics.SPECTRAL_BANDS if bands is None else bands
    for shade, (band, (low, high)) in zip(("0.95", "0.88", "0.8"), bands.items(), strict=False):
        ax.axvspan(low, high, color=shade, zorder=0,
                   label=f"{band} band ({low:g}-{high:g} cycles/pixel)")
    ax.set_yscale("log")
    ax.set_xlim(0, 0.5)
    ax.set_xlabel("spatial frequency (cycles/pixel; 0.5 = Nyquist)")
    ax.set_ylabel("mean power (a.u.²)")
    ax.set_title("radially averaged power spectrum (mean over images)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9)
    return _save(figure, path)


def _positive(values: pd.Series) -> np.ndarray:
    """Values for a log axis: zero or negative power (none in practice) becomes a gap."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(values > 0, values, np.nan)


# --- MC-dropout ----------------------------------------------------------------------------------


def plot_mc_samples(
    phase: np.ndarray,
    samples: np.ndarray,
    target: np.ndarray,
    *,
    n_shown: int = 4,
    crop: tuple[slice, slice] | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Phase | a few MC-dropout samples | real stain, on one colour scale, to show they differ.

    samples (n, H, W) in the stain's units; phase and target (H, W). A second row shows each
    shown sample minus the mean of all n samples (diverging colours, 0 = white): where the
    samples disagree. crop: (rows, columns) slices to zoom in, since the differences are small.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3 or samples.shape[0] < 1:
        raise ValueError(f"samples have shape {samples.shape}; expected (n, H, W)")
    if n_shown < 1:
        raise ValueError(f"n_shown={n_shown} must be at least 1")
    images = _images(phase=phase, target=target, sample=samples[0])
    phase, target = images["phase"], images["target"]
    differences = samples - samples.mean(axis=0) if samples.shape[0] > 1 else None
    stain_limits = _range(target, STAIN_PERCENTILES)
    phase_limits = _range(phase, normalisation.PERCENTILES)
    if crop is not None:
        top, bottom, left, right = _crop_box(crop, phase.shape)
        phase, target = phase[top:bottom, left:right], target[top:bottom, left:right]
        samples = samples[:, top:bottom, left:right]
        differences = None if differences is None else differences[:, top:bottom, left:right]
    k = min(n_shown, samples.shape[0])
    rows = 1 if differences is None else 2
    figure, axes = plt.subplots(rows, k + 2, figsize=(2.9 * (k + 2) + 1.8, 3.0 * rows),
                                squeeze=False, layout="constrained")
    phase_shown = _show(axes[0, 0], phase, "phase", PHASE_CMAP, phase_limits)
    for i in range(k):
        _show(axes[0, i + 1], samples[i], f"sample {i + 1}", STAIN_CMAP, stain_limits)
    _show(axes[0, -1], target, "real stain", STAIN_CMAP, stain_limits)
    figure.colorbar(phase_shown, ax=axes[:, 0], location="left", shrink=0.8, label=PHASE_UNIT)
    _stain_colorbar(figure, axes[0, -1].images[0], axes[0, 1:], shrink=0.85)
    if differences is not None:
        spread = float(np.percentile(np.abs(differences[:k]), 99.5)) or 1.0
        for i in range(k):
            shown = _show(axes[1, i + 1], differences[i], f"sample {i + 1} − mean",
                          SIGNED_CMAP, (-spread, spread))
        figure.colorbar(shown, ax=axes[1, 1:], shrink=0.85, label=f"difference {AU}")
        axes[1, 0].set_axis_off()
        axes[1, -1].set_axis_off()
    figure.suptitle(f"MC-dropout: {k} of {len(samples)} samples for one phase image")
    return _save(figure, path)


def plot_uncertainty_maps(
    mean: np.ndarray,
    std: np.ndarray,
    target: np.ndarray,
    *,
    cv: np.ndarray | None = None,
    spearman: float | None = None,
    max_pixels: int = 100_000,
    path: str | Path | None = None,
) -> Figure:
    """Mean prediction | std | |mean - real stain| | (cv) | std against |error|, per pixel.

    All maps (H, W) in the stain's units (cv is a ratio); the mean on the real stain's colour
    scale (`STAIN_PERCENTILES`). If the spread is a useful
    uncertainty, the std map is bright where the error map is, and the last panel's cloud of
    at most `max_pixels` pixels (drawn at random, seeded) rises. spearman: the rank correlation
    of std and |error| (`uncertainty.spearman_uncertainty_error`), given in that panel's title.
    The dashed line is |error| = std; points far above it mean the spread is too narrow
    (typical of MC-dropout).
    """
    named = {"mean": mean, "std": std, "target": target} | ({} if cv is None else {"cv": cv})
    images = _images(**named)
    mean, std, target = images["mean"], images["std"], images["target"]
    error = np.abs(mean - target)
    panels = [("mean of the samples", mean, STAIN_CMAP, _range(target, STAIN_PERCENTILES),
               None),
              ("std of the samples", std, SPREAD_CMAP, (0.0, _range(std, (0, 99.5))[1]),
               f"std {AU}"),
              ("|mean − real stain|", error, ERROR_CMAP, (0.0, _range(error, (0, 99.5))[1]),
               f"absolute error {AU}")]
    if cv is not None:
        panels.append(("coefficient of variation", images["cv"], SPREAD_CMAP,
                       (0.0, _range(images["cv"], (0, 99))[1]), "std / mean (ratio)"))
    figure, axes = plt.subplots(1, len(panels) + 1, figsize=(3.9 * (len(panels) + 1), 3.9),
                                squeeze=False, layout="constrained")
    for ax, (title, image, cmap, limits, unit) in zip(axes[0], panels, strict=False):
        shown = _show(ax, image, title, cmap, limits)
        if unit is None:  # the stain panel
            _stain_colorbar(figure, shown, ax, shrink=0.8)
        else:
            figure.colorbar(shown, ax=ax, shrink=0.8, label=unit)
    rng = np.random.default_rng(0)
    keep = rng.choice(error.size, size=min(max_pixels, error.size), replace=False)
    x, y = std.ravel(), error.ravel()
    x, y = x[keep], y[keep]
    # the axes end at the 99.9th percentiles: a few extreme pixels would squeeze the cloud
    right, top = (_range(v, (0, 99.9))[1] for v in (x, y))
    ax = axes[0, -1]
    bins = ax.hexbin(x, y, gridsize=40, bins="log", cmap=SPREAD_CMAP, mincnt=1,
                     extent=(0, right, 0, top))
    figure.colorbar(bins, ax=ax, shrink=0.8, label="pixels per bin")
    ax.plot([0, max(right, top)], [0, max(right, top)], color="white", linestyle="--", lw=1.2,
            label="|error| = std")
    ax.set_xlim(0, right)
    ax.set_ylim(0, top)
    ax.set_xlabel(f"std of the samples {AU}")
    ax.set_ylabel(f"|mean − real stain| {AU}")
    rho = "" if spearman is None else f": Spearman ρ = {spearman:.2f}"
    ax.set_title(f"std against error{rho}\n({keep.size:,} random pixels)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_facecolor("0.15")
    return _save(figure, path)


def plot_sparsification(
    curves: Mapping[str, Mapping[str, np.ndarray]] | Mapping[str, np.ndarray],
    *,
    path: str | Path | None = None,
) -> Figure:
    """Sparsification curves: the error left after removing the most uncertain pixels first.

    curves: one `uncertainty.sparsification_curve` dict (fractions, model, oracle, random,
    ause) or {model name: such a dict}. The oracle removes the largest errors first (the best
    any uncertainty can do); the shaded area between a model and its oracle is the AUSE (in
    the legend where the curve has it; 0 = perfect ranking). A curve near the random one means
    the uncertainty says nothing.
    """
    named = {"model": curves} if "fractions" in curves else dict(curves)
    if not named:
        raise ValueError("no curves: pass uncertainty.sparsification_curve(std, |error|)")
    figure, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    for i, (name, curve) in enumerate(named.items()):
        missing = [key for key in ("fractions", "model", "oracle") if key not in curve]
        if missing:
            raise ValueError(f"the curve of {name!r} has no {', '.join(missing)}; make it with "
                             "uncertainty.sparsification_curve")
        x, colour = np.asarray(curve["fractions"]), f"C{i}"
        prefix = "" if "fractions" in curves else f"{name}: "
        area = f"AUSE = {curve['ause']:.3f}, shaded" if "ause" in curve else "gap to oracle shaded"
        ax.plot(x, curve["model"], color=colour, lw=2,
                label=f"{prefix}most uncertain first ({area})")
        ax.plot(x, curve["oracle"], color=colour, lw=1.3, linestyle="--",
                label=f"{prefix}oracle: largest errors first")
        ax.fill_between(x, curve["oracle"], curve["model"], color=colour, alpha=0.15, lw=0)
    first = next(iter(named.values()))
    if "random" in first:
        ax.plot(first["fractions"], first["random"], color="0.5", lw=1.2, linestyle=":",
                label="random order")
    ax.set_xlabel("fraction of pixels removed (most uncertain first)")
    ax.set_ylabel("MAE of the remaining pixels\n(relative to all pixels)")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_title("sparsification: does removing uncertain pixels remove the error?",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2,
              frameon=False)
    return _save(figure, path)


TRUST_CMAP = "cividis"
"""Trust colours: perceptually uniform, dark blue (a guess) to yellow (drawn in every sample),
readable for colour-blind readers and apart from the sky-blue outlines of the real nuclei."""
TRUST_CLASSES = {1: ("#009E73", "matched a real nucleus"),
                 0: ("#D55E00", "unmatched (false or misdrawn)")}
"""Colour and meaning of `nuclei_trust.csv`'s matched values in `plot_nuclei_trust`."""


TRUST_COLOUR_FLOOR = 0.5
"""The trust the map's colour scale starts at (IoU 0.5 is where `metrics` counts a match)."""


def plot_nuclei_trust(
    nuclei: pd.DataFrame,
    virtual_labels: np.ndarray,
    true_labels: np.ndarray,
    stain: np.ndarray,
    *,
    fov: str,
    auroc: float | None = None,
    threshold: float | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Which virtual nuclei to trust: one field of view's nuclei coloured by trust, and how
    trust separates matched from unmatched nuclei over all fields of view.

    nuclei: rows of `sample`'s nuclei_trust.csv (fov, label, trust, matched), any number of
    fields of view; virtual_labels: the label image of `fov` those labels refer to;
    true_labels and stain: the real nuclei and the real stain of `fov` (H, W). Left: the real
    stain in gray, each virtual nucleus filled with its trust's colour, the real nuclei
    outlined outside and the unmatched virtual nuclei inside. Right: the share of matched and
    of unmatched nuclei at each trust, side by side; auroc (computed by `metrics.auroc`) goes
    in the title, threshold is drawn as a line.
    """
    _require(nuclei, ["fov", "label", "trust", "matched"], "nuclei", "sample's nuclei_trust.csv")
    images = _images(stain=stain, virtual_labels=virtual_labels, true_labels=true_labels)
    stain = images["stain"]
    virtual_labels, true_labels = (np.asarray(a).astype(np.int32) for a in
                                   (virtual_labels, true_labels))
    rows = nuclei[nuclei.fov.astype(str) == str(fov)]
    if rows.empty:
        raise ValueError(f"nuclei has no rows of field of view {fov!r}; pass the table and "
                         "the label image of one sample output")
    figure, (left, right) = plt.subplots(1, 2, figsize=(13.0, 5.8), layout="constrained",
                                         gridspec_kw={"width_ratios": [1.15, 1]})
    _show(left, stain, f"{fov}: virtual nuclei coloured by trust,\nreal nuclei outlined",
          "gray", _range(stain, STAIN_PERCENTILES))
    trust_image = np.full(stain.shape, np.nan)
    lookup = dict(zip(rows.label.astype(int), rows.trust.astype(float), strict=True))
    inside = virtual_labels > 0
    trust_image[inside] = [lookup.get(int(label), np.nan) for label in virtual_labels[inside]]
    # most nuclei score above 0.8: the colours span the range where they differ
    shown = left.imshow(np.ma.masked_invalid(trust_image), cmap=TRUST_CMAP,
                        vmin=TRUST_COLOUR_FLOOR, vmax=1, alpha=0.75, interpolation="nearest")
    figure.colorbar(shown, ax=left, shrink=0.8, extend="min",
                    label=f"trust (mean IoU of the nucleus across samples; "
                          f"below {TRUST_COLOUR_FLOOR} the lowest colour)")
    width = max(1, round(max(stain.shape) / 300))
    outline = np.zeros((*stain.shape, 4))
    outline[_outline(true_labels, "outer", width)] = to_rgba(OUTLINE_COLOURS["truth"])
    # the unmatched virtual nuclei outlined inside, so the false ones can be found by eye
    unmatched = rows.label[rows.matched == 0].astype(int).to_numpy()
    false_line = _outline(np.where(np.isin(virtual_labels, unmatched), virtual_labels, 0),
                          "inner", width)
    outline[false_line] = to_rgba(TRUST_CLASSES[0][0])
    left.imshow(outline, interpolation="nearest")
    left.legend(handles=[Line2D([], [], color=OUTLINE_COLOURS["truth"], lw=2.5,
                                label="real nuclei (ground truth)"),
                         Line2D([], [], color=TRUST_CLASSES[0][0], lw=2.5,
                                label=f"unmatched virtual nuclei ({unmatched.size})")],
                loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=2, frameon=False,
                fontsize=9)
    _draw_trust_by_match(right, nuclei, auroc, threshold)
    return _save(figure, path)


def _draw_trust_by_match(ax: plt.Axes, nuclei: pd.DataFrame, auroc: float | None,
                         threshold: float | None, bins: int = 20) -> None:
    """Bars: the share of each class (matched, unmatched) of nuclei in each of `bins` equal
    bins of trust from 0 to 1 (the last bin holds trust 1)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    width = (edges[1] - edges[0]) * 0.42
    for offset, (matched, (colour, meaning)) in zip((-0.5, 0.5), TRUST_CLASSES.items(),
                                                    strict=True):
        group = nuclei.trust[nuclei.matched == matched].to_numpy(dtype=float)
        if group.size == 0:
            continue
        counts, _ = np.histogram(np.clip(group, 0, 1), edges)
        ax.bar(edges[:-1] + (0.5 + offset * 0.42) * (edges[1] - edges[0]), counts / group.size,
               width=width, color=colour, label=f"{meaning}: {group.size}")
    if threshold is not None:
        ax.axvline(threshold, color="0.3", linestyle="--", lw=1.2,
                   label=f"threshold {threshold:g}: nuclei left of it removed")
    score = "" if auroc is None else f"\nAUROC of trust for telling them apart: {auroc:.2f}"
    ax.set_title(f"trust of {len(nuclei)} virtual nuclei, by whether a real nucleus matches "
                 f"them{score}", fontsize=10)
    ax.set_xlabel("trust (0 = never drawn again, 1 = drawn the same in every sample)")
    ax.set_ylabel("share of the nuclei of each kind, per bin")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=9, loc="upper left")


def plot_reliability(
    bins: Mapping[str, pd.DataFrame] | pd.DataFrame, *, path: str | Path | None = None
) -> Figure:
    """Reliability diagram: each bin's error against its predicted spread, log-log.

    bins: one `uncertainty.reliability_bins` table or {label: table}, e.g. the raw MC-dropout
    std and the calibrated one (put the UCE in the label). Each point is a bin of pixels of
    similar predicted variance: its root mean squared error against the root of its mean
    predicted variance, both in the stain's units. On the diagonal the error bars are right;
    above it the model is overconfident (errors larger than its std says), below it too
    cautious. One scale factor slides a whole curve sideways; it cannot bend it.
    """
    named = {"MC-dropout std": bins} if isinstance(bins, pd.DataFrame) else dict(bins)
    if not named:
        raise ValueError("no bins: pass uncertainty.reliability_bins(variance, squared_error)")
    figure, ax = plt.subplots(figsize=(5.6, 4.8), layout="constrained")
    values = []
    for i, (name, table) in enumerate(named.items()):
        _require(table, ("rms_std", "rms_error"), f"bins of {name!r}",
                 "uncertainty.reliability_bins")
        x, y = _positive(table["rms_std"]), _positive(table["rms_error"])
        ax.plot(x, y, marker="o", ms=4, lw=1.5, color=f"C{i}", label=name)
        values += [x, y]
    values = np.concatenate(values)
    low, high = np.nanmin(values), np.nanmax(values)
    ax.plot([low, high], [low, high], color="0.3", linestyle="--", lw=1.2,
            label="calibrated: error = std")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"predicted std of the bin {AU}\n(root of its mean variance)")
    ax.set_ylabel(f"error of the bin {AU}\n(root of its mean squared error)")
    counts = {len(table) for table in named.values()}
    ax.set_title(f"reliability: error against predicted spread\n"
                 f"({'/'.join(map(str, sorted(counts)))} bins of equal pixel count)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(figure, path)


# --- training logs -------------------------------------------------------------------------------


def plot_logged_images(
    images: Sequence[tuple[int, np.ndarray]],
    *,
    titles: Sequence[str] | None = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Images logged during training side by side, e.g. `logs.read_images` at a few epochs.

    images: (step, image) pairs, image (H, W) or (H, W, 3|4) as logged; titles: one per image
    (default "step N"). Shown as stored, without rescaling, so the epochs compare as they did
    in TensorBoard's image tab.
    """
    if not len(images):
        raise ValueError("no images to show; read them with logs.read_images(logdir)")
    titles = [f"step {step}" for step, _ in images] if titles is None else list(titles)
    if len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    height, width = np.asarray(images[0][1]).shape[:2]
    panel = 4.2
    figure, axes = plt.subplots(1, len(images), squeeze=False, layout="constrained",
                                figsize=(panel * len(images), panel * height / width + 0.6))
    for ax, (_, image), name in zip(axes[0], images, titles, strict=True):
        ax.imshow(image, cmap="gray", interpolation="antialiased")
        ax.set_title(name)
        ax.set_axis_off()
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_training_curves(
    scalars: pd.DataFrame, *, smoothing: float = 0.9, path: str | Path | None = None
) -> Figure:
    """The training run at a glance, from `logs.read_scalars`: up to four panels.

    (a) discriminator losses, (b) generator loss terms, (c) the discriminator's mean output on
    real and generated images, with the LSGAN targets 1 (real) and 0 (fake), (d) validation
    PSNR and SSIM. Training curves are smoothed (an exponential average of weight
    `smoothing`, raw values faint), per-epoch validation values are not. The weight is capped
    so the average spans at most a tenth of a curve's points: on a short run 0.9 would lag
    far behind the raw values. Panels whose tags were not logged are left out, so a
    regression run (loss/G_L1 and val/* only) gives its L1 loss and validation panels.
    """
    _require(scalars, ("tag", "step", "value"), "scalars table", "logs.read_scalars")
    logged = set(scalars["tag"])
    panels = [(draw, [t for t in tags if t in logged]) for draw, tags in (
        (_draw_d_losses, logs.DISCRIMINATOR_TAGS),
        (_draw_g_terms, logs.GENERATOR_TAGS),
        (_draw_d_outputs, logs.D_OUT_TRAIN_TAGS + logs.D_OUT_VAL_TAGS),
        (_draw_validation, logs.VALIDATION_TAGS),
    )]
    panels = [(draw, tags) for draw, tags in panels if tags]
    if not panels:
        raise ValueError(f"the scalars hold none of the Trainer's loss or validation tags; "
                         f"they have: {', '.join(sorted(logged)) or 'nothing'}")
    columns = min(len(panels), 2)
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.2 * columns, 3.9 * rows),
                                squeeze=False, layout="constrained")
    for letter, ax, (draw, tags) in zip("abcd", axes.ravel(), panels, strict=False):
        draw(scalars, tags, ax, smoothing)
        ax.set_title(f"({letter}) {ax.get_title()}", fontsize=10)
    for ax in axes.ravel()[len(panels):]:
        ax.set_axis_off()
    return _save(figure, path)


def _capped_smoothing(scalars: pd.DataFrame, tags: Sequence[str], smoothing: float) -> float:
    """`smoothing`, lowered so the average's span 1 / (1 - w) is at most a tenth of the points."""
    points = int(scalars.loc[scalars["tag"].isin(tags), "tag"].value_counts().min())
    return float(min(smoothing, max(0.0, 1 - 10 / max(points, 1))))


def _mark_points(ax: plt.Axes, count: int) -> None:
    """Markers on the last `count` lines: per-epoch values are few, a bare line hides them."""
    for line in ax.get_lines()[-count:]:
        line.set_marker("o")
        line.set_markersize(4)


def _draw_d_losses(scalars: pd.DataFrame, tags: list[str], ax: plt.Axes, smoothing: float):
    logs.plot_scalars(scalars, tags, smoothing=_capped_smoothing(scalars, tags, smoothing), ax=ax,
                      ylabel="LSGAN loss",
                      title="discriminator losses")


def _draw_g_terms(scalars: pd.DataFrame, tags: list[str], ax: plt.Axes, smoothing: float):
    title = "generator loss (L1 only: a regression run)" if tags == [logs.G_L1] else (
        "generator loss terms")
    logs.plot_scalars(scalars, tags, smoothing=_capped_smoothing(scalars, tags, smoothing), ax=ax,
                      ylabel="loss term (weighted)", title=title)
    values = scalars.loc[scalars["tag"].isin(tags), "value"]
    if len(tags) > 1 and (values > 0).all() and values.max() > 20 * values.min():
        ax.set_yscale("log")  # feature matching is ~10x the adversarial term: both stay readable


def _draw_d_outputs(scalars: pd.DataFrame, tags: list[str], ax: plt.Axes, smoothing: float):
    train = [t for t in tags if t in logs.D_OUT_TRAIN_TAGS]
    val = [t for t in tags if t in logs.D_OUT_VAL_TAGS]
    if train:
        logs.plot_scalars(scalars, train, smoothing=_capped_smoothing(scalars, train, smoothing),
                          ax=ax)
    if val:
        logs.plot_scalars(scalars, val, ax=ax)
        _mark_points(ax, len(val))
    ax.axhline(1.0, color="0.3", linestyle="--", lw=1, label="target on real (1)")
    ax.axhline(0.0, color="0.3", linestyle=":", lw=1, label="target on fake (0)")
    ax.set_ylabel("mean D output")
    ax.set_title("discriminator output on real and generated")
    ax.legend(fontsize=8)


def _draw_validation(scalars: pd.DataFrame, tags: list[str], ax: plt.Axes, smoothing: float):
    axes = [ax, ax.twinx()] if len(tags) == 2 else [ax]
    units = {logs.VAL_PSNR: "PSNR (dB)", logs.VAL_SSIM: "SSIM"}
    handles = []
    for i, (tag, target) in enumerate(zip(tags, axes, strict=True)):
        logs.plot_scalars(scalars, [tag], ax=target, ylabel=units[tag])
        line = target.get_lines()[-1]
        line.set_color(f"C{i}")
        _mark_points(target, 1)
        target.yaxis.label.set_color(f"C{i}")
        target.get_legend().remove()
        handles.append(line)
    if len(axes) == 2:
        axes[1].grid(False)
        axes[1].set_title("")
    ax.legend(handles=handles, labels=[h.get_label() for h in handles], fontsize=8)
    ax.set_title("validation (per epoch)")


# --- the data as the network sees it -------------------------------------------------------------


HISTOGRAM_MARKS = ("p_low", "median", "p_high")
"""The normalisation statistics of dataset.json drawn on the histograms (dashed lines)."""


def plot_intensity_histograms(
    values: Mapping[str, np.ndarray],
    statistics: Mapping[str, Mapping[str, float]],
    *,
    bins: int = 200,
    path: str | Path | None = None,
) -> Figure:
    """One histogram per channel of its pixel values (log counts), with the train split's
    normalisation statistics (p_low, median, p_high of dataset.json) as dashed lines.

    values: {channel: pixel values of any shape}, e.g. {"phase": .., "nuclei": ..}; phase in
    rad, stains in a.u. statistics: {channel: {"p_low": .., "median": .., "p_high": ..}}.
    Shows what normalisation maps to [-1, 1] and how much of the histogram falls outside.
    """
    missing = [c for c in values if not set(HISTOGRAM_MARKS) <= set(statistics.get(c, {}))]
    if missing or not values:
        raise ValueError(f"no {'/'.join(HISTOGRAM_MARKS)} statistics for {missing or 'any'} "
                         "channel; pass dataset.json's 'normalisation' entry")
    figure, axes = plt.subplots(1, len(values), figsize=(5 * len(values), 3.2), squeeze=False,
                                layout="constrained")
    for ax, (channel, pixels) in zip(axes[0], values.items(), strict=True):
        phase = channel == "phase"
        ax.hist(np.ravel(pixels), bins=bins, log=True, color="0.3" if phase else "m")
        for key in HISTOGRAM_MARKS:
            ax.axvline(statistics[channel][key], ls="--", lw=1, color="k")
        ax.set(xlabel=PHASE_UNIT if phase else f"{channel} {STAIN_UNIT}",
               ylabel="pixels (log scale)")
        ax.set_title(channel)
    # one caption for all panels: per-panel sentences overlap their neighbours
    figure.suptitle("dashed: the 0.5th percentile, median and 99.5th percentile of the train "
                    "split", fontsize=10)
    return _save(figure, path)


def plot_stain_maps(
    normalisers: Mapping[str, normalisation.DatasetNormaliser],
    pixels: np.ndarray | None = None,
    *,
    channel: str = "nuclei",
    path: str | Path | None = None,
) -> Figure:
    """Each normaliser's stain map: the generator's output units against the stain (a.u.),
    with tanh's range [-1, 1] shaded and each map's ceiling (`tanh_ceiling`, the brightest
    stain a tanh output can take) dotted; `pixels` (stain values, any shape), if given, as a
    grey histogram behind, so the stain beyond each ceiling shows.

    normalisers: {label: DatasetNormaliser}, e.g. {"linear": .., "asinh": ..}, each with
    `channel` among its targets.
    """
    if not normalisers:
        raise ValueError("no stain maps to plot; pass {label: DatasetNormaliser}")
    ceilings = {label: n.tanh_ceiling()[channel] for label, n in normalisers.items()}
    brightest = max(ceilings.values()) if pixels is None else max(*ceilings.values(),
                                                                  float(np.max(pixels)))
    lowest = min(n.stats[channel]["p_low"] for n in normalisers.values())
    stain = np.linspace(min(0.0, lowest), 1.1 * brightest, 1000)
    figure, ax = plt.subplots(figsize=(7.5, 3.6), layout="constrained")
    if pixels is not None:
        counts = ax.twinx()
        counts.hist(np.ravel(pixels), bins=200, range=(stain[0], stain[-1]), log=True,
                    color="0.85")
        counts.set_ylabel("pixels (log scale)")
        ax.set_zorder(counts.get_zorder() + 1)  # the maps in front of the histogram
        ax.patch.set_visible(False)
    ax.axhspan(-1, 1, color="0.6", alpha=0.15, lw=0, label="tanh's range")
    for index, (label, normaliser) in enumerate(normalisers.items()):
        grid = np.tile(stain, (len(normaliser.target_channels), 1, 1))  # (C, 1, N)
        mapped = normaliser.normalise_target(grid)[normaliser.target_channels.index(channel), 0]
        colour = f"C{index}"
        ax.plot(stain, mapped, color=colour, label=label)
        ax.axvline(ceilings[label], ls=":", color=colour,
                   label=f"{label}: ceiling {ceilings[label]:,.0f} a.u.")
    ax.set(xlim=(stain[0], stain[-1]), ylim=(-1.3, 1.6), xlabel=f"{channel} {STAIN_UNIT}",
           ylabel="generator output units")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{channel}: how the stain maps onto the generator's output; nothing above a "
                 "map's ceiling can be predicted", fontsize=9)
    return _save(figure, path)


def plot_training_crops(
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    n: int = 4,
    path: str | Path | None = None,
) -> Figure:
    """The first `n` crops of a training batch as the network sees them: normalised phase on
    top, normalised stain below, from -1 up to +1 or the crops' 99.9th percentile if higher.

    +1, the bound of the generator's tanh output, is dashed on the colour bar: target pixels
    above it are brightness no prediction can reach. inputs, targets: (B, 1, h, w) arrays (or
    CPU tensors) from the train loader.
    """
    inputs, targets = np.asarray(inputs, dtype=np.float64), np.asarray(targets, np.float64)
    same_crops = targets.shape[:1] + targets.shape[2:] == inputs.shape[:1] + inputs.shape[2:]
    if inputs.ndim != 4 or targets.ndim != 4 or not same_crops:
        raise ValueError(f"inputs {inputs.shape} and targets {targets.shape} must be one batch "
                         "(B, C, h, w) of crops of one size")
    n = max(1, min(n, len(inputs)))
    figure, axes = plt.subplots(2, n, figsize=(2.6 * n + 1.2, 5.2), squeeze=False,
                                layout="constrained")
    phase_limits = _range(inputs[:n, 0], normalisation.PERCENTILES)
    stain_limits = (-1.0, max(1.0, float(np.percentile(targets[:n, 0], STAIN_PERCENTILES[1]))))
    for column in range(n):
        phase = _show(axes[0, column], inputs[column, 0], f"crop {column}: phase", PHASE_CMAP,
                      phase_limits)
        stain = _show(axes[1, column], targets[column, 0], f"crop {column}: nuclei", STAIN_CMAP,
                      stain_limits)
    figure.colorbar(phase, ax=axes[0, :], shrink=0.8, label="phase, normalised (median 0, IQR 1)")
    bar = figure.colorbar(stain, ax=axes[1, :], shrink=0.8, extend="max",
                          label="stain, normalised\n(dashed: +1, tanh's bound)")
    bar.ax.axhline(1.0, color="white", linestyle="--", lw=1.5)
    return _save(figure, path)
