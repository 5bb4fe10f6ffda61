"""How good is a virtual stain: pixel metrics, sharpness, instance matching.

Everything here takes numpy arrays and returns plain Python numbers, so the
notebook can put the results straight into a pandas table. Nothing here knows about torch,
models or files.

- Pixel metrics (`pixel_metrics`): PSNR, SSIM, Pearson r, MAE, NRMSE between a prediction and
  the real stain, both 2-D float arrays in the same units (e.g. both normalised the same way).
- Sharpness (`hf_power_ratio`): how much of an image's spectral power lies at high spatial
  frequencies, relative to the real stain; regression models score below 1 (blurry).
- Instances (`match_instances`, `instance_metrics`): optimal one-to-one matching of labelled
  objects by IoU, with precision, recall and F1 across IoU thresholds, plus splits and merges,
  and the metrics of the course's first part from the same matching (accuracy, Dice, Jaccard,
  mAP, mAR; see COURSE_INSTANCE_METRICS).
- Errors by cause (`error_causes`): which nuclei were missed, invented, merged, split or drawn
  too large (see ERROR_CAUSES).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components
from scipy.stats import rankdata

logger = logging.getLogger(__name__)

IOU_THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)
"""IoU thresholds 0.5, 0.55, ..., 0.95 (as in COCO and the cell-segmentation literature)."""

PER_THRESHOLD_KEYS = (
    "thresholds", "tp", "fp", "fn", "precision", "recall", "f1", "mean_matched_iou", "accuracy",
    "average_precision",
)
"""Keys of `match_instances`' result that hold one value per IoU threshold (a table's columns)."""

COCO_RECALL_LEVELS = np.linspace(0.0, 1.0, 101)
"""The recall levels 0, 0.01, ..., 1 at which COCO (and torchmetrics' MeanAveragePrecision)
reads the precision-recall curve to compute an average precision."""

COURSE_INSTANCE_METRICS = ("accuracy_iou50", "dice", "jaccard", "map_iou50", "map_iou75", "mar")
"""The instance metrics of the course's first part, as `instance_metrics` names them."""

ERROR_CAUSES = {
    "missed": "true nuclei matched by no predicted nucleus at IoU >= 0.5, with no predicted "
              "nucleus covering half of it or lying half inside it",
    "invented": "predicted nuclei matching no true nucleus at IoU >= 0.5, with no true nucleus "
                "covering half of it or lying half inside it",
    "merges": "predicted nuclei that hold two or more true nuclei, each at least half inside",
    "splits": "true nuclei cut into two or more predicted nuclei, each at least half inside",
    "too_large": "predicted nuclei (not merges) that cover at least half of one true nucleus "
                 "and are at least 1.5 times its area, matched or not",
}
"""`instance_metrics`' error counts and the rule behind each (see `error_causes`). A nucleus
found in a shifted or shrunken outline (IoU < 0.5, overlapping by more than half) is in none:
the rows need not add up to the false positives and negatives."""

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # an 11-tap Gaussian window for sigma 1.5, as in Wang et al. 2004
SSIM_K1, SSIM_K2 = 0.01, 0.03


# --- pixel metrics -------------------------------------------------------------------------------


def _as_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 2-D arrays of one shape, or a ValueError naming the problem."""
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.ndim != 2 or target.ndim != 2:
        raise ValueError(
            f"pixel metrics compare 2-D images; got prediction {pred.shape} and target "
            f"{target.shape}: select one channel and one plane first"
        )
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction {pred.shape} and target {target.shape} differ in shape; "
            "crop or predict the whole field of view so that they align"
        )
    for name, image in (("prediction", pred), ("target", target)):
        if not np.all(np.isfinite(image)):
            raise ValueError(f"the {name} has NaN or infinite pixels; metrics would be meaningless")
    return pred, target


def _data_range(target: np.ndarray, data_range: float | None) -> float:
    """The target's max - min (not its dtype's range), or the value given."""
    value = float(target.max() - target.min()) if data_range is None else float(data_range)
    if not value > 0:
        raise ValueError(
            f"data range {value} is not positive (a constant target?); "
            "pass data_range= explicitly, e.g. the range of the normalised stain"
        )
    return value


def psnr(pred: np.ndarray, target: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(data_range^2 / MSE).

    `data_range` defaults to the TARGET's max - min (not the dtype's range, which is meaningless
    for float images). Identical images give inf.
    """
    pred, target = _as_pair(pred, target)
    peak = _data_range(target, data_range)
    mse = float(np.mean((pred - target) ** 2))
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(peak**2 / mse))


def ssim(pred: np.ndarray, target: np.ndarray, data_range: float | None = None) -> float:
    """Mean structural similarity (Wang et al. 2004), between -1 and 1 (1 = identical).

    As in the paper: local means, variances and covariance weighted by a Gaussian window of
    sigma 1.5 (11 x 11 taps), population (not sample) covariances, K1 = 0.01, K2 = 0.03, and the
    mean taken over the windows that lie wholly inside the image (5 pixels cropped at each
    border). This equals skimage's `structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=...)`. `data_range` defaults to the
    TARGET's max - min. Images must be at least 11 x 11.
    """
    pred, target = _as_pair(pred, target)
    peak = _data_range(target, data_range)
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    if min(target.shape) < 2 * radius + 1:
        raise ValueError(
            f"SSIM needs images of at least {2 * radius + 1} x {2 * radius + 1} pixels "
            f"(its Gaussian window); got {target.shape}"
        )

    def local_mean(image: np.ndarray) -> np.ndarray:
        return ndi.gaussian_filter(image, SSIM_SIGMA, mode="reflect", truncate=SSIM_TRUNCATE)

    mean_p, mean_t = local_mean(pred), local_mean(target)
    var_p = local_mean(pred * pred) - mean_p**2
    var_t = local_mean(target * target) - mean_t**2
    cov = local_mean(pred * target) - mean_p * mean_t
    c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
    ssim_map = ((2 * mean_p * mean_t + c1) * (2 * cov + c2)) / (
        (mean_p**2 + mean_t**2 + c1) * (var_p + var_t + c2)
    )
    # windows reaching past the border see reflected pixels, not the image: leave them out
    inside = ssim_map[radius:-radius, radius:-radius]
    return float(inside.mean())


def pearson_r(pred: np.ndarray, target: np.ndarray) -> float:
    """Pearson correlation of the pixel values; nan when either image is constant."""
    pred, target = _as_pair(pred, target)
    centred_p, centred_t = pred - pred.mean(), target - target.mean()
    norm = np.sqrt(np.sum(centred_p**2) * np.sum(centred_t**2))
    if norm == 0:
        return float("nan")
    return float(np.clip(np.sum(centred_p * centred_t) / norm, -1.0, 1.0))


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error, in the images' units."""
    pred, target = _as_pair(pred, target)
    return float(np.mean(np.abs(pred - target)))


def nrmse(pred: np.ndarray, target: np.ndarray, data_range: float | None = None) -> float:
    """Root mean squared error divided by the TARGET's max - min (or `data_range`).

    This is skimage's `normalized_root_mse(target, pred, normalization="min-max")`, chosen over
    its default Euclidean normalisation so that NRMSE and PSNR say the same thing:
    psnr = -20 log10(nrmse) for the same data range.
    """
    pred, target = _as_pair(pred, target)
    peak = _data_range(target, data_range)
    return float(np.sqrt(np.mean((pred - target) ** 2)) / peak)


def pixel_metrics(
    pred: np.ndarray, target: np.ndarray, data_range: float | None = None
) -> dict[str, float]:
    """PSNR (dB), SSIM, Pearson r, MAE and NRMSE of one prediction (H, W) against its target.

    Keys: psnr, ssim, pearson, mae, nrmse. The data range is the target's max - min unless given.
    """
    return {
        "psnr": psnr(pred, target, data_range),
        "ssim": ssim(pred, target, data_range),
        "pearson": pearson_r(pred, target),
        "mae": mae(pred, target),
        "nrmse": nrmse(pred, target, data_range),
    }


# --- sharpness -----------------------------------------------------------------------------------


def _power_spectrum_2d(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radial frequency (cycles/pixel) and power of each 2-D Fourier coefficient, both (H, W).

    The mean is subtracted and a Hann window applied, so the image's edges (periodic in the
    DFT) do not leak a cross of spurious high-frequency power. Power is divided by the sum of
    the squared window, so white noise of variance s^2 has power s^2 at every frequency.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < 4:
        raise ValueError(f"a power spectrum needs a 2-D image of at least 4 x 4; got {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError("the image has NaN or infinite pixels; its spectrum would be meaningless")
    window = np.outer(np.hanning(image.shape[0]), np.hanning(image.shape[1]))
    spectrum = np.fft.fft2((image - image.mean()) * window)
    power = np.abs(spectrum) ** 2 / np.sum(window**2)
    fy = np.fft.fftfreq(image.shape[0])[:, None]
    fx = np.fft.fftfreq(image.shape[1])[None, :]
    return np.sqrt(fy**2 + fx**2), power


def radial_power_spectrum(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of a 2-D image.

    Returns (frequencies, power), both 1-D: frequencies k / N in cycles/pixel for k = 0 ... N/2,
    N = min(H, W) (0.5 is Nyquist), and the mean power of the Fourier coefficients whose radial
    frequency rounds to each (mean-subtracted, Hann-windowed; white noise of variance s^2 gives a
    flat s^2). The corners of the 2-D spectrum beyond 0.5 cycles/pixel are left out because only
    diagonal directions reach them.
    """
    radius, power = _power_spectrum_2d(image)
    n = min(power.shape)
    bins = np.rint(radius * n).astype(np.int64).ravel()
    keep = bins <= n // 2
    totals = np.bincount(bins[keep], weights=power.ravel()[keep], minlength=n // 2 + 1)
    counts = np.bincount(bins[keep], minlength=n // 2 + 1)
    frequencies = np.arange(n // 2 + 1) / n
    mean_power = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
    return frequencies, mean_power


HF_CUTOFF = 0.1
"""cycles/pixel: the default sharpness cutoff (periods under 10 pixels). In the built-in dataset
the real stain's spectrum falls by 1000x between 0.1 and 0.25 cycles/pixel (the point-spread
function) and reaches the camera-noise floor near 0.3; above 0.25 there is almost no signal
to be sharp about, only noise and a network's upsampling artefacts."""


def high_frequency_power(image: np.ndarray, cutoff: float = HF_CUTOFF) -> float:
    """Fraction of an image's spectral power above `cutoff` cycles/pixel, between 0 and 1.

    A fraction (power above the cutoff / all power but DC) is the power above the cutoff after
    scaling the image to unit variance, so it does not depend on brightness, offset or contrast:
    a prediction and a real stain in different units can be compared. Blurring lowers it; white
    noise gives 1 - pi cutoff^2 (the area of the 2-D spectrum outside the cutoff's circle).
    nan for a constant image.
    """
    if not 0 < cutoff < np.sqrt(0.5):
        raise ValueError(
            f"cutoff {cutoff} cycles/pixel is outside (0, 0.707); 0.5 is the Nyquist frequency"
        )
    radius, power = _power_spectrum_2d(image)
    total = float(power[radius > 0].sum())
    if total <= 0:
        return float("nan")
    return float(power[radius > cutoff].sum() / total)


def hf_power_ratio(pred: np.ndarray, target: np.ndarray, cutoff: float = HF_CUTOFF) -> float:
    """How sharp a prediction is relative to the real stain: `high_frequency_power` pred / target.

    1 means as much fine detail as the real stain, below 1 blurrier (typical of regression
    models, which average over plausible outputs), above 1 more fine detail than the real stain
    (noise, hallucinated texture, checkerboard artefacts). The real stain's highest
    frequencies are camera noise, which no model can predict, so the cutoff sits where the
    microscope still transmits structure (see HF_CUTOFF).
    """
    pred_fraction = high_frequency_power(pred, cutoff)
    target_fraction = high_frequency_power(target, cutoff)
    if not target_fraction > 0:
        return float("nan")
    return pred_fraction / target_fraction


SPECTRAL_BANDS = {"low": (0.05, 0.15), "mid": (0.15, 0.30), "high": (0.30, 0.45)}
"""cycles/pixel. In the built-in data, low holds chromatin texture and nuclear edges, mid the
fall of the point-spread function, high mostly camera noise, and a decoder's period-2
checkerboard lands near its top (0.5 cycles/pixel is Nyquist)."""

LSD_RANGE = (0.02, 0.45)
"""cycles/pixel over which `log_spectral_distance` averages: above the slow background, below
the corners of the spectrum where only diagonal directions are left."""


def band_power(image: np.ndarray, low: float, high: float) -> float:
    """Mean of an image's radially averaged power spectrum over the frequencies in [low, high).

    Each radial bin of `radial_power_spectrum` counts once, as it does on a plotted spectrum,
    so a band's power is what its stretch of the curve reads. Mean removed, Hann window, so
    white noise of variance s^2 gives s^2 in any band. Frequencies in cycles/pixel.
    """
    return spectrum_band_power(*radial_power_spectrum(image), low, high)


def spectrum_band_power(
    frequencies: np.ndarray, power: np.ndarray, low: float, high: float
) -> float:
    """Mean of a radially averaged spectrum (frequencies, power: 1-D) over its bins in [low, high).

    Works on one image's spectrum or on a spectrum averaged over images (`evaluate.radial_spectra`),
    so the band powers of a table and those of a figure are read the same way.
    """
    if not 0 <= low < high <= np.sqrt(0.5):
        raise ValueError(f"band [{low}, {high}) cycles/pixel is empty or beyond the spectrum")
    frequencies, power = np.asarray(frequencies, np.float64), np.asarray(power, np.float64)
    in_band = (frequencies >= low) & (frequencies < high)
    if not in_band.any():
        raise ValueError(f"band [{low}, {high}) holds no frequency of the spectrum "
                         f"({frequencies.size} bins up to {frequencies.max():.3g} cycles/pixel)")
    return float(power[in_band].mean())


def band_powers(image: np.ndarray) -> dict[str, float]:
    """`band_power` of an image in each of `SPECTRAL_BANDS`, from one spectrum: {band: power}."""
    frequencies, power = radial_power_spectrum(image)
    return {band: spectrum_band_power(frequencies, power, low, high)
            for band, (low, high) in SPECTRAL_BANDS.items()}


def band_power_ratio(pred: np.ndarray, target: np.ndarray, band: str) -> float:
    """Prediction's power over the real stain's in one of `SPECTRAL_BANDS`, in the stain's units.

    Unlike `hf_power_ratio` this keeps absolute power: 1 means the prediction has as much
    structure at those scales as the real stain; a blurry prediction is below 1, invented
    texture or artefacts above. nan when the real stain has no power in the band.
    """
    if band not in SPECTRAL_BANDS:
        raise ValueError(f"band {band!r} is not one of {', '.join(SPECTRAL_BANDS)}")
    pred, target = _as_pair(pred, target)
    low, high = SPECTRAL_BANDS[band]
    target_power = band_power(target, low, high)
    if not target_power > 0:
        return float("nan")
    return band_power(pred, low, high) / target_power


def log_spectral_distance(
    pred: np.ndarray, target: np.ndarray, frequency_range: tuple[float, float] = LSD_RANGE
) -> float:
    """Mean over `frequency_range` of |log10(P_pred / P_real)| of the radially averaged spectra.

    0 for identical spectra; 1 means the prediction's power is off by a factor of 10 on average,
    too much or too little alike. It sees both blur and artefacts in one number. nan where
    a spectrum is zero in the range.
    """
    _as_pair(pred, target)
    frequencies, pred_power = radial_power_spectrum(pred)
    _, target_power = radial_power_spectrum(target)
    low, high = frequency_range
    keep = (frequencies >= low) & (frequencies <= high)
    if not keep.any():
        raise ValueError(f"no frequency of a {np.shape(pred)} image in [{low}, {high}]")
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.abs(np.log10(pred_power[keep] / target_power[keep]))
    return float(distance.mean()) if np.all(np.isfinite(distance)) else float("nan")


def spectral_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """`band_power_ratio_{low,mid,high}` and `log_spectral_distance` of one prediction."""
    scores = {f"band_power_ratio_{band}": band_power_ratio(pred, target, band)
              for band in SPECTRAL_BANDS}
    scores["log_spectral_distance"] = log_spectral_distance(pred, target)
    return scores


# --- instance matching ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Overlaps:
    """The overlapping (gt, pred) pairs of two label images, one entry per pair."""

    gt_ids: np.ndarray  # (n_gt,) label values
    pred_ids: np.ndarray  # (n_pred,)
    gt_areas: np.ndarray  # (n_gt,) pixels
    pred_areas: np.ndarray  # (n_pred,)
    rows: np.ndarray  # (n_pairs,) index into gt_ids
    cols: np.ndarray  # (n_pairs,) index into pred_ids
    intersection: np.ndarray  # (n_pairs,) pixels
    iou: np.ndarray  # (n_pairs,)


def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{name} must be an integer label image (0 = background, one id per object); got "
            f"{labels.dtype}. Turn a binary mask into objects with skimage.measure.label"
        )
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} has negative labels; labels must be >= 0 (0 is background)")
    return labels


def _index_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object ids, their areas, and each pixel's object index (-1 for background), flat."""
    flat = labels.ravel().astype(np.int64, copy=False)
    if flat.size == 0 or flat.max() == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.full(flat.size, -1, np.int64)
    if flat.max() <= 4 * flat.size:  # ids are small enough for an O(pixels) count
        counts = np.bincount(flat)
        ids = np.flatnonzero(counts[1:]) + 1
        lookup = np.full(counts.size, -1, np.int64)
        lookup[ids] = np.arange(ids.size)
        return ids, counts[ids], lookup[flat]
    ids, index, counts = np.unique(flat, return_inverse=True, return_counts=True)
    if ids[0] == 0:
        return ids[1:], counts[1:], index.ravel() - 1
    return ids, counts, index.ravel()


def _overlaps(gt: np.ndarray, pred: np.ndarray) -> _Overlaps:
    """IoU of every overlapping pair, from the overlapping pixels only (never n_gt x n_pred)."""
    gt = _check_labels(gt, "the ground-truth labels")
    pred = _check_labels(pred, "the predicted labels")
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    gt_ids, gt_areas, gt_index = _index_labels(gt)
    pred_ids, pred_areas, pred_index = _index_labels(pred)
    both = (gt_index >= 0) & (pred_index >= 0)
    pair = gt_index[both] * max(pred_ids.size, 1) + pred_index[both]
    pair, intersection = np.unique(pair, return_counts=True)
    rows, cols = np.divmod(pair, max(pred_ids.size, 1))
    union = gt_areas[rows] + pred_areas[cols] - intersection
    return _Overlaps(
        gt_ids, pred_ids, gt_areas, pred_areas, rows, cols, intersection, intersection / union
    )


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, sparse.csr_array]:
    """Intersection over union of every ground-truth object with every predicted object.

    Returns (gt_ids, pred_ids, iou): the label values present (sorted, background 0 excluded)
    and a sparse (n_gt, n_pred) matrix whose row i, column j is the IoU of objects gt_ids[i] and
    pred_ids[j]; pairs that do not overlap are not stored (IoU 0). Built from the pixels where
    both images hold an object, so its cost grows with the image, not with n_gt x n_pred.
    """
    overlaps = _overlaps(gt, pred)
    iou = sparse.coo_array(
        (overlaps.iou, (overlaps.rows, overlaps.cols)),
        shape=(overlaps.gt_ids.size, overlaps.pred_ids.size),
    ).tocsr()
    return overlaps.gt_ids, overlaps.pred_ids, iou


def _optimal_matching(
    rows: np.ndarray, cols: np.ndarray, iou: np.ndarray, n_gt: int
) -> np.ndarray:
    """Indices of the candidate pairs in a one-to-one matching with the most pairs.

    Among matchings of that size, the one with the largest total IoU. For IoU thresholds above
    0.5 each object has at most one candidate, but below 0.5 an object can have several and
    greedy "best IoU first" matching can lose pairs, so each connected group of candidates is
    solved exactly with the Hungarian algorithm.
    """
    if rows.size == 0:
        return np.zeros(0, np.int64)
    n_nodes = n_gt + int(cols.max()) + 1
    graph = sparse.coo_array((np.ones(rows.size), (rows, n_gt + cols)), shape=(n_nodes, n_nodes))
    _, component = connected_components(graph, directed=False)
    edge_component = component[rows]
    edges_per_component = np.bincount(edge_component)
    lone = edges_per_component[edge_component] == 1  # the common case: nothing to decide
    chosen = [np.flatnonzero(lone)]
    shared = np.flatnonzero(~lone)
    shared = shared[np.argsort(edge_component[shared], kind="stable")]
    starts = np.flatnonzero(np.diff(edge_component[shared], prepend=-1))
    for edges in np.split(shared, starts[1:]):
        if edges.size == 0:
            continue
        local_rows, r = np.unique(rows[edges], return_inverse=True)
        local_cols, c = np.unique(cols[edges], return_inverse=True)
        # weight 1 per pair plus IoU scaled so that all IoUs together add less than one pair:
        # the most pairs first, then the best IoU among matchings of that size
        scale = 2.0 * min(local_rows.size, local_cols.size)
        weight = np.zeros((local_rows.size, local_cols.size))
        weight[r, c] = 1.0 + iou[edges] / scale
        edge_at = np.full(weight.shape, -1, np.int64)
        edge_at[r, c] = edges
        assigned_r, assigned_c = linear_sum_assignment(weight, maximize=True)
        picked = edge_at[assigned_r, assigned_c]
        chosen.append(picked[picked >= 0])
    return np.sort(np.concatenate(chosen))


def _matched_pairs(overlaps: _Overlaps, threshold: float) -> np.ndarray:
    """Indices of the overlapping pairs that `_optimal_matching` keeps at IoU >= threshold."""
    candidate = np.flatnonzero(overlaps.iou >= threshold)
    return candidate[_optimal_matching(overlaps.rows[candidate], overlaps.cols[candidate],
                                       overlaps.iou[candidate], overlaps.gt_ids.size)]


def _scores_at(overlaps: _Overlaps, threshold: float) -> dict[str, float]:
    """TP, FP, FN, precision, recall, F1 and mean matched IoU at one IoU threshold."""
    matched = _matched_pairs(overlaps, threshold)
    matched_iou = overlaps.iou[matched]
    tp = int(matched.size)
    fp = int(overlaps.pred_ids.size - tp)
    fn = int(overlaps.gt_ids.size - tp)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "mean_matched_iou": float(matched_iou.mean()) if tp else float("nan"),
        "accuracy": tp / (tp + fp + fn) if tp + fp + fn else 0.0,
        "average_precision": _average_precision(precision, recall),
    }


def _average_precision(precision: float, recall: float) -> float:
    """COCO's average precision of a segmentation whose objects all have the same confidence.

    Without confidence scores the precision-recall curve is one point, so the interpolated
    precision is `precision` at every recall level up to `recall` and 0 above; COCO averages it
    over the 101 COCO_RECALL_LEVELS. (torchmetrics, given equal scores, sorts the ties in input
    order and reaches this value when the unmatched predictions come first; other orders give
    more, for no reason in the images.)
    """
    reached = np.count_nonzero(COCO_RECALL_LEVELS <= recall)
    return precision * float(reached) / COCO_RECALL_LEVELS.size


def _foreground_overlap(overlaps: _Overlaps) -> dict[str, float]:
    """Dice and Jaccard of the binary masks (object vs background), from the object overlaps.

    Each pixel belongs to at most one object of each image, so the foregrounds' intersection is
    the sum of the pairs' intersections. 0 when both masks are empty, as for F1.
    """
    both = float(overlaps.intersection.sum())
    total = float(overlaps.gt_areas.sum() + overlaps.pred_areas.sum())
    return {"dice": 2 * both / total if total else 0.0,
            "jaccard": both / (total - both) if total else 0.0}


def match_instances(
    gt: np.ndarray,
    pred: np.ndarray,
    thresholds: np.ndarray | list[float] = IOU_THRESHOLDS,
    *,
    coverage: float = 0.5,
) -> dict:
    """Match predicted objects to ground-truth objects one-to-one by IoU, at each threshold.

    gt, pred: integer label images of one shape (0 = background; ids need not be consecutive).
    A pair can match at threshold t when its IoU >= t; the matching has the most pairs possible
    (optimal, not greedy, so it is right at low thresholds too). Returns plain Python numbers:

    - per threshold (lists in the order of `thresholds`, see PER_THRESHOLD_KEYS): thresholds,
      tp, fp, fn, precision = tp / n_pred, recall = tp / n_true, f1, mean_matched_iou (mean IoU
      of the matched pairs), accuracy = tp / (tp + fp + fn) (StarDist's object "accuracy";
      the 2024 course's accuracy column was the pixel accuracy of the binary masks, which the
      background dominates), average_precision (COCO's AP with every object equally
      confident: precision x the share of COCO_RECALL_LEVELS up to the recall). A ratio with a
      zero denominator is 0 (an empty prediction scores precision, recall and F1 0);
      mean_matched_iou is nan when nothing matched.
    - f1_mean: F1 averaged over IOU_THRESHOLDS (0.5, 0.55, ..., 0.95), whatever `thresholds` is.
    - mar: recall averaged over IOU_THRESHOLDS (COCO's mean average recall, with no cap on the
      number of objects; COCO's mAR_100 counts the first 100 predictions only).
    - dice, jaccard: overlap of the binary masks, 2 |T & P| / (|T| + |P|) and |T & P| / |T | P|,
      T and P the pixels of any true and any predicted object (the course's first part also
      computed them on the binary masks, not per object).
    - n_true, n_pred: object counts.
    - splits: ground-truth objects that hold two or more predicted objects, each with at least
      `coverage` of its own area inside that ground-truth object (one nucleus cut in pieces).
    - merges: predicted objects that hold two or more ground-truth objects, each with at least
      `coverage` of its own area inside that predicted object (touching nuclei fused).
    """
    thresholds = [float(t) for t in np.atleast_1d(thresholds)]
    for t in thresholds:
        if not 0 < t <= 1:
            raise ValueError(f"IoU threshold {t} is outside (0, 1]")
    return _match(_overlaps(gt, pred), thresholds, coverage)


def matched_labels(
    gt: np.ndarray, pred: np.ndarray, threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """The label pairs that `match_instances` counts as true positives at one IoU threshold.

    Returns (gt_ids, pred_ids), two equal-length arrays: gt_ids[k] is matched to pred_ids[k]
    (one to one, the matching with the most pairs). Every predicted label not in pred_ids is a
    false positive, every true label not in gt_ids a miss.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"IoU threshold {threshold} is outside (0, 1]")
    overlaps = _overlaps(gt, pred)
    pairs = _matched_pairs(overlaps, float(threshold))
    return overlaps.gt_ids[overlaps.rows[pairs]], overlaps.pred_ids[overlaps.cols[pairs]]


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `score` for telling `positive` items from the others.

    The probability that a positive item, drawn at random, scores higher than a negative one
    (ties count one half): 1 = the score separates them perfectly, 0.5 = it knows nothing.
    Computed from ranks (the Mann-Whitney U statistic), so only the order of the scores counts.
    nan when either class is empty.
    """
    score = np.asarray(score, dtype=np.float64).ravel()
    positive = np.asarray(positive).ravel().astype(bool)
    if score.shape != positive.shape:
        raise ValueError(f"score {score.shape} and positive {positive.shape} differ in length")
    if not np.all(np.isfinite(score)):
        raise ValueError("score has NaN or infinite values")
    n_positive = int(positive.sum())
    n_negative = positive.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return float("nan")
    ranks = rankdata(score)  # average ranks: a tie between the classes counts one half
    u = ranks[positive].sum() - n_positive * (n_positive + 1) / 2
    return float(u / (n_positive * n_negative))


def _match(overlaps: _Overlaps, thresholds: list[float], coverage: float) -> dict:
    """`match_instances` from the overlaps; each threshold is matched once."""
    scores = {t: _scores_at(overlaps, t)
              for t in dict.fromkeys([*thresholds, *map(float, IOU_THRESHOLDS)])}
    result: dict = {"thresholds": thresholds}
    for key in PER_THRESHOLD_KEYS[1:]:
        result[key] = [scores[t][key] for t in thresholds]
    standard = [scores[float(t)] for t in IOU_THRESHOLDS]
    result["f1_mean"] = float(np.mean([s["f1"] for s in standard]))
    result["mar"] = float(np.mean([s["recall"] for s in standard]))
    result |= _foreground_overlap(overlaps)
    result["n_true"] = int(overlaps.gt_ids.size)
    result["n_pred"] = int(overlaps.pred_ids.size)
    result["splits"] = _owners_of_several(
        overlaps.rows, overlaps.intersection / overlaps.pred_areas[overlaps.cols], coverage
    ).size
    result["merges"] = _owners_of_several(
        overlaps.cols, overlaps.intersection / overlaps.gt_areas[overlaps.rows], coverage
    ).size
    return result


def error_causes(
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    coverage: float = 0.5,
    size_ratio: float = 1.5,
) -> dict[str, np.ndarray]:
    """Which nuclei a segmentation got right, and why the others went wrong.

    gt, pred: integer label images of one shape (0 = background). Returns the label values
    (sorted 1-D int arrays) of:

    - matched_true, matched_pred: the pairs of the one-to-one matching at `iou_threshold`;
    - missed: true nuclei not matched and with no big overlap: no predicted nucleus covers
      `coverage` of its area or lies `coverage` inside it (so nothing was drawn there);
    - invented: predicted nuclei not matched and with no big overlap with any true nucleus;
    - merges: predicted nuclei holding two or more true nuclei, each at least `coverage` inside
      (the rule of `match_instances`' merges);
    - splits: true nuclei holding two or more predicted nuclei, each at least `coverage` inside;
    - too_large: predicted nuclei, not merges, covering at least `coverage` of one true nucleus
      with at least `size_ratio` times its area, matched or not: at size_ratio 1.5 these
      still match at IoU 0.5 up to twice the area, and fail at the higher thresholds.

    A nucleus counts once per cause; a shifted or shrunken one (IoU below the threshold but a
    big overlap) is in none, so the causes need not add up to the unmatched nuclei.
    """
    if not 0 < coverage <= 1 or not 0 < iou_threshold <= 1 or not size_ratio > 1:
        raise ValueError(f"need 0 < coverage <= 1 (got {coverage}), 0 < iou_threshold <= 1 (got "
                         f"{iou_threshold}) and size_ratio > 1 (got {size_ratio})")
    return _error_causes(_overlaps(gt, pred), iou_threshold, coverage, size_ratio)


def _error_causes(o: _Overlaps, iou_threshold: float = 0.5, coverage: float = 0.5,
                  size_ratio: float = 1.5) -> dict[str, np.ndarray]:
    """`error_causes` from the overlaps."""
    matched = _matched_pairs(o, iou_threshold)
    share_of_true = o.intersection / o.gt_areas[o.rows]  # how much of the true nucleus is covered
    share_of_pred = o.intersection / o.pred_areas[o.cols]  # how much of the prediction lies inside
    big = (share_of_true >= coverage) | (share_of_pred >= coverage)
    true_explained = np.union1d(o.rows[matched], o.rows[big])
    pred_explained = np.union1d(o.cols[matched], o.cols[big])
    merges = _owners_of_several(o.cols, share_of_true, coverage)
    larger = o.pred_areas[o.cols] >= size_ratio * o.gt_areas[o.rows]
    too_large = (share_of_true >= coverage) & larger & ~np.isin(o.cols, merges)
    return {
        "matched_true": np.sort(o.gt_ids[o.rows[matched]]),
        "matched_pred": np.sort(o.pred_ids[o.cols[matched]]),
        "missed": np.setdiff1d(o.gt_ids, o.gt_ids[true_explained]),
        "invented": np.setdiff1d(o.pred_ids, o.pred_ids[pred_explained]),
        "merges": o.pred_ids[merges],
        "splits": o.gt_ids[_owners_of_several(o.rows, share_of_pred, coverage)],
        "too_large": np.unique(o.pred_ids[o.cols[too_large]]),
    }


def _owners_of_several(owners: np.ndarray, share: np.ndarray, coverage: float) -> np.ndarray:
    """Indices (sorted) of the owners that hold two or more objects lying >= `coverage` inside."""
    held = owners[share >= coverage]
    return np.flatnonzero(np.bincount(held) >= 2) if held.size else np.zeros(0, np.int64)


def found_by_brightness(
    gt: np.ndarray, pred: np.ndarray, stain: np.ndarray, threshold: float
) -> dict[str, int]:
    """How many true nuclei a segmentation finds (matched at IoU >= 0.5), counted apart for the
    nuclei whose mean real stain is above `threshold` and for the others.

    A model whose range stops below the brightest nuclei, or that draws them too large, misses
    them while it finds the rest; the overall recall hides that when they are few. Counts, not
    recalls, so that a table can pool them over images.

    Keys: bright_nuclei, bright_found, other_nuclei, other_found.
    """
    overlaps = _overlaps(gt, pred)
    found = np.zeros(overlaps.gt_ids.size, bool)
    found[overlaps.rows[_matched_pairs(overlaps, 0.5)]] = True
    stain, _ = _as_pair(stain, gt)
    means = np.asarray(ndi.mean(stain, labels=gt, index=overlaps.gt_ids)).reshape(-1)
    bright = means > threshold
    return {"bright_nuclei": int(bright.sum()), "bright_found": int(found[bright].sum()),
            "other_nuclei": int((~bright).sum()), "other_found": int(found[~bright].sum())}


def bootstrap_interval(
    counts: np.ndarray,
    statistic,
    *,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """A percentile-bootstrap interval for a statistic of counts pooled over images.

    A test split holds few images, and a rare kind of nucleus only a few dozen: a recall of 0.8
    over 90 nuclei could as well have been 0.72 or 0.88 on another 40 images. Resampling the
    images (not the nuclei: nuclei of one image share its content) shows how far.

    counts: (n_images, k), one row of counts per image (e.g. nuclei and found).
    statistic: maps pooled counts (..., k) to a value (...), e.g. found / nuclei; it is called
        once on all resamples at once, so it must work along the last axis.
    Returns (low, high) between the (1 - level) / 2 and (1 + level) / 2 quantiles of the
    statistic over `n_resamples` resamples (fixed `seed`: the same table, the same interval).
    Resamples where the statistic is undefined (nan, e.g. no bright nucleus drawn) are left
    out; (nan, nan) when all are, or when there are no images.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or not 0 < level < 1:
        raise ValueError(f"counts must be (n_images, k) and 0 < level < 1, got {counts.shape} "
                         f"and {level}")
    if counts.shape[0] == 0:
        return (float("nan"), float("nan"))
    rows = np.random.default_rng(seed).integers(0, len(counts), (n_resamples, len(counts)))
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.asarray(statistic(counts[rows].sum(axis=1)), dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (float("nan"), float("nan"))
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return (float(low), float(high))


def f1_column(threshold: float) -> str:
    """'f1_iou50' for 0.5, 'f1_iou75' for 0.75: how `instance_metrics` names an F1."""
    return f"f1_iou{round(threshold * 100):02d}"


def instance_metrics(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """One table row for one field of view: the IoU-0.5 scores, the F1 at every threshold,
    counts, the course's first-part metrics and the errors by cause.

    Keys: f1_iou50, precision_iou50, recall_iou50, f1_mean, mean_matched_iou_iou50, n_true,
    n_pred (see `match_instances`); COURSE_INSTANCE_METRICS: accuracy_iou50, dice, jaccard,
    map_iou50, map_iou75 (average precision at IoU 0.5 and 0.75) and mar; the counts of
    ERROR_CAUSES: missed, invented, merges, splits, too_large (see `error_causes`); and
    f1_iou55, f1_iou60, ..., f1_iou95, the F1 at each of IOU_THRESHOLDS (`f1_column`), so that
    an F1-against-threshold curve needs no second matching. The label overlaps are computed
    once.
    """
    overlaps = _overlaps(gt, pred)
    thresholds = [float(t) for t in IOU_THRESHOLDS]
    result = _match(overlaps, thresholds, coverage=0.5)
    causes = _error_causes(overlaps)
    at_50, at_75 = thresholds.index(0.5), thresholds.index(0.75)
    row = {
        "f1_iou50": result["f1"][at_50],
        "precision_iou50": result["precision"][at_50],
        "recall_iou50": result["recall"][at_50],
        "f1_mean": result["f1_mean"],
        "mean_matched_iou_iou50": result["mean_matched_iou"][at_50],
        "n_true": result["n_true"],
        "n_pred": result["n_pred"],
        "accuracy_iou50": result["accuracy"][at_50],
        "dice": result["dice"],
        "jaccard": result["jaccard"],
        "map_iou50": result["average_precision"][at_50],
        "map_iou75": result["average_precision"][at_75],
        "mar": result["mar"],
        **{cause: int(causes[cause].size) for cause in ERROR_CAUSES},
    }
    for threshold, f1 in zip(thresholds, result["f1"], strict=True):
        row.setdefault(f1_column(threshold), f1)
    return row
