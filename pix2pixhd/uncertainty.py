"""MC-dropout: many plausible virtual stains for one phase image, and whether their spread
tells where the model is wrong.

    samples = mc_dropout_samples(generator, phase, n=32, seed=0)        # (n, C, H, W) tensor
    stains = normaliser.denormalise_target(samples.cpu().numpy())[:, 0]  # (n, H, W), stain units
    maps = uncertainty_maps(stains)                                      # mean, std, cv
    scores = evaluate_uncertainty(stains, target, true_labels=masks, std_scale=s)

Dropout left on at inference turns one trained network into a family of slightly different
networks; the spread of their outputs is a cheap (approximate) Bayesian uncertainty (Gal and
Ghahramani 2016). It is not free of assumptions: MC-dropout spreads are usually too narrow, so
`fit_std_scale` rescales them on validation images before they are read as error bars.

Does the uncertainty point at the errors? Three views, all numpy:

- rank correlation (`spearman_uncertainty_error`): do uncertain pixels have larger errors?
- sparsification (`sparsification_curve`, `ause`): remove the most uncertain pixels first and
  watch the error of what remains fall; the oracle removes the largest errors first, so the
  area between the two curves (AUSE, Ilg et al. 2018) is 0 for a perfect ranking.
- calibration (`uncertainty_calibration_error`): within pixels of similar predicted variance,
  does the squared error match that variance (UCE, Laves et al. 2020)?
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage as ndi
from scipy.stats import spearmanr
from torch import Tensor, nn
from tqdm.auto import tqdm

from pix2pixhd import metrics, segmentation
from pix2pixhd.checkpoint import load_checkpoint, training_statistics
from pix2pixhd.data import Normaliser
from pix2pixhd.layout import read_image, read_mask, write_image
from pix2pixhd.predict import input_files, input_normaliser, load_predictor, pad_to_multiple

log = logging.getLogger(__name__)

DROPOUT_TYPES = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)

CV_EPS_FRACTION = 0.01
"""Default eps of the coefficient of variation, as a fraction of the mean map's 99th percentile."""


# --- sampling ----------------------------------------------------------------------------------


def dropout_modules(generator: nn.Module) -> list[nn.Module]:
    """The dropout layers of a network that actually drop something (p > 0)."""
    return [m for m in generator.modules() if isinstance(m, DROPOUT_TYPES) and m.p > 0]


@contextmanager
def mc_dropout(generator: nn.Module) -> Iterator[nn.Module]:
    """The generator in evaluation mode except its dropout layers, which keep dropping.

    Normalisation layers stay as in evaluation (batch norm uses its running statistics and does
    not update them; instance norm is per sample either way), so the only randomness is dropout.
    Every module's train/eval flag is restored on exit, also after an error.
    """
    if not dropout_modules(generator):
        raise ValueError(
            "the generator has no dropout layer with p > 0, so MC-dropout would give n copies "
            "of one prediction; train a model with model.use_dropout=true (and dropout_p > 0)"
        )
    modes = [(module, module.training) for module in generator.modules()]
    try:
        generator.eval()
        for module in dropout_modules(generator):
            module.train()
        yield generator
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def _seeded(device: torch.device, seed: int) -> Iterator[None]:
    """Seed the RNG that `device`'s dropout draws from, and put the caller's state back after.

    Only that one generator is forked and seeded (not every GPU's), so nothing else in the
    process sees a different random stream because samples were drawn.
    """
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        with torch.random.fork_rng(devices=[index], device_type="cuda"):
            torch.random.default_generator.manual_seed(seed)
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
            yield
    elif device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            yield
    else:  # mps, xpu, ...: fork that backend's generator, seed through the global call
        with torch.random.fork_rng(device_type=device.type):
            torch.manual_seed(seed)
            yield


def _prepared_input(generator: nn.Module, phase: Tensor, multiple: int | None) -> Tensor:
    """phase (1, C, H, W) on the generator's device and dtype; checks shape and multiple."""
    if phase.ndim != 4 or phase.shape[0] != 1:
        raise ValueError(
            f"phase has shape {tuple(phase.shape)}; expected one normalised image (1, C, H, W): "
            "use phase[None, None] for an (H, W) tensor"
        )
    if multiple is not None and multiple < 1:
        raise ValueError(f"multiple={multiple} must be a positive integer (or None)")
    parameter = next(generator.parameters())
    return phase.to(device=parameter.device, dtype=parameter.dtype)


def _size_multiple(generator: nn.Module, multiple: int | None) -> int:
    """The multiple to pad to: the one given, else the generator's own `size_multiple`
    (looked up through a DistributedDataParallel wrapper too)."""
    if multiple is not None:
        return multiple
    inner = getattr(generator, "module", generator)
    return int(getattr(generator, "size_multiple", getattr(inner, "size_multiple", 1)))


def mc_dropout_samples(
    generator: nn.Module,
    phase: Tensor,
    n: int = 16,
    *,
    seed: int = 0,
    batch_size: int = 16,
    multiple: int | None = None,
    progress: bool = True,
) -> Tensor:
    """n stochastic predictions for one input, computed as batches: (n, C_out, H, W).

    phase: one normalised phase image (1, C_in, H, W), any H and W: it is reflect-padded to a
    multiple of `multiple` (None: the generator's `size_multiple`) and the output cropped back.
    The input is repeated along the batch axis, `batch_size` copies at a time, so a GPU computes
    many samples in the time of a few passes. Each copy draws its own dropout masks and instance
    norm is per sample, so the batch has the distribution of n separate passes (not the same
    numbers: the masks are drawn in another order). Returned on the generator's device, in the
    normalised target units ([-1, 1]).

    seed makes the draw reproducible for one (n, batch_size, device); the caller's RNG state is
    the same afterwards as before.
    """
    _check_counts(n=n, batch_size=batch_size)
    phase = _prepared_input(generator, phase, multiple)
    padded, (height, width) = pad_to_multiple(phase, _size_multiple(generator, multiple))
    chunks = [min(batch_size, n - start) for start in range(0, n, batch_size)]
    outputs = []
    with mc_dropout(generator), torch.no_grad(), _seeded(padded.device, seed):
        for size in tqdm(chunks, desc="MC-dropout batches", leave=False,
                         disable=not progress or len(chunks) < 2):
            batch = padded.repeat(size, 1, 1, 1)
            outputs.append(generator(batch)[..., :height, :width])
    return torch.cat(outputs)


def mc_dropout_samples_sequential(
    generator: nn.Module,
    phase: Tensor,
    n: int = 16,
    *,
    seed: int = 0,
    multiple: int | None = None,
    progress: bool = True,
) -> Tensor:
    """The same as `mc_dropout_samples`, one forward pass per sample: (n, C_out, H, W).

    The slow reference, for the benchmark and to check that batching changes nothing but speed.
    """
    _check_counts(n=n)
    phase = _prepared_input(generator, phase, multiple)
    padded, (height, width) = pad_to_multiple(phase, _size_multiple(generator, multiple))
    outputs = []
    with mc_dropout(generator), torch.no_grad(), _seeded(padded.device, seed):
        for _ in tqdm(range(n), desc="MC-dropout passes", leave=False, disable=not progress):
            outputs.append(generator(padded)[..., :height, :width])
    return torch.cat(outputs)


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")


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
    if np.ptp(std) == 0 or np.ptp(abs_error) == 0:
        log.warning("std or error is constant: their rank correlation is undefined (nan)")
        return float("nan")
    return float(spearmanr(std, abs_error).statistic)


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
) -> dict[str, np.ndarray]:
    """Mean absolute error of the pixels kept after removing the most uncertain ones.

    uncertainty: any per-pixel score, larger = less sure (std, variance: only the order counts).
    error: the absolute error |prediction - target| of the same pixels (the curves are MAE,
    the same units as Spearman's abs_error; pass squared errors for an MSE curve).
    fractions: the fractions of pixels removed, in [0, 1); default 0, 0.01, ..., 0.99.

    Returns fractions and three curves, each divided by the MAE with nothing removed so that
    all start at 1: `model` removes the highest uncertainty first, `oracle` the highest error
    first (the best any ranking can do), `random` a random order (what an uninformative
    uncertainty does: flat at 1 up to noise). A useful uncertainty falls well below 1.
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
    return {"fractions": fractions, **curves}


def ause(curve: dict[str, np.ndarray]) -> float:
    """Area between a sparsification curve's model and oracle curves (trapezoid over fractions).

    0 when the uncertainty ranks the pixels exactly as their errors do; it grows as the ranking
    gets worse. Its scale depends on the fractions covered (the default spans 0 - 0.99).
    """
    x = np.asarray(curve["fractions"], dtype=np.float64)
    gap = np.asarray(curve["model"], dtype=np.float64) - np.asarray(curve["oracle"], np.float64)
    return float(np.sum(np.diff(x) * (gap[1:] + gap[:-1]) / 2))


def uncertainty_calibration_error(
    variance: np.ndarray, squared_error: np.ndarray, n_bins: int = 20
) -> float:
    """UCE: how far the squared error is from the predicted variance, bin by bin.

    Pixels are sorted by predicted variance and cut into `n_bins` bins of equal count (equal
    widths would leave most bins empty, variances are very skewed); UCE = sum over bins of
    (n_bin / N) * |mean squared error - mean variance|, in squared stain units. 0 for a
    calibrated model; comparable between models only on the same images and units.
    """
    variance, squared_error = _flat_pair(variance, squared_error, ("variance", "squared_error"))
    if not 1 <= n_bins <= variance.size:
        raise ValueError(
            f"n_bins={n_bins} must be between 1 and the number of pixels ({variance.size})"
        )
    order = np.argsort(variance, kind="stable")
    uce = 0.0
    for bin_indices in np.array_split(order, n_bins):
        gap = abs(squared_error[bin_indices].mean() - variance[bin_indices].mean())
        uce += bin_indices.size / variance.size * gap
    return float(uce)


def fit_std_scale(std: np.ndarray, error: np.ndarray) -> float:
    """The factor s that makes (s * std)^2 match the squared error on average.

    s^2 = mean(error^2) / mean(std^2), the maximum-likelihood scale of a Gaussian error model
    error ~ N(0, (s * std)^2). MC-dropout spreads are typically too narrow (s > 1). Fit s on the
    validation split and apply it to the test split, never on the images you then score.
    error may be signed or absolute (it is squared).
    """
    std, error = _flat_pair(std, error, ("std", "error"))
    mean_variance = np.mean(std**2)
    if not mean_variance > 0:
        raise ValueError("std is zero everywhere: no scale makes it match the errors")
    return float(np.sqrt(np.mean(error**2) / mean_variance))


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
) -> dict[str, float]:
    """Score one image's MC-dropout samples (n, H, W) against the real stain target (H, W).

    Both in the stain's own units. The prediction is the mean of the samples; its error is
    scored against their std. Keys: mae (of the mean), mean_std, spearman_std_abs_error, ause
    (MAE sparsification), uce (variance (std_scale * std)^2, std_scale fitted on validation
    images with `fit_std_scale`), uce_unscaled (std_scale = 1), std_scale. With true_labels
    (ground-truth nuclei, (H, W) integers), also: nuclei_true, nuclei_count_mean and
    nuclei_count_std (over samples), and nucleus_spearman_std_iou (per true nucleus, mean std
    against IoU with the nucleus segmented in the mean prediction; negative = informative).
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
        "ause": ause(sparsification_curve(std, np.abs(error))),
        "uce": uncertainty_calibration_error((std_scale * std) ** 2, error**2, n_bins),
        "uce_unscaled": uncertainty_calibration_error(std**2, error**2, n_bins),
        "std_scale": float(std_scale),
    }
    if true_labels is not None:
        spread = nuclei_count_spread(samples, segment)
        segment = segmentation.segment_nuclei if segment is None else segment
        nuclei = per_nucleus_uncertainty(std, segment(maps["mean"]), true_labels)
        result["nuclei_true"] = int(len(nuclei))
        result["nuclei_count_mean"] = spread["mean"]
        result["nuclei_count_std"] = spread["std"]
        result["nucleus_spearman_std_iou"] = (
            float(spearmanr(nuclei["mean_std"], nuclei["iou"]).statistic)
            if len(nuclei) > 2 and nuclei["mean_std"].nunique() > 1 and nuclei["iou"].nunique() > 1
            else float("nan")
        )
    return result


# --- whole folders ---------------------------------------------------------------------------


def sample_stains(
    generator: nn.Module,
    normaliser: Normaliser,
    phase: np.ndarray,
    n: int = 16,
    *,
    seed: int = 0,
    batch_size: int = 16,
) -> np.ndarray:
    """n MC-dropout stains for one raw phase image (H, W), in the stain's units: (n, C, H, W)."""
    device = next(generator.parameters()).device
    normalised = np.asarray(normaliser.normalise_input(phase), dtype=np.float32)
    tensor = torch.from_numpy(normalised)[None, None].to(device)
    samples = mc_dropout_samples(generator, tensor, n, seed=seed, batch_size=batch_size,
                                 progress=False)
    return np.asarray(normaliser.denormalise_target(samples.float().cpu().numpy()))


def _split_images(source: Path, channel: str) -> dict[str, dict[str, Path | None]]:
    """{fov: {phase, target, masks}} of a folder; target and masks only in a split folder."""
    images = {}
    for fov, phase in input_files(source).items():
        target = source / channel / f"{fov}.tif"
        masks = source / "nuclei_masks" / f"{fov}.tif"
        images[fov] = {"phase": phase, "target": target if target.is_file() else None,
                       "masks": masks if masks.is_file() else None}
    return images


def calibrate_std_scale(
    generator: nn.Module, normaliser: Normaliser, split: str | Path, *, n: int = 16,
    seed: int = 0, batch_size: int = 16, max_images: int | None = 8,
) -> float:
    """`fit_std_scale` on the MC-dropout spreads and errors of a validation split, pooled."""
    channel = normaliser.target_channels[0]
    images = _split_images(Path(split), channel)
    stds, errors = [], []
    for fov, paths in list(images.items())[:max_images]:
        if paths["target"] is None:
            raise FileNotFoundError(f"{split} has no {channel}/{fov}.tif to calibrate against")
        stains = sample_stains(generator, normaliser, read_image(paths["phase"]), n, seed=seed,
                               batch_size=batch_size)[:, 0]
        maps = uncertainty_maps(stains)
        stds.append(maps["std"].ravel())
        errors.append((maps["mean"] - read_image(paths["target"])).ravel())
    return fit_std_scale(np.concatenate(stds), np.concatenate(errors))


def sample_folder(
    checkpoint: str | Path,
    source: str | Path,
    out: str | Path,
    *,
    n: int = 16,
    seed: int = 0,
    batch_size: int | None = None,
    calibration: str | Path | None = None,
    max_images: int | None = None,
    device: str | torch.device = "cpu",
    normalise: str = "dataset",
) -> dict[str, float]:
    """MC-dropout for every phase image of `source` (a TIFF, a folder, or a split folder).

    Writes OUT/mean/<fov>.tif and OUT/std/<fov>.tif (first target channel, stain units). When
    `source` is a split folder with the real stain, every image is also scored
    (`evaluate_uncertainty`) into OUT/per_image.csv and the means into OUT/summary.json; the std
    scale is fitted on `calibration` (a validation split) when given, else left at 1.
    `normalise` and the warning on inputs far from the training data: `predict.input_normaliser`.
    """
    generator, _, normaliser = load_predictor(checkpoint, device)
    stats = training_statistics(load_checkpoint(checkpoint))
    batch_size = batch_size or (16 if torch.device(device).type == "cuda" else 4)
    std_scale = 1.0
    if calibration is not None:
        std_scale = calibrate_std_scale(generator, normaliser, calibration, n=n, seed=seed,
                                        batch_size=batch_size)
        log.info("std scale fitted on %s: %.3f", calibration, std_scale)
    channel = normaliser.target_channels[0]
    rows = []
    images = list(_split_images(Path(source), channel).items())[:max_images]
    for fov, paths in tqdm(images, desc="MC-dropout"):
        phase = read_image(paths["phase"])
        scaling = input_normaliser(phase, normaliser, stats, str(paths["phase"]), normalise)
        stains = sample_stains(generator, scaling, phase, n, seed=seed,
                               batch_size=batch_size)[:, 0]
        maps = uncertainty_maps(stains)
        write_image(Path(out) / "mean" / f"{fov}.tif", maps["mean"])
        write_image(Path(out) / "std" / f"{fov}.tif", maps["std"])
        if paths["target"] is not None:
            masks = read_mask(paths["masks"]) if paths["masks"] is not None else None
            scores = evaluate_uncertainty(stains, read_image(paths["target"]), masks,
                                          std_scale=std_scale)
            rows.append({"fov": fov, **scores})
    if not rows:
        return {}
    table = pd.DataFrame(rows)
    table.to_csv(Path(out) / "per_image.csv", index=False)
    summary = {name: float(table[name].mean()) for name in table.columns if name != "fov"}
    summary |= {"n_images": len(table), "n_samples": n, "seed": seed}
    summary = {k: (v if np.isfinite(v) else None) for k, v in summary.items()}
    (Path(out) / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
