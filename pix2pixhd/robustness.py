"""When does a model break? Its inputs degraded step by step, and its scores at each step.

    blurred = perturb_phase(phase, blur_sigma=2.0)              # as an out-of-focus microscope
    table = robustness_table({"GAN": (generator, normaliser)}, images,
                             {"blur_sigma": [0, 1, 2, 4], "offset": [0, 1, 2]})

Each perturbation changes one thing about how the phase image was recorded; the table scores
every model's stain of every perturbed image the way Part 3 scores a test split (nuclei F1 at
IoU 0.5 from `evaluate.instance_scores`, band power over the real stain's from
`metrics.band_power_ratio`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from pix2pixhd import metrics
from pix2pixhd.evaluate import instance_scores
from pix2pixhd.predict import predict_image

PERTURBATIONS = {
    "blur_sigma": "Gaussian blur, sigma in pixels (a defocused or lower-resolution microscope)",
    "offset": "a constant added to every pixel, in IQRs of the image (another background level)",
    "noise": "Gaussian noise, its std in IQRs of the image (a shorter exposure)",
}
"""The perturbations `perturb_phase` knows, and what each stands for."""


def perturb_phase(phase: np.ndarray, *, blur_sigma: float = 0.0, offset: float = 0.0,
                  noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A phase image (H, W) degraded: blurred by a Gaussian of `blur_sigma` pixels, then
    shifted by `offset` and given Gaussian noise of std `noise`, both in units of the image's
    interquartile range. All zero returns a copy of the image. float32 (H, W)."""
    if min(blur_sigma, noise) < 0:
        raise ValueError(f"blur_sigma ({blur_sigma}) and noise ({noise}) cannot be negative")
    image = np.asarray(phase, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected one 2-D phase image (H, W), got shape {image.shape}")
    low, high = np.percentile(image, [25, 75])
    iqr = float(high - low) or 1.0
    out = ndi.gaussian_filter(image, blur_sigma, mode="reflect") if blur_sigma else image.copy()
    out = out + offset * iqr
    if noise:
        out = out + np.random.default_rng(seed).normal(0.0, noise * iqr, image.shape)
    return out.astype(np.float32)


def robustness_table(
    predictors: Mapping[str, tuple],
    images: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    perturbations: Mapping[str, Sequence[float]],
) -> pd.DataFrame:
    """Scores of each model's stain of each perturbed image, averaged over the images.

    predictors: {name: (generator, normaliser)} as `predict.load_predictor` gives them.
    images: (phase, real stain, nuclei labels) triples, each (H, W).
    perturbations: {keyword of `perturb_phase`: levels}; the clean image is level 0.
    Returns one row per model, perturbation and level: f1_iou50 and band_power_ratio_<band>
    for each of `metrics.SPECTRAL_BANDS`, and the rows of model "real stain" (its F1 when
    segmented the same way, the same at every level: the real stain is not perturbed).
    """
    unknown = set(perturbations) - set(PERTURBATIONS)
    if unknown:
        raise ValueError(f"no perturbation {', '.join(sorted(unknown))}; choose from "
                         f"{', '.join(PERTURBATIONS)}")
    real_f1 = float(np.mean([instance_scores(stain, labels)["f1_iou50"]
                             for _, stain, labels in images]))
    clean: dict[str, dict[str, float]] = {}  # level 0 is the same image for every kind
    rows = []
    for kind, levels in perturbations.items():
        for level in map(float, levels):
            rows.append({"model": "real stain", "perturbation": kind, "level": level,
                         "f1_iou50": real_f1})
            for name, (generator, normaliser) in predictors.items():
                if level == 0 and name in clean:
                    scores = clean[name]
                else:
                    scores = _mean_scores(generator, normaliser, images, kind, level)
                if level == 0:
                    clean.setdefault(name, scores)
                rows.append({"model": name, "perturbation": kind, "level": level, **scores})
    return pd.DataFrame(rows)


def _mean_scores(generator, normaliser, images, kind: str, level: float) -> dict[str, float]:
    """f1_iou50 and band_power_ratio_<band> of one model's stains of the perturbed images,
    averaged over the images."""
    scores = []
    for index, (phase, stain, labels) in enumerate(images):
        perturbed = perturb_phase(phase, seed=index, **{kind: level})
        prediction = predict_image(generator, perturbed, normaliser)[0]
        ratios = {f"band_power_ratio_{band}": metrics.band_power_ratio(prediction, stain, band)
                  for band in metrics.SPECTRAL_BANDS}
        scores.append({"f1_iou50": instance_scores(prediction, labels)["f1_iou50"], **ratios})
    return pd.DataFrame(scores).mean().to_dict()
