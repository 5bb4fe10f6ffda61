"""From folders of predictions to tables of how good they are.

    table = evaluate_predictions("predictions/gan", "data/test")   # one row per field of view
    summary = write_evaluation(table, "evaluation/gan")             # per_image.csv, summary.*
    compare_models({"Pix2PixHD GAN": summary, "regression (L1)": other_summary})

Files -> `metrics` -> tables; nothing here knows about torch or models, so predictions made
anywhere (our `predict`, a VisCy model exported to TIFF) are scored the same way:

- pixel metrics of each prediction against the real stain (PSNR, SSIM, Pearson r, MAE, NRMSE);
- sharpness: `hf_power_ratio`, the prediction's share of high-frequency power over the real
  stain's (below 1 = blurrier);
- instance metrics: nuclei segmented in the prediction, matched to the ground-truth masks, and
  the same for the real stain segmented the same way (columns `real_stain_...`): the ceiling a
  virtual stain can reach with this segmentation; with them the course's first-part metrics
  (`metrics.COURSE_INSTANCE_METRICS`) and the errors by cause (`metrics.ERROR_CAUSES`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from pix2pixhd import metrics, segmentation
from pix2pixhd.files import output_path, write_atomically, write_json
from pix2pixhd.layout import (
    CHANNELS,
    HOW_TO_GET_DATA,
    MASKS,
    MATCH,
    UNITS_FILE,
    DataError,
    image_path,
    list_fovs,
    list_tiffs,
    read_dataset_json,
    read_image,
    read_image_shape,
    read_mask,
    refuse_to_replace_foreign_files,
)
from pix2pixhd.memory import check_budget, evaluate_bytes

log = logging.getLogger(__name__)

Segmenter = Callable[[np.ndarray], np.ndarray]
"""A nuclear stain (H, W) -> integer labels (H, W), 0 = background (segment_nuclei, for one)."""

REAL_STAIN = "real_stain_"
"""Prefix of the columns that score the real stain itself (segmented like the predictions)."""

HEADLINE_METRICS = ("psnr", "ssim", "pearson", "f1_iou50", "f1_mean", "hf_power_ratio")
"""The columns of `compare_models`' table."""

SUMMARY_KEYS = (
    *HEADLINE_METRICS, REAL_STAIN + "f1_iou50",
    "band_power_ratio_low", "band_power_ratio_mid", "band_power_ratio_high",
    "log_spectral_distance", *metrics.COURSE_INSTANCE_METRICS,
)
"""Keys every summary holds (null in summary.json when not measured, e.g. without masks)."""

UNIT_DEPENDENT = ("psnr", "ssim", "mae", "nrmse")
"""Pixel metrics that compare values, so are meaningless when the units differ; Pearson r and
the instance metrics do not depend on the units."""

RANGE_RATIO = 20.0
"""A prediction is in other units than its stain when the spread (1st to 99th percentile) of
one exceeds RANGE_RATIO times the other's, or its median lies more than the stain's spread
outside the stain's range. A stain min-max scaled to [0, 1] against counts in the hundreds
fails by far; a blurry or poor prediction in the stain's units passes."""


# --- finding the files ---------------------------------------------------------------------------


def find_predictions(
    pred_dir: str | Path, channel: str = "nuclei", *, pattern: str | None = None
) -> dict[str, Path]:
    """{fov: TIFF} of a folder of predictions of one channel, in either of two layouts.

        PRED/<channel>/<fov>.tif   as `python -m pix2pixhd predict` writes them
        PRED/**/<fov>.tif(f)       one channel's predictions made elsewhere (e.g. VisCy), in
                                   subfolders too, as the 2024 course stored them

    A field of view is a file's name without .tif/.tiff; with `pattern` (a regular expression
    matched against that name, e.g. `pred_(?P<fov>.*)`) it is the group named fov, else the
    first group. Predictions must be in the real stain's units for PSNR, SSIM, MAE and NRMSE
    (`predict` writes them so, or says otherwise in units.json).
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataError(
            f"prediction folder {pred_dir} does not exist; write it with "
            f"`python -m pix2pixhd predict ... --out {pred_dir}`"
        )
    nested = list_tiffs(pred_dir / channel, recursive=True) if (pred_dir / channel).is_dir() \
        else []
    flat = list_tiffs(pred_dir)
    if nested and flat:
        raise DataError(
            f"{pred_dir} holds predictions both in {channel}/ and at its top level; "
            "keep one layout (move the other files away)"
        )
    files = nested or flat or _elsewhere_files(pred_dir)
    if files:
        return _by_fov(files, pred_dir, pattern)
    others = sorted(p.name for p in pred_dir.iterdir() if p.is_dir() and list_tiffs(p))
    hint = f"; it has predictions of {', '.join(others)}: pass that channel" if others else ""
    raise DataError(
        f"{pred_dir} holds no predictions: expected {pred_dir / channel}/<fov>.tif "
        f"(from pix2pixhd predict) or {pred_dir}/<fov>.tif{hint}"
    )


def _elsewhere_files(pred_dir: Path) -> list[Path]:
    """TIFFs in subfolders, except those of our layout's other channels and sampling maps."""
    ours = {*CHANNELS, MASKS, "mean", "std"}
    return [path for path in list_tiffs(pred_dir, recursive=True)
            if path.relative_to(pred_dir).parts[0] not in ours]


def _by_fov(files: list[Path], pred_dir: Path, pattern: str | None) -> dict[str, Path]:
    """{fov: file}; two files of one field of view are an error naming both."""
    found: dict[str, Path] = {}
    unmatched = []
    for path in files:
        fov = path.stem
        if pattern is not None:
            match = re.fullmatch(pattern, fov)
            if match is None:
                unmatched.append(path.name)
                continue
            fov = match.groupdict().get("fov") or (match.group(1) if match.re.groups else fov)
        if fov in found:
            raise DataError(f"{found[fov]} and {path} are both predictions of {fov}; keep one, "
                            "or pair by sorted order (match='sorted')")
        found[fov] = path
    if unmatched:
        log.warning("%d predictions in %s do not match the pattern %r; ignored: %s",
                    len(unmatched), pred_dir, pattern, _names(unmatched))
    return found


def _names(fovs: Sequence[str], shown: int = 5) -> str:
    listed = ", ".join(fovs[:shown])
    return listed if len(fovs) <= shown else f"{listed}, ... ({len(fovs)} in all)"


def paired_files(
    pred_dir: str | Path,
    data_split_dir: str | Path,
    channel: str = "nuclei",
    *,
    allow_missing: bool = False,
    match: str = "name",
    pattern: str | None = None,
) -> dict[str, tuple[Path, Path]]:
    """{fov: (prediction, real stain)} for every field of view of a split (e.g. data/test).

    match="name" pairs by field-of-view name (see `find_predictions` for `pattern`); a field of
    view without a prediction is an error naming it, unless `allow_missing`, when the others are
    evaluated with a warning, and predictions of fields of view not in the split are ignored
    with a warning. match="sorted" pairs the i-th prediction (sorted by path) with the i-th
    field of view (sorted by name), with a one-line warning: the counts must agree.
    """
    if match not in MATCH:
        raise ValueError(f"match={match!r} is not one of {', '.join(MATCH)}")
    split = Path(data_split_dir)
    stains = list_fovs(split.parent, split.name, channel)
    if not stains:
        hint = f" (did you mean {split / 'test'}?)" if (split / "test" / channel).is_dir() else ""
        raise DataError(
            f"{split / channel} holds no real-stain images to compare with{hint}; "
            f"pass a split folder such as data/test, or {HOW_TO_GET_DATA}"
        )
    if match == "sorted":
        return _paired_by_order(pred_dir, split, channel, stains)
    predictions = find_predictions(pred_dir, channel, pattern=pattern)
    missing = [fov for fov in stains if fov not in predictions]
    extra = sorted(set(predictions) - set(stains))
    if extra:
        log.warning("%d predictions in %s are not fields of view of %s; ignored: %s",
                    len(extra), pred_dir, split, _names(extra))
    if missing:
        message = (
            f"{len(missing)} of {len(stains)} fields of view of {split} have no prediction in "
            f"{pred_dir}: {_names(missing)}"
        )
        if len(missing) == len(stains):
            raise DataError(f"{message}; the predictions there are named {_names(extra)}; "
                            "map names with a pattern, or pair by sorted order")
        if not allow_missing:
            raise DataError(f"{message}; predict them, or evaluate the others only with "
                            "--allow-missing (allow_missing=True in Python)")
        log.warning("%s; evaluating the other %d", message, len(stains) - len(missing))
    return {
        fov: (predictions[fov], image_path(split.parent, split.name, channel, fov))
        for fov in stains
        if fov in predictions
    }


def _paired_by_order(pred_dir: str | Path, split: Path, channel: str,
                     stains: list[str]) -> dict[str, tuple[Path, Path]]:
    folder = Path(pred_dir)
    files = sorted(find_predictions(folder, channel).values())
    if len(files) != len(stains):
        raise DataError(f"{folder} holds {len(files)} predictions and {split} {len(stains)} "
                        "fields of view: pairing by sorted order needs as many of each")
    log.warning("pairing %d predictions in %s with the fields of view of %s by sorted order "
                "(%s -> %s, ...): check that the orders agree", len(files), folder, split,
                files[0].relative_to(folder), stains[0])
    return {fov: (path, image_path(split.parent, split.name, channel, fov))
            for fov, path in zip(stains, files, strict=True)}


def units_mismatch(prediction: np.ndarray, stain: np.ndarray) -> str | None:
    """Why `prediction` (H, W) is not in the units of `stain` (H, W), or None when it may be."""
    low, median, high = np.percentile(prediction, [1, 50, 99])
    s_low, s_high = np.percentile(stain, [1, 99])
    spread, s_spread = high - low, s_high - s_low
    if s_spread <= 0:
        return None
    if (spread * RANGE_RATIO < s_spread or spread > RANGE_RATIO * s_spread
            or not s_low - s_spread <= median <= s_high + s_spread):
        return (f"its range [{low:.3g}, {high:.3g}] (1st-99th percentile) is unlike the real "
                f"stain's [{s_low:.3g}, {s_high:.3g}]: other units (e.g. min-max scaled)")
    return None


def read_units(pred_dir: str | Path) -> dict[str, Any] | None:
    """PRED/units.json as `predict` wrote it (or that of PRED's parent when PRED is one of its
    channel folders, such as pred/nuclei), or None when there is none."""
    path = Path(pred_dir) / UNITS_FILE
    if not path.is_file() and Path(pred_dir).name in CHANNELS:
        path = Path(pred_dir).parent / UNITS_FILE
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        raise DataError(f"{path} is not a JSON object ({error}); predict again, or delete "
                        "it") from error


def _mask_files(data_split_dir: Path, fovs: Sequence[str]) -> dict[str, Path] | None:
    """{fov: ground-truth mask}, or None (with a warning) when the split has no masks at all."""
    paths = {fov: image_path(data_split_dir.parent, data_split_dir.name, MASKS, fov)
             for fov in fovs}
    missing = [fov for fov, path in paths.items() if not path.is_file()]
    if len(missing) == len(paths):
        log.warning("%s has no ground-truth masks: instance metrics (F1, splits, merges) "
                    "are skipped", data_split_dir / MASKS)
        return None
    if missing:
        raise DataError(
            f"{data_split_dir / MASKS} lacks the masks of {_names(missing)}; add them, or remove "
            "the folder to evaluate pixel metrics only"
        )
    return paths


def _read_same_shape(
    reference: Path, shape: tuple[int, ...], path: Path, mask: bool = False
) -> np.ndarray:
    """An image (or mask) that must align pixel for pixel with `reference`."""
    image = read_mask(path) if mask else read_image(path)
    if image.shape != shape:
        raise DataError(
            f"{path} has shape {image.shape} but {reference} has {shape}; "
            "predict (or crop) the whole field of view so that they align"
        )
    return image


# --- scoring -------------------------------------------------------------------------------------


def instance_scores(
    image: np.ndarray, true_labels: np.ndarray, *, segment: Segmenter = segmentation.segment_nuclei
) -> dict[str, float]:
    """Segment the nuclei of one stain (H, W) and score them against the true labels (H, W).

    Keys: those of `metrics.instance_metrics`: f1_iou50, ..., splits, merges, and the F1 at
    each IoU threshold (f1_iou55, ..., f1_iou95), so that an F1-against-threshold curve comes
    from the same table without segmenting again.
    """
    return metrics.instance_metrics(true_labels, segment(image))


def _real_stain_scores(stain: Path, mask: Path, segment: Segmenter) -> dict[str, float]:
    """`instance_scores` of a real stain, remembered: every model is compared with the same one."""
    try:
        hash(segment)
    except TypeError:  # an unhashable callable cannot key the cache; just compute
        return _prefixed(instance_scores(read_image(stain), read_mask(mask), segment=segment))
    # the files' stamps are part of the key, so a rewritten stain or mask is segmented again
    stamps = tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in (stain.stat(), mask.stat()))
    return dict(_cached_real_stain_scores(stain.resolve(), mask.resolve(), stamps, segment))


@functools.lru_cache(maxsize=4096)
def _cached_real_stain_scores(
    stain: Path, mask: Path, stamps: tuple, segment: Segmenter
) -> dict[str, float]:
    return _prefixed(instance_scores(read_image(stain), read_mask(mask), segment=segment))


def _prefixed(scores: dict[str, float]) -> dict[str, float]:
    return {REAL_STAIN + key: value for key, value in scores.items()}


def evaluate_predictions(
    pred_dir: str | Path,
    data_split_dir: str | Path,
    *,
    channel: str = "nuclei",
    segment: Segmenter = segmentation.segment_nuclei,
    hf_cutoff: float | None = None,
    allow_missing: bool = False,
    match: str = "name",
    pattern: str | None = None,
    bright_threshold: float | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Score every prediction of one split against its real stain and masks; one row per FOV.

    pred_dir: PRED/<channel>/<fov>.tif or PRED/**/<fov>.tif(f) (see `find_predictions`);
    `match` and `pattern`: how predictions pair with fields of view (see `paired_files`).
    data_split_dir: a split folder, e.g. data/test, with <channel>/ and nuclei_masks/.
    segment: the nuclei segmentation applied alike to predictions and real stains.
    hf_cutoff: cycles/pixel for `metrics.hf_power_ratio`; None = that function's default.
    bright_threshold: the stain level (a.u.) above which a nucleus's mean counts as bright in
        `metrics.found_by_brightness`; None = the channel's p_high in the dataset's
        dataset.json (its 99.5th percentile), or no such counts without one.

    Columns: fov; psnr, ssim, pearson, mae, nrmse (prediction vs real stain, the real stain's
    range as data range); hf_power_ratio; band_power_ratio_low/mid/high and
    log_spectral_distance (`metrics.spectral_metrics`); band_power_low/mid/high of the
    prediction and of the real stain (`real_stain_band_power_...`, what `summarise` divides);
    the `instance_scores` of the prediction and the same for the real stain prefixed
    `real_stain_`; bright_nuclei, bright_found, other_nuclei and other_found (see
    `bright_threshold`). Without masks the instance columns are left out (with a warning). Values
    are nan where undefined (Pearson r or the sharpness ratio of a constant prediction, mean
    matched IoU when nothing matched) and psnr is inf for a prediction equal to the real
    stain. PSNR, SSIM, MAE and NRMSE are left nan, with the reason in the column `units`, for
    predictions in other units than the stain: those whose PRED/units.json says so, and those
    whose range is unlike the stain's (a warning names each).
    """
    split = Path(data_split_dir)
    pairs = paired_files(pred_dir, split, channel, allow_missing=allow_missing, match=match,
                         pattern=pattern)
    declared = _declared_units_problem(pred_dir)
    masks = _mask_files(split, list(pairs))
    sharpness = {} if hf_cutoff is None else {"cutoff": hf_cutoff}
    if bright_threshold is None and masks is not None:
        bright_threshold = dataset_bright_threshold(split, channel)
    for _, stain_path in pairs.values():  # from the headers, before any pixel
        shape = read_image_shape(stain_path)
        check_budget(f"{stain_path} ({shape[0]}x{shape[1]} pixels)", evaluate_bytes(shape),
                     "evaluate crops of it (predict and crop the real stain and masks alike)")
    rows = []
    for fov, (pred_path, stain_path) in tqdm(pairs.items(), desc="evaluate", disable=not progress):
        stain = read_image(stain_path)
        prediction = _read_same_shape(stain_path, stain.shape, pred_path)
        row: dict = {"fov": fov}
        row.update(metrics.pixel_metrics(prediction, stain))
        problem = declared or units_mismatch(prediction, stain)
        row["units"] = problem or "stain"
        if problem:
            if not declared:
                log.warning("%s: %s; its PSNR, SSIM, MAE and NRMSE are left empty", pred_path,
                            problem)
            row.update(dict.fromkeys(UNIT_DEPENDENT, math.nan))
        row["hf_power_ratio"] = metrics.hf_power_ratio(prediction, stain, **sharpness)
        row.update(metrics.spectral_metrics(prediction, stain))
        row.update(_band_powers(prediction, stain))
        if masks is not None:
            true_labels = _read_same_shape(stain_path, stain.shape, masks[fov], mask=True)
            labels = segment(prediction)
            row.update(metrics.instance_metrics(true_labels, labels))
            row.update(_real_stain_scores(stain_path, masks[fov], segment))
            if bright_threshold is not None:
                row.update(metrics.found_by_brightness(true_labels, labels, stain,
                                                       bright_threshold))
        rows.append(row)
    table = pd.DataFrame(rows)
    log.info("evaluated %d fields of view of %s: mean PSNR %.2f dB, SSIM %.3f%s", len(table),
             split, table["psnr"].mean(), table["ssim"].mean(),
             f", F1@0.5 {table['f1_iou50'].mean():.3f}" if "f1_iou50" in table else "")
    return table


def dataset_bright_threshold(split: Path, channel: str) -> float | None:
    """The channel's p_high (99.5th percentile of the train split) from the dataset.json beside
    the split: the ceiling of the linear stain map, above which the brightest nuclei lie.

    None, with one warning line that names the metrics left out and why, when that file is
    missing, malformed or holds no p_high of the channel: a summary without them must not
    look like one of a dataset that has no bright nuclei."""
    try:
        info = read_dataset_json(split.parent)
    except DataError as error:
        _warn_no_bright_recalls(str(error))
        return None
    threshold = info.get("normalisation", {}).get(channel, {}).get("p_high")
    if threshold is None:
        _warn_no_bright_recalls(f"{split.parent / 'dataset.json'} holds no normalisation."
                                f"{channel}.p_high")
    return threshold


def _warn_no_bright_recalls(reason: str) -> None:
    log.warning("%s are not computed (left empty): %s; they need the stain's p_high of the "
                "training data (the dataset.json beside the split)",
                ", ".join(RECALLS_BY_BRIGHTNESS), reason)


def _declared_units_problem(pred_dir: str | Path) -> str | None:
    """The reason unit-dependent metrics cannot be computed, from PRED/units.json, if any."""
    units = read_units(pred_dir)
    if units is None or units.get("units") == "stain":
        return None
    reason = (f"units.json of {pred_dir} says the predictions are in "
              f"{units.get('units')!r} units, not the stain's: {units.get('reason', '')}")
    log.warning("%s; PSNR, SSIM, MAE and NRMSE are left empty, Pearson r and F1 still count",
                reason)
    return reason


def _band_powers(prediction: np.ndarray, stain: np.ndarray) -> dict[str, float]:
    """band_power_<band> of the prediction and real_stain_band_power_<band> of the real stain."""
    powers = {f"band_power_{band}": power
              for band, power in metrics.band_powers(prediction).items()}
    return powers | _prefixed({f"band_power_{band}": power
                               for band, power in metrics.band_powers(stain).items()})


# --- tables --------------------------------------------------------------------------------------


def summarise(table: pd.DataFrame) -> dict[str, float]:
    """The mean of every numeric column over the fields of view, plus n_images.

    nan entries (undefined for that image) are left out of a mean; a column that is nan for
    every image, or missing (SUMMARY_KEYS without masks), summarises to nan. An inf psnr (a
    prediction equal to the real stain) makes the mean inf. Keys sorted.

    band_power_ratio_<band> is not the mean of the images' ratios but the ratio of the mean band
    powers, prediction over real stain: the band of the spectra averaged over the images, the
    curves `viz.plot_power_spectra` draws. A mean of ratios would let a faint image whose
    ratio is far off count as much as a bright one that holds most of the power, and the
    table would disagree with the figure. nan when the table has no band powers.
    recall_bright_nuclei, recall_other_nuclei and recall_gap_bright_nuclei: see
    `_recalls_by_brightness`.
    """
    numeric = table.select_dtypes("number")
    summary: dict[str, float] = {column: float(numeric[column].mean()) for column in numeric
                                 if not column.startswith("band_power_ratio_")}
    for band in metrics.SPECTRAL_BANDS:
        prediction = summary.get(f"band_power_{band}", math.nan)
        real = summary.get(f"{REAL_STAIN}band_power_{band}", math.nan)
        summary[f"band_power_ratio_{band}"] = prediction / real if real > 0 else math.nan
    summary.update(_recalls_by_brightness(table))
    for key in SUMMARY_KEYS:
        summary.setdefault(key, math.nan)
    summary["n_images"] = len(table)
    return dict(sorted(summary.items()))


RECALLS_BY_BRIGHTNESS = {
    "recall_bright_nuclei": lambda c: c[..., 1] / c[..., 0],
    "recall_other_nuclei": lambda c: c[..., 3] / c[..., 2],
    "recall_gap_bright_nuclei": lambda c: c[..., 3] / c[..., 2] - c[..., 1] / c[..., 0],
}
"""Statistics of the pooled counts (bright_nuclei, bright_found, other_nuclei, other_found) of
`metrics.found_by_brightness`; the gap is how much less often the bright nuclei are found."""


def _recalls_by_brightness(table: pd.DataFrame) -> dict[str, float]:
    """Each of RECALLS_BY_BRIGHTNESS on the counts pooled over the images (most images hold no
    bright nucleus, so a mean of per-image recalls would mislead), with a 95 % bootstrap
    interval over the images (`metrics.bootstrap_interval`) as <name>_low95 and <name>_high95:
    a test split holds only a few dozen bright nuclei. nan without the counts."""
    columns = ["bright_nuclei", "bright_found", "other_nuclei", "other_found"]
    if not set(columns) <= set(table):
        return {f"{name}{end}": math.nan for name in RECALLS_BY_BRIGHTNESS
                for end in ("", "_low95", "_high95")}
    counts = table[columns].to_numpy(np.float64)
    recalls = {}
    for name, statistic in RECALLS_BY_BRIGHTNESS.items():
        with np.errstate(divide="ignore", invalid="ignore"):
            recalls[name] = float(statistic(counts.sum(axis=0)))
        recalls[f"{name}_low95"], recalls[f"{name}_high95"] = metrics.bootstrap_interval(
            counts, statistic)
    return recalls


EVALUATION_FILES = ("per_image.csv", "summary.csv", "summary.json")
"""What `write_evaluation` writes into its folder; summary.json marks the folder as evaluate's."""


def write_evaluation(table: pd.DataFrame, out_dir: str | Path) -> dict[str, float]:
    """Write OUT/per_image.csv, OUT/summary.csv (one row), OUT/summary.json; return the summary.

    JSON has no inf or nan, so summary.json holds null for every value that is not finite
    (e.g. psnr inf when a prediction equals the real stain, metrics not measured); the CSVs and
    the returned dict keep inf and nan.
    """
    out = Path(out_dir)
    _refuse_foreign_tables(out)
    summary = summarise(table)
    write_atomically(output_path(out, "per_image.csv"),
                     lambda temporary: table.to_csv(temporary, index=False))
    write_atomically(output_path(out, "summary.csv"),
                     lambda temporary: pd.DataFrame([summary]).to_csv(temporary, index=False))
    write_json(output_path(out, "summary.json"), summary)
    log.info("wrote %s, summary.csv and summary.json", out / "per_image.csv")
    return summary


def _refuse_foreign_tables(out: Path) -> None:
    refuse_to_replace_foreign_files(out, [out / name for name in EVALUATION_FILES],
                                    ["summary.json"], "evaluate")


def evaluate_folder(
    pred_dir: str | Path, data_split_dir: str | Path, out_dir: str | Path, **kwargs
) -> dict[str, float]:
    """`evaluate_predictions` (same keyword arguments) then `write_evaluation`: the CLI's verb."""
    _refuse_foreign_tables(Path(out_dir))  # before the work, not after it
    return write_evaluation(evaluate_predictions(pred_dir, data_split_dir, **kwargs), out_dir)


def compare_models(
    summaries: dict[str, dict[str, float]],
    *,
    columns: Sequence[str] = HEADLINE_METRICS,
    reference: str | None = "real stain",
) -> pd.DataFrame:
    """One row per model (summaries from `summarise`), the headline metrics as columns.

    The `reference` row (None = no such row) is the real stain scored like a prediction, from
    the summaries' real_stain_ values: its instance metrics are the ceiling of this
    segmentation, its hf_power_ratio is 1 by definition, and its pixel metrics are left nan
    (it is what they compare against).
    """
    if reference in summaries:
        raise ValueError(f"a model is named {reference!r}, like the reference row; rename one "
                         "or pass reference=None")
    rows = {name: {c: _value(summary, c) for c in columns} for name, summary in summaries.items()}
    if reference is not None and summaries:
        row = _reference_row(summaries, columns)
        if any(math.isfinite(v) for c, v in row.items() if c != "hf_power_ratio"):
            rows[reference] = row
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(columns)).rename_axis(
        "model")


def _value(summary: dict, key: str) -> float:
    """A summary's value as a float; nan when absent or null (summary.json read back)."""
    value = summary.get(key)
    return math.nan if value is None else float(value)


def _reference_row(summaries: dict[str, dict[str, float]], columns: Sequence[str]) -> dict:
    """The real stain's scores, from the first summary; warns if the others disagree."""
    first, *others = summaries
    row = {c: _value(summaries[first], REAL_STAIN + c) for c in columns}
    for name in others:
        theirs = [_value(summaries[name], REAL_STAIN + c) for c in columns]
        if not np.allclose(theirs, list(row.values()), equal_nan=True):
            log.warning("the real-stain scores of %r differ from those of %r: evaluated on "
                        "other data or with another segmentation? The reference row uses %r's",
                        name, first, first)
    # the real stain against itself: every power ratio is 1 and its spectral distance 0
    identity = {"hf_power_ratio": 1.0, "band_power_ratio_low": 1.0, "band_power_ratio_mid": 1.0,
                "band_power_ratio_high": 1.0, "log_spectral_distance": 0.0}
    row |= {column: value for column, value in identity.items() if column in row}
    return row


def f1_per_threshold(table: pd.DataFrame) -> pd.DataFrame:
    """F1 against IoU threshold, averaged over the images of an `evaluate_predictions` table.

    Columns: threshold (0.5, 0.55, ..., 0.95), f1 (the predictions) and real_stain_f1 (the real
    stain segmented the same way) when the table has it. F1 falls with the threshold; how fast
    tells how well the outlines fit, not only whether each nucleus was found.
    """
    rows = []
    for threshold in metrics.IOU_THRESHOLDS:
        column = metrics.f1_column(threshold)
        if column not in table:
            raise ValueError(
                f"the table has no {column} column: it was evaluated without ground-truth masks "
                f"(DATA/<split>/{MASKS}/), or not by evaluate_predictions"
            )
        row = {"threshold": float(threshold), "f1": float(table[column].mean())}
        if REAL_STAIN + column in table:
            row["real_stain_f1"] = float(table[REAL_STAIN + column].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def radial_spectra(
    pred_dir: str | Path,
    data_split_dir: str | Path,
    channel: str = "nuclei",
    *,
    allow_missing: bool = False,
    match: str = "name",
    pattern: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Radially averaged power spectra of predictions and real stains, averaged over the split.

    Columns: frequency (cycles/pixel, 0.5 = Nyquist; the zero frequency is left out, as the
    mean is subtracted and it would not fit a log axis), prediction and real_stain (mean power,
    in squared stain units; see `metrics.radial_power_spectrum`); pairing as in `paired_files`.
    A blurry model's curve falls
    below the real stain's at high frequencies. Fields of view of other sizes are interpolated
    onto the first one's frequencies.
    """
    pairs = paired_files(pred_dir, data_split_dir, channel, allow_missing=allow_missing,
                         match=match, pattern=pattern)
    frequencies, totals = None, None
    for pred_path, stain_path in tqdm(pairs.values(), desc="spectra", disable=not progress):
        stain = read_image(stain_path)
        prediction = _read_same_shape(stain_path, stain.shape, pred_path)
        spectra = []
        for image in (prediction, stain):
            image_frequencies, power = metrics.radial_power_spectrum(image)
            if frequencies is None:
                frequencies = image_frequencies
            if not np.array_equal(image_frequencies, frequencies):
                power = np.interp(frequencies, image_frequencies, power)
            spectra.append(power)
        totals = np.asarray(spectra) if totals is None else totals + spectra
    mean = totals / len(pairs)
    keep = frequencies > 0
    return pd.DataFrame({"frequency": frequencies[keep], "prediction": mean[0][keep],
                         "real_stain": mean[1][keep]})
