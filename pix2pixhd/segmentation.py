"""Nuclei segmentation of a nuclear stain, the same for the real and the virtual stain.

    labels = segment_nuclei(stain)                  # diameter estimated from the image
    labels = segment_nuclei(stain, diameter=65)     # the course's A549 nuclei, in pixels

Every length the classical pipeline uses (the smoothing, the least distance between two nuclear
centres, the smallest object kept) is a fixed fraction of the nucleus diameter in pixels, so one
set of defaults works from small nuclei (about 15 px across) to large ones (about 70 px). The
optional Cellpose path takes the same diameter. Numpy arrays in, int32 label images out
(0 = background); nothing here knows about torch, models or files other than Cellpose weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_li, threshold_otsu
from skimage.segmentation import relabel_sequential, watershed

logger = logging.getLogger(__name__)

THRESHOLDS = {"li": threshold_li, "otsu": threshold_otsu}
"""Automatic global thresholds that `segment_nuclei` accepts by name."""

SMOOTHING = 1 / 12
"""Gaussian sigma of the smoothing before thresholding, as a fraction of the diameter: enough
to even out chromatin texture and noise, too little to merge neighbours (2 px at 24 px)."""
LOCAL_WINDOW = 1.0
"""Side of the square window of the local mean, as a fraction of the diameter. A pixel is
foreground when it is above the global threshold and above this local mean: the glow between
touching nuclei passes a global threshold but is darker than its surroundings."""
BLOB_SCALE = 1 / 4
"""Sigma of the Laplacian of Gaussian that finds one seed per nucleus, as a fraction of the
diameter (smaller than a disc's best scale, diameter / 2.8, to keep touching nuclei apart).
It looks at the smoothed stain times the distance to the background (capped at one radius),
so a dark seam and a narrow waist between touching nuclei both make a dip; the watershed
floods the same map, so cuts follow the seams."""
SEED_DISTANCE = 1 / 3
"""Least distance between two nuclear centres, as a fraction of the diameter."""
MIN_AREA = 0.1
"""Smallest object kept, as a fraction of the area of a disc of the diameter: drops debris and
fragments, keeps small and partly cut nuclei at the image border."""
EDGE_WIDENING = 1.15
"""How much wider than their equal-area diameter thresholded objects measure in
`estimate_diameter` (blurred edges and Li's low threshold): 1.07-1.21 on disks, real nuclei
and the built-in data, from 15 to 70 px."""
DIAMETER_RANGE = (6.0, 400.0)
"""Estimated diameters are clipped to this range (pixels), so a blank or odd image still gets
lengths that make sense."""


def segment_nuclei(
    image: np.ndarray, diameter: float | None = None, *, threshold: str | float = "li"
) -> np.ndarray:
    """Label the nuclei of a nuclear stain (H, W); returns (H, W) int32 labels, 0 = background.

    Gaussian smoothing; foreground where the image is above a global threshold and above its
    local mean; holes filled (dim nucleoli); touching nuclei split by a watershed of a
    Laplacian-of-Gaussian blob map (see BLOB_SCALE) seeded at its peaks; small objects removed;
    labels renumbered 1 ... n.

    diameter: typical nucleus diameter in pixels. The smoothing (SMOOTHING x diameter), the
        local window (LOCAL_WINDOW x), the blob scale (BLOB_SCALE x), the seed distance
        (SEED_DISTANCE x) and the smallest object (MIN_AREA x the disc's area) follow from it.
        None estimates it from the image with `estimate_diameter`.
    threshold: "li" (minimum cross-entropy), "otsu" (between-class variance), both from the
        smoothed image's histogram, or an intensity in the image's units. Otsu sits too high
        when a few nuclei are much brighter than the rest (mitoses, G2 cells) and cuts the
        dim ones short; Li's threshold is lower and keeps whole nuclei.
    """
    image = _checked(image)
    if diameter is None:
        diameter = estimate_diameter(image)
    if not diameter > 0:
        raise ValueError(f"diameter must be a positive number of pixels; got {diameter}")
    smoothed = ndi.gaussian_filter(image, SMOOTHING * diameter)
    if smoothed.max() == smoothed.min():
        return np.zeros(image.shape, dtype=np.int32)
    level = _threshold(smoothed, threshold)
    window = max(3, int(LOCAL_WINDOW * diameter) | 1)
    foreground = (smoothed > level) & (smoothed > ndi.uniform_filter(smoothed, window))
    min_size = int(MIN_AREA * np.pi * diameter**2 / 4)
    foreground = _remove_small(ndi.label(ndi.binary_fill_holes(foreground))[0], min_size) > 0
    labels = _split_touching(smoothed, foreground, diameter)
    labels = relabel_sequential(_remove_small(labels, min_size))[0].astype(np.int32)
    logger.debug("segment_nuclei: diameter %.1f px, threshold %.4g, %d nuclei",
                 diameter, level, labels.max())
    return labels


def estimate_diameter(image: np.ndarray, threshold: str | float = "li") -> float:
    """Typical nucleus diameter (pixels) of a nuclear stain (H, W).

    Threshold a lightly smoothed copy (sigma 1 px) and give each object twice its largest
    inscribed radius (the peak of its distance transform): touching nuclei merged into one
    object still measure as one nucleus, where their area would not. The result is the
    area-weighted median over the objects (so specks of noise, many but small, do not pull it
    down) divided by EDGE_WIDENING. On round and elongated nuclei from 15 to 70 px it lands
    within about 10 % of the median equal-area diameter. A blank image gives the lower end
    of DIAMETER_RANGE.
    """
    image = _checked(image)
    smoothed = ndi.gaussian_filter(image, 1.0)
    if smoothed.max() == smoothed.min():
        return DIAMETER_RANGE[0]
    foreground = ndi.binary_fill_holes(smoothed > _threshold(smoothed, threshold))
    components, count = ndi.label(foreground)
    if count == 0:
        return DIAMETER_RANGE[0]
    index = np.arange(1, count + 1)
    diameters = 2 * ndi.maximum(ndi.distance_transform_edt(foreground), components, index)
    areas = np.bincount(components.ravel())[1:]
    order = np.argsort(diameters)
    cumulative = np.cumsum(areas[order])
    median = diameters[order][np.searchsorted(cumulative, cumulative[-1] / 2)]
    return float(np.clip(median / EDGE_WIDENING, *DIAMETER_RANGE))


def _checked(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"nuclei segmentation takes one 2-D image; got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError("the image has NaN or infinite pixels; fix them before segmenting")
    return image


def _threshold(smoothed: np.ndarray, threshold: str | float) -> float:
    if isinstance(threshold, str):
        if threshold not in THRESHOLDS:
            raise ValueError(f"threshold must be one of {', '.join(THRESHOLDS)} or a number; "
                             f"got {threshold!r}")
        return float(THRESHOLDS[threshold](smoothed))
    return float(threshold)


def _split_touching(smoothed: np.ndarray, foreground: np.ndarray, diameter: float) -> np.ndarray:
    """Watershed of the nuclei's blob map, one seed per blob at least SEED_DISTANCE apart."""
    inside = np.clip(ndi.distance_transform_edt(foreground) / (diameter / 2), 0, 1)
    blobs = -ndi.gaussian_laplace(smoothed * inside, BLOB_SCALE * diameter)
    components, _ = ndi.label(foreground)
    peaks = peak_local_max(blobs, min_distance=max(1, round(SEED_DISTANCE * diameter)),
                           labels=components, exclude_border=False)
    markers = np.zeros(foreground.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-blobs, markers, mask=foreground)
    # a component without a seed would vanish from the watershed: keep it as one object
    unseeded = foreground & (labels == 0)
    if unseeded.any():
        extra, _ = ndi.label(unseeded)
        labels[unseeded] = extra[unseeded] + labels.max()
    return labels


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """The label image with objects of fewer than `min_size` pixels set to background."""
    sizes = np.bincount(labels.ravel())
    too_small = sizes < min_size
    too_small[0] = False
    labels = labels.copy()
    labels[too_small[labels]] = 0
    return labels


def segment_nuclei_cellpose(
    image: np.ndarray, model_path: str | Path, *, diameter: float | None = None, gpu: bool = False
) -> np.ndarray:
    """Label nuclei (H, W) with a Cellpose model whose weights are already on disk; int32 labels.

    Never downloads: `model_path` must be an existing Cellpose model file, and the `cellpose`
    package must be installed. `diameter` in pixels, as for `segment_nuclei`; None estimates
    it with `estimate_diameter` (the same rule as the classical path, not Cellpose's own).
    """
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Cellpose weights {path} not found; this function never downloads: put a Cellpose "
            "model file there, or use segment_nuclei (classical, no weights)"
        )
    try:
        from cellpose import models
    except ImportError as error:
        raise ImportError(
            "segment_nuclei_cellpose needs the cellpose package: `pip install cellpose`, "
            "or use segment_nuclei (classical, no extra packages)"
        ) from error
    image = _checked(image)
    diameter = estimate_diameter(image) if diameter is None else diameter
    model = models.CellposeModel(gpu=gpu, pretrained_model=str(path))
    masks = np.asarray(model.eval(image.astype(np.float32), diameter=diameter)[0])
    return relabel_sequential(masks.astype(np.int64))[0].astype(np.int32)
