"""Whether the spread of MC-dropout samples tells where the model is wrong: numpy only.

    stains = sampling.sample_stains(generator, normaliser, phase, n=32)[:, 0]  # (n, H, W)
    maps = uncertainty_maps(stains)                                          # mean, std, cv
    scores = evaluate_uncertainty(stains, target, true_labels=masks, std_scale=s)

The samples come from `sampling` (dropout left on at inference); everything here takes arrays
and returns numbers, so it scores any set of samples (an ensemble, test-time augmentation) the
same way. MC-dropout spreads are usually too narrow, so `fit_std_scale` rescales them on
validation images (the scale with the lowest UCE there) before they are read as error bars.

Does the uncertainty point at the errors? Three views:

- rank correlation (`spearman_uncertainty_error`): do uncertain pixels have larger errors?
- sparsification (`sparsification_curve`, `ause`): remove the most uncertain pixels first and
  watch the error of what remains fall; the oracle removes the largest errors first, so the
  area between the two curves (AUSE, Ilg et al. 2018) is 0 for a perfect ranking.
- calibration (`uncertainty_calibration_error`): within pixels of similar predicted variance,
  does the squared error match that variance (UCE, Laves et al. 2020)? `reliability_bins`
  gives the bins themselves, for a reliability diagram (`viz.plot_reliability`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from pix2pixhd import metrics, segmentation

log = logging.getLogger(__name__)

CV_EPS_FRACTION = 0.01
"""Default eps of the coefficient of variation, as a fraction of the mean map's 99th percentile."""


# --- uncertainty maps --------------------------------------------------------------------------


def uncertainty_maps(samples: np.ndarray, eps: float | None = None) -> dict[str, np.ndarray]:
    """Per-pixel mean, standard deviation and coefficient of variation of samples (n, H, W).

    std is the sample standard deviation (ddof=1, so its square is an unbiased variance; needs
    n >= 2). cv = std / (|mean| + eps) is the spread relative to the signal: it only means
    something for a stain whose values are positive and proportional to the amount of dye, so
    pass samples in the stain's own units with the background (camera offset, e.g. the
    normaliser's p_low) subtracted, not in the normalised [-1, 1] units, where 0 is mid-grey.
    eps keeps cv finite where the mean is 0 (background); the default is 1% of the 99th
    percentile of |mean|, so in the background cv stays bounded and the nuclei carry the map.
    All maps are float64 arrays of shape (H, W).
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim < 2 or samples.shape[0] < 2:
        raise ValueError(
            f"samples have shape {samples.shape}; expected (n, H, W) with n >= 2 draws: "
            "a spread needs at least two samples"
        )
    mean = samples.mean(axis=0)
    std = samples.std(axis=0, ddof=1)
    if eps is None:
        eps = CV_EPS_FRACTION * float(np.percentile(np.abs(mean), 99))
        eps = eps if eps > 0 else np.finfo(np.float64).tiny
    elif eps <= 0:
        raise ValueError(f"eps={eps} must be positive (it keeps cv finite where the mean is 0)")
    return {"mean": mean, "std": std, "cv": std / (np.abs(mean) + eps)}


# --- does the uncertainty point at the errors? ------------------------------------------------


def _flat_pair(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> tuple[np.ndarray, ...]:
    """Two arrays of one shape as flat float64 arrays, or a ValueError naming them."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} {a.shape} and {names[1]} {b.shape} differ in shape")
    if a.size == 0:
        raise ValueError(f"{names[0]} and {names[1]} are empty")
    for name, array in zip(names, (a, b), strict=True):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} has NaN or infinite values")
    return a.ravel(), b.ravel()


def spearman_uncertainty_error(
    std: np.ndarray, abs_error: np.ndarray, max_pixels: int = 200_000, seed: int = 0
) -> float:
    """Spearman rank correlation between predicted std and absolute error, over pixels.

    1: the more uncertain a pixel, the larger its error; 0: no relation. Ranks, so any
    monotone rescaling of either map gives the same value. Images have millions of pixels and
    ranking them all adds nothing but time: at most `max_pixels` pixels, drawn at random
    (seeded) without replacement, are used. nan when either map is constant.
    """
    std, abs_error = _flat_pair(std, abs_error, ("std", "abs_error"))
    if std.size > max_pixels:
        keep = np.random.default_rng(seed).choice(std.size, size=max_pixels, replace=False)
        std, abs_error = std[keep], abs_error[keep]
    return _rank_correlation(std, abs_error, "std and error")


def _rank_correlation(x: np.ndarray, y: np.ndarray, what: str) -> float:
    """Spearman's rho of two 1-D samples; nan (with a warning naming `what`, instead of
    scipy's) when either is constant, as the correlation is then undefined."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        log.warning("%s: one of them is constant, so their rank correlation is undefined (nan)",
                    what)
        return math.nan
    return float(spearmanr(x, y).statistic)


def _remaining_mean_error(
    order: np.ndarray, error: np.ndarray, fractions: np.ndarray
) -> np.ndarray:
    """Mean error of the pixels left after removing the first `fraction` of `order`."""
    kept_last = error[order][::-1]  # the pixels removed last come first
    cumulative = np.cumsum(kept_last)
    remaining = error.size - np.floor(fractions * error.size).astype(np.int64)
    return cumulative[remaining - 1] / remaining


def sparsification_curve(
    uncertainty: np.ndarray,
    error: np.ndarray,
    fractions: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray | float]:
    """Mean absolute error of the pixels kept after removing the most uncertain ones.

    uncertainty: any per-pixel score, larger = less sure (std, variance: only the order counts).
    error: the absolute error |prediction - target| of the same pixels (the curves are MAE,
    the same units as Spearman's abs_error; pass squared errors for an MSE curve).
    fractions: the fractions of pixels removed, in [0, 1); default 0, 0.01, ..., 0.99.

    Returns fractions and three curves, each divided by the MAE with nothing removed so that
    all start at 1: `model` removes the highest uncertainty first, `oracle` the highest error
    first (the best any ranking can do), `random` a random order (what an uninformative
    uncertainty does: flat at 1 up to noise). A useful uncertainty falls well below 1. Also
    `ause`, the area between model and oracle (a float; see `ause`).
    """
    uncertainty, error = _flat_pair(uncertainty, error, ("uncertainty", "error"))
    fractions = np.linspace(0, 0.99, 100) if fractions is None else np.asarray(fractions, float)
    if fractions.ndim != 1 or np.any(fractions < 0) or np.any(fractions >= 1):
        raise ValueError("fractions must be a 1-D array of values in [0, 1); 1 would leave nothing")
    total = error.mean()
    if not total > 0:
        raise ValueError("the error is zero everywhere: there is nothing to sparsify")
    orders = {
        # stable sorts: pixels with equal uncertainty keep a fixed, data-independent order
        "model": np.argsort(-uncertainty, kind="stable"),
        "oracle": np.argsort(-error, kind="stable"),
        "random": np.random.default_rng(seed).permutation(error.size),
    }
    curves = {name: _remaining_mean_error(order, error, fractions) / total
              for name, order in orders.items()}
    curve = {"fractions": fractions, **curves}
    return curve | {"ause": ause(curve)}


def ause(curve: dict[str, np.ndarray | float]) -> float:
    """Area between a sparsification curve's model and oracle curves (trapezoid over fractions).

    0 when the uncertainty ranks the pixels exactly as their errors do; it grows as the ranking
    gets worse. Its scale depends on the fractions covered (the default spans 0 - 0.99).
    """
    x = np.asarray(curve["fractions"], dtype=np.float64)
    gap = np.asarray(curve["model"], dtype=np.float64) - np.asarray(curve["oracle"], np.float64)
    return float(np.sum(np.diff(x) * (gap[1:] + gap[:-1]) / 2))


def reliability_bins(
    variance: np.ndarray, squared_error: np.ndarray, n_bins: int = 20
) -> pd.DataFrame:
    """The numbers of a reliability diagram: pixels grouped by predicted variance, n_bins rows.

    Pixels are sorted by predicted variance and cut into `n_bins` bins of equal count (equal
    widths would leave most bins empty, variances are very skewed). Columns per bin: pixels,
    mean_variance, mean_squared_error, and their square roots rms_std and rms_error (the
    stain's units). A calibrated model has rms_error = rms_std in every bin.
    """
    variance, squared_error = _flat_pair(variance, squared_error, ("variance", "squared_error"))
    if not 1 <= n_bins <= variance.size:
        raise ValueError(
            f"n_bins={n_bins} must be between 1 and the number of pixels ({variance.size})"
        )
    order = np.argsort(variance, kind="stable")
    bins = np.array_split(order, n_bins)
    table = pd.DataFrame({
        "pixels": [b.size for b in bins],
        "mean_variance": [variance[b].mean() for b in bins],
        "mean_squared_error": [squared_error[b].mean() for b in bins],
    })
    table["rms_std"] = np.sqrt(table["mean_variance"])
    table["rms_error"] = np.sqrt(table["mean_squared_error"])
    return table


def uncertainty_calibration_error(
    variance: np.ndarray, squared_error: np.ndarray, n_bins: int = 20
) -> float:
    """UCE: how far the squared error is from the predicted variance, bin by bin.

    Over the bins of `reliability_bins`, UCE = sum of (n_bin / N) * |mean squared error - mean
    variance|, in squared stain units (Laves et al. 2020). 0 for a calibrated model; comparable
    between models only on the same images and units.
    """
    bins = reliability_bins(variance, squared_error, n_bins)
    gaps = np.abs(bins["mean_squared_error"] - bins["mean_variance"])
    return float(np.sum(bins["pixels"] / bins["pixels"].sum() * gaps))


def fit_std_scale(std: np.ndarray, error: np.ndarray, n_bins: int = 20) -> float:
    """The factor s that minimises the UCE of the variance (s * std)^2 against error^2.

    Fit s on the validation split and apply it to the test split, never on the images you
    then score. error may be signed or absolute (it is squared).

    Scaling keeps the order of the pixels, so the bins stay the same and UCE(s) is the sum over
    bins of (n_bin / N) * v_bin * |r_bin - s^2|, with v_bin the bin's mean variance and r_bin
    its mean squared error over v_bin: the minimum is at the median of r_bin weighted by
    n_bin * v_bin. Not the Gaussian maximum-likelihood scale, s^2 = mean(error^2) / mean(std^2):
    a few pixels whose error is huge whatever their std (nuclei brighter than anything the
    model can draw) dominate that mean, and the scale they set widens every other error bar
    until the UCE is worse than with no scale at all. MC-dropout spreads are typically too
    narrow (s > 1).
    """
    std, error = _flat_pair(std, error, ("std", "error"))
    if not np.any(std > 0):
        raise ValueError("std is zero everywhere: no scale makes it match the errors")
    bins = reliability_bins(std**2, error**2, min(n_bins, std.size))
    bins = bins[bins["mean_variance"] > 0]  # a zero-spread bin's gap is the same for any s
    ratio = (bins["mean_squared_error"] / bins["mean_variance"]).to_numpy()
    weight = (bins["pixels"] * bins["mean_variance"]).to_numpy()
    order = np.argsort(ratio, kind="stable")
    cumulative = np.cumsum(weight[order])
    median = ratio[order][np.searchsorted(cumulative, cumulative[-1] / 2)]
    if not median > 0:
        raise ValueError("the errors are zero where the std is not: no scale above 0 fits them")
    return float(np.sqrt(median))


# --- nuclei ------------------------------------------------------------------------------------


def per_nucleus_uncertainty(
    std: np.ndarray, mean_prediction_labels: np.ndarray, true_labels: np.ndarray
) -> pd.DataFrame:
    """One row per ground-truth nucleus: how uncertain the model was there, how well it did.

    std: the per-pixel std map (H, W); mean_prediction_labels: nuclei segmented in the mean
    prediction; true_labels: ground-truth nuclei (both integer label images, 0 = background).
    Columns: label, area (pixels), mean_std (inside the true nucleus), iou (with the predicted
    nucleus that overlaps it best; 0 when none does), matched_label (that nucleus, 0 if none).
    If uncertainty is informative, nuclei with high mean_std have low iou.
    """
    std = np.asarray(std, dtype=np.float64)
    true_labels = np.asarray(true_labels)
    if std.shape != true_labels.shape:
        raise ValueError(f"std {std.shape} and true_labels {true_labels.shape} differ in shape")
    true_ids, pred_ids, iou = metrics.iou_matrix(true_labels, mean_prediction_labels)
    area = ndi.sum_labels(np.ones_like(std), true_labels, index=true_ids)
    mean_std = ndi.mean(std, true_labels, index=true_ids)
    # only overlapping pairs are stored; writing them in rising IoU leaves each row's best last
    pairs = iou.tocoo()
    rising = np.argsort(pairs.data, kind="stable")
    best = np.zeros(true_ids.size)
    matched = np.zeros(true_ids.size, dtype=np.int64)
    best[pairs.row[rising]] = pairs.data[rising]
    matched[pairs.row[rising]] = pred_ids[pairs.col[rising]]
    return pd.DataFrame({
        "label": true_ids,
        "area": np.asarray(area, dtype=np.int64),
        "mean_std": np.asarray(mean_std, dtype=np.float64),
        "iou": best,
        "matched_label": matched,
    })


def nuclei_count_spread(
    samples: np.ndarray,
    segment: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: bool = True,
) -> dict[str, float | list[int]]:
    """How many nuclei each sample shows: the spread says how sure the model is of the count.

    samples (n, H, W) in the stain's units; segment: image -> integer labels (default
    `segmentation.segment_nuclei` with its defaults). Returns mean, std (ddof=1) and the counts.
    """
    samples = np.asarray(samples)
    if samples.ndim != 3 or samples.shape[0] < 2:
        raise ValueError(f"samples have shape {samples.shape}; expected (n, H, W) with n >= 2")
    segment = segmentation.segment_nuclei if segment is None else segment
    counts = []
    for sample in tqdm(samples, desc="segmenting samples", leave=False, disable=not progress):
        labels = np.asarray(segment(sample))
        counts.append(int(np.count_nonzero(np.unique(labels))))
    return {"mean": float(np.mean(counts)), "std": float(np.std(counts, ddof=1)), "counts": counts}


# --- all of it for one image -------------------------------------------------------------------


def evaluate_uncertainty(
    samples: np.ndarray,
    target: np.ndarray,
    true_labels: np.ndarray | None = None,
    std_scale: float = 1.0,
    *,
    segment: Callable[[np.ndarray], np.ndarray] | None = None,
    n_bins: int = 20,
    sample_counts: Sequence[int] | None = None,
) -> dict[str, float]:
    """Score one image's MC-dropout samples (n, H, W) against the real stain target (H, W).

    Both in the stain's own units. The prediction is the mean of the samples; its error is
    scored against their std. Keys: mae (of the mean), mean_std, spearman_std_abs_error, ause
    (MAE sparsification), uce (variance (std_scale * std)^2, std_scale fitted on validation
    images with `fit_std_scale`), uce_unscaled (std_scale = 1), std_scale. With true_labels
    (ground-truth nuclei, (H, W) integers), also: nuclei_true, nuclei_count_mean and
    nuclei_count_std (over samples), and nucleus_spearman_std_iou (per true nucleus, mean std
    against IoU with the nucleus segmented in the mean prediction; negative = informative).
    sample_counts: the nuclei count of each sample where the samples have been segmented
    already (`trust.segment_samples` counts them, at the diameter of the mean); None segments
    each sample here (`nuclei_count_spread`).
    """
    samples = np.asarray(samples, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if samples.ndim != 3 or samples.shape[1:] != target.shape:
        raise ValueError(
            f"samples {samples.shape} and target {target.shape} do not fit: expected samples "
            "(n, H, W) and target (H, W) of one channel, in the same units"
        )
    if not std_scale > 0:
        raise ValueError(f"std_scale={std_scale} must be positive")
    maps = uncertainty_maps(samples)
    error = maps["mean"] - target
    std = maps["std"]
    result = {
        "mae": float(np.mean(np.abs(error))),
        "mean_std": float(std.mean()),
        "spearman_std_abs_error": spearman_uncertainty_error(std, np.abs(error)),
        "ause": sparsification_curve(std, np.abs(error))["ause"],
        "uce": uncertainty_calibration_error((std_scale * std) ** 2, error**2, n_bins),
        "uce_unscaled": uncertainty_calibration_error(std**2, error**2, n_bins),
        "std_scale": float(std_scale),
    }
    if true_labels is not None:
        if sample_counts is None:
            spread = nuclei_count_spread(samples, segment)
        elif len(sample_counts) != len(samples):
            raise ValueError(f"{len(sample_counts)} sample counts for {len(samples)} samples")
        else:
            spread = {"mean": float(np.mean(sample_counts)),
                      "std": float(np.std(sample_counts, ddof=1))}
        segment = segmentation.segment_nuclei if segment is None else segment
        nuclei = per_nucleus_uncertainty(std, segment(maps["mean"]), true_labels)
        result["nuclei_true"] = int(len(nuclei))
        result["nuclei_count_mean"] = spread["mean"]
        result["nuclei_count_std"] = spread["std"]
        result["nucleus_spearman_std_iou"] = (
            _rank_correlation(nuclei["mean_std"].to_numpy(), nuclei["iou"].to_numpy(),
                              "per-nucleus std and IoU")
            if len(nuclei) > 2 else math.nan
        )
    return result
