"""Which virtual nuclei to trust: how consistently each one reappears across MC-dropout samples.

    labels, table = nuclei_trust(stains)            # stains (n, H, W), stain units
    table.trust                                     # one value per nucleus of the mean, 0 ... 1

A pixel's spread (`uncertainty`) says how much the samples disagree on an intensity; a
biologist asks something else: is this nucleus real? The nuclei segmented in the mean stain are
the answer the model gives; each sample is segmented the same way (the same diameter), and a
nucleus the model draws in nearly every sample is one it is sure of, while one that comes and
goes is a guess. Two ways to score that, from the best IoU of each nucleus in each sample:

- "mean_iou" (the default, DEFAULT_DEFINITION): the mean of the best IoUs over the samples,
  which counts how well the outline agrees, not only whether the nucleus is there;
- "fraction": the share of samples in which some nucleus covers it with IoU >= PRESENCE_IOU,
  the usual threshold of a correct detection.

On held-out data (`docs/results.md`, `experiments/trust_auroc.py`) the mean IoU tells the
virtual nuclei that a real nucleus matches from those it does not with an AUROC of 0.94-0.98
at 8 to 32 samples; the fraction only 0.64-0.75, because nearly every virtual nucleus, right or
wrong, comes back at IoU >= 0.5 in every sample, and a wrong one is drawn with a wandering
outline rather than not at all. Numpy only: any set of samples is scored the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from tqdm.auto import tqdm

from pix2pixhd import metrics, segmentation

log = logging.getLogger(__name__)

PRESENCE_IOU = 0.5
"""A nucleus is present in a sample when a nucleus there overlaps it with at least this IoU.
Above 0.5 two nuclei cannot both overlap one that much, so presence needs no matching."""

TRUST_DEFINITIONS = ("mean_iou", "fraction")
"""The per-nucleus trust scores `nucleus_trust` computes (see the module's docstring)."""
DEFAULT_DEFINITION = "mean_iou"
"""The trust `sample` writes: the better of the two on held-out data (module docstring)."""

TABLE_COLUMNS = ("label", "trust", "area", "samples_present")
"""The columns of `nuclei_trust`'s table, the per-image part of `sample`'s nuclei_trust.csv."""


def best_iou_per_sample(
    mean_labels: np.ndarray, sample_labels: Iterable[np.ndarray]
) -> np.ndarray:
    """(n_nuclei, n_samples): the best IoU of each nucleus of `mean_labels` in each sample.

    mean_labels: integer labels (H, W), 0 = background; nuclei are the rows in the order of
    their label values. sample_labels: label images of the same shape, one per sample; an
    iterable, so they can be segmented one at a time and never all held in memory. 0 where no
    nucleus of the sample touches the nucleus.
    """
    columns = []
    for labels in sample_labels:
        # the rows are every nucleus of mean_labels, in label order, touched by a sample or not
        _, _, iou = metrics.iou_matrix(mean_labels, labels)
        columns.append(np.asarray(iou.max(axis=1).toarray()).ravel() if iou.shape[1]
                       else np.zeros(iou.shape[0]))
    if not columns:
        raise ValueError("no samples: the trust of a nucleus is how often it reappears across "
                         "samples, so give at least one segmented sample (two or more to mean "
                         "anything)")
    return np.stack(columns, axis=1)


def nucleus_trust(best_iou: np.ndarray, definition: str = DEFAULT_DEFINITION) -> np.ndarray:
    """Trust (n_nuclei,) in [0, 1] from best IoUs (n_nuclei, n_samples); see TRUST_DEFINITIONS."""
    best_iou = np.asarray(best_iou, dtype=np.float64)
    if best_iou.ndim != 2 or best_iou.shape[1] == 0:
        raise ValueError(f"best IoUs have shape {best_iou.shape}; expected (nuclei, samples) "
                         "with at least one sample")
    if definition == "fraction":
        return np.mean(best_iou >= PRESENCE_IOU, axis=1)
    if definition == "mean_iou":
        return best_iou.mean(axis=1)
    raise ValueError(f"trust definition {definition!r} is not one of "
                     f"{', '.join(TRUST_DEFINITIONS)}")


def nuclei_trust(
    samples: np.ndarray,
    *,
    definition: str = DEFAULT_DEFINITION,
    segment: Callable[..., np.ndarray] = segmentation.segment_nuclei,
    progress: bool = True,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Segment the mean of samples (n, H, W) and score each of its nuclei by its trust.

    Returns the mean's labels (H, W) int32 (1 ... N) and a table with TABLE_COLUMNS, one row
    per nucleus: trust (by `definition`, see TRUST_DEFINITIONS), area (pixels) and
    samples_present (how many samples hold the nucleus at IoU >= PRESENCE_IOU). How the
    samples are segmented: `segment_samples`.
    """
    if definition not in TRUST_DEFINITIONS:
        raise ValueError(f"trust definition {definition!r} is not one of "
                         f"{', '.join(TRUST_DEFINITIONS)}")
    segmented = segment_samples(samples, segment=segment, progress=progress)
    return segmented.labels, trust_table(segmented, definition)


def trust_table(segmented: SegmentedSamples, definition: str = DEFAULT_DEFINITION
                ) -> pd.DataFrame:
    """The table of `nuclei_trust` from samples already segmented (`segment_samples`)."""
    labels, best = segmented.labels, segmented.best_iou
    ids = np.unique(labels[labels > 0])
    return pd.DataFrame({
        "label": ids,
        "trust": nucleus_trust(best, definition),
        "area": np.bincount(labels.ravel())[ids],
        "samples_present": np.count_nonzero(best >= PRESENCE_IOU, axis=1),
    })


class SegmentedSamples(NamedTuple):
    """What `segment_samples` finds in a set of samples."""

    labels: np.ndarray
    """(H, W) int32: the nuclei of the mean of the samples, 1 ... N."""
    best_iou: np.ndarray
    """(N, n): each nucleus's best IoU in each sample (`best_iou_per_sample`)."""
    counts: np.ndarray
    """(n,): how many nuclei each sample shows (`uncertainty.nuclei_count_spread` takes it)."""


def segment_samples(
    samples: np.ndarray,
    *,
    segment: Callable[..., np.ndarray] = segmentation.segment_nuclei,
    progress: bool = True,
) -> SegmentedSamples:
    """The nuclei of the mean of samples (n, H, W), their best IoU in each sample, and the
    nuclei count of each sample.

    samples: MC-dropout stains of one image in the stain's units (n >= 2). segment(image,
    diameter) -> integer labels. The nucleus diameter is estimated once, on the mean, and
    every sample is segmented with it, so that the samples differ from the mean only in what
    they draw, not in the scale they are read at. Samples are segmented one at a time (a
    label image each, reduced to one IoU per nucleus, then dropped): memory stays at the
    samples themselves.
    """
    samples = np.asarray(samples)
    if samples.ndim != 3 or samples.shape[0] < 2:
        raise ValueError(f"samples have shape {samples.shape}; expected (n, H, W) with n >= 2 "
                         "MC-dropout samples (sample --n 2 or more)")
    mean = samples.mean(axis=0, dtype=np.float64)
    diameter = segmentation.estimate_diameter(mean)
    labels = np.asarray(segment(mean, diameter), dtype=np.int32)
    counts = []

    def segmented() -> Iterable[np.ndarray]:
        for sample in tqdm(samples, desc="segmenting samples", leave=False,
                           disable=not progress):
            sample_labels = segment(sample, diameter)
            counts.append(int(np.count_nonzero(np.unique(sample_labels))))
            yield sample_labels

    best = best_iou_per_sample(labels, segmented())
    log.debug("segment_samples: %d nuclei, diameter %.1f px", best.shape[0], diameter)
    return SegmentedSamples(labels, best, np.asarray(counts))


def mean_inside(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The mean of `values` (H, W) inside each nucleus of `labels`, in the order of the label
    values: the per-nucleus baseline to compare trust with (the mean pixel std)."""
    ids = np.unique(labels[labels > 0])
    return np.asarray(ndi.mean(np.asarray(values, np.float64), labels, index=ids), np.float64)


def matched_to_truth(labels: np.ndarray, true_labels: np.ndarray) -> np.ndarray:
    """1 for each nucleus of `labels` (in label order) that a ground-truth nucleus matches at
    IoU >= PRESENCE_IOU, one to one as `metrics.match_instances` matches, else 0."""
    ids = np.unique(labels[labels > 0])
    _, matched = metrics.matched_labels(true_labels, labels, PRESENCE_IOU)
    return np.isin(ids, matched).astype(np.int64)
