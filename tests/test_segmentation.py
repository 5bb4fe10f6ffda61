"""Nuclei segmentation: touching nuclei, scale with the diameter, real labelled nuclei."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from pix2pixhd.metrics import instance_metrics
from pix2pixhd.segmentation import estimate_diameter, segment_nuclei, segment_nuclei_cellpose


def disk_field(seed=0, size=256, cell=50):
    """Synthetic nuclear stain of disks (radius 7-11 px), some in touching pairs, and its labels.

    One disk or one touching pair per grid cell; pixels shared by a pair go to the nearer centre.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    best = np.full((size, size), np.inf)
    brightness = np.zeros((size, size))
    n = 0
    for r0 in range(0, size - cell + 1, cell):
        for c0 in range(0, size - cell + 1, cell):
            centre = np.array([r0 + cell / 2, c0 + cell / 2]) + rng.uniform(-3, 3, 2)
            radii = rng.uniform(7, 11, 2)
            if rng.random() < 0.3:  # a touching pair, centres radius1 + radius2 - 1 apart
                angle = rng.uniform(0, np.pi)
                step = (radii.sum() - 1) / 2 * np.array([np.sin(angle), np.cos(angle)])
                disks = [(centre - step, radii[0]), (centre + step, radii[1])]
            else:
                disks = [(centre, radii[0])]
            for (cr, cc), radius in disks:
                n += 1
                distance = np.hypot(rows - cr, cols - cc)
                inside = (distance <= radius) & (distance < best)
                labels[inside], best[inside] = n, distance[inside]
                brightness[inside] = rng.uniform(0.6, 1.0)
    image = ndi.gaussian_filter(brightness, 1.0) + 0.05
    image += rng.normal(scale=0.03, size=image.shape)
    return image, labels


def test_segment_nuclei_recovers_disks_including_touching_ones():
    image, truth = disk_field()
    labels = segment_nuclei(image)
    assert labels.dtype == np.int32
    assert labels.max() == len(np.unique(truth)) - 1
    row = instance_metrics(truth, labels)
    assert row["f1_iou50"] > 0.9
    assert row["merges"] == 0


@pytest.mark.parametrize("zoom", [0.75, 1, 3])
def test_the_same_field_at_another_scale_segments_as_well(zoom):
    """Disks 14-22 px across, zoomed to about 11-17 and 42-66 px: defaults follow the scale."""
    image, truth = disk_field(seed=1)
    image, truth = ndi.zoom(image, zoom, order=1), ndi.zoom(truth, zoom, order=0)
    row = instance_metrics(truth, segment_nuclei(image))
    assert row["f1_iou50"] > 0.9 and row["merges"] == 0


@pytest.mark.parametrize("zoom", [0.75, 1, 2.5])
def test_estimated_diameter_is_near_the_true_one(zoom):
    """Within 10 % of the median equal-area diameter of the true nuclei (14-22 px at zoom 1)."""
    image, truth = disk_field(seed=2)
    image, truth = ndi.zoom(image, zoom, order=1), ndi.zoom(truth, zoom, order=0)
    areas = np.bincount(truth.ravel())[1:]
    true_diameter = np.median(2 * np.sqrt(areas[areas > 0] / np.pi))
    assert estimate_diameter(image) == pytest.approx(true_diameter, rel=0.1)


def test_segment_nuclei_of_a_blank_image_is_empty():
    assert segment_nuclei(np.full((32, 32), 3.0)).max() == 0


def test_a_diameter_that_is_not_positive_is_refused():
    with pytest.raises(ValueError, match="diameter must be a positive number of pixels"):
        segment_nuclei(np.zeros((16, 16)), diameter=0)


def test_cellpose_backend_never_downloads_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        segment_nuclei_cellpose(np.zeros((16, 16)), tmp_path / "nuclei_model")


def stardist_nuclei() -> tuple[np.ndarray, np.ndarray]:
    """A real fluorescence image of nuclei with its labels (2018 Data Science Bowl), as shipped
    inside the `stardist` package; found without importing it (its deep-learning dependencies
    are not needed for two TIFF files). Skips when the package is not installed."""
    spec = importlib.util.find_spec("stardist")
    folder = Path(spec.submodule_search_locations[0]) / "data" / "images" if spec else None
    if folder is None or not (folder / "img2d.tif").is_file():
        pytest.skip("real labelled nuclei come with `pip install --no-deps stardist`")
    return tifffile.imread(folder / "img2d.tif"), tifffile.imread(folder / "mask2d.tif")


@pytest.mark.parametrize("zoom", [0.7, 1, 3])
def test_real_nuclei_from_15_to_70_pixels_score_f1_above_0_8(zoom):
    """Nuclei of median diameter 24 px, zoomed to about 17 and 71 px; default arguments."""
    image, truth = stardist_nuclei()
    image = ndi.zoom(image.astype(np.float64), zoom, order=1)
    truth = ndi.zoom(truth, zoom, order=0)
    assert instance_metrics(truth, segment_nuclei(image))["f1_iou50"] >= 0.8
