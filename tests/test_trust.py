import numpy as np
import pytest
from scipy import ndimage as ndi

from pix2pixhd.trust import (
    best_iou_per_sample,
    matched_to_truth,
    mean_inside,
    nuclei_trust,
    nucleus_trust,
    segment_samples,
)


def square(shape, top, left, side, label=1):
    labels = np.zeros(shape, dtype=np.int32)
    labels[top:top + side, left:left + side] = label
    return labels


def threshold_segment(image, diameter):
    """A segmentation whose answer a test can work out by hand: every bright blob is a nucleus."""
    return ndi.label(image > 0.1)[0]


def two_nuclei_samples(n=12, faint_in=3):
    """n samples (n, 40, 60): nucleus A (10x10) in every sample, nucleus B in `faint_in` of them."""
    samples = np.zeros((n, 40, 60))
    samples[:, 5:15, 5:15] = 1.0
    samples[:faint_in, 20:30, 40:50] = 1.0
    return samples


def test_a_nucleus_in_every_sample_has_trust_one_and_one_in_3_of_12_a_quarter():
    labels, table = nuclei_trust(two_nuclei_samples(), definition="fraction",
                                 segment=threshold_segment, progress=False)
    assert list(table.columns) == ["label", "trust", "area", "samples_present"]
    assert labels.max() == 2 and labels.dtype == np.int32
    always = table.set_index("label").loc[labels[10, 10]]
    sometimes = table.set_index("label").loc[labels[25, 45]]
    assert always.trust == 1.0 and always.samples_present == 12 and always.area == 100
    assert sometimes.trust == 0.25 and sometimes.samples_present == 3
    # drawn with the very same outline whenever drawn: the mean IoU says the same
    _, by_iou = nuclei_trust(two_nuclei_samples(), segment=threshold_segment, progress=False)
    assert by_iou.trust.tolist() == table.trust.tolist()


def test_mean_iou_trust_counts_how_well_the_outline_agrees():
    mean = square((30, 30), 0, 0, 10)
    same = square((30, 30), 0, 0, 10)
    shifted = square((30, 30), 0, 5, 10)  # overlaps 50 of 150 pixels: IoU 1/3
    best = best_iou_per_sample(mean, [same, shifted, np.zeros((30, 30), np.int32)])
    np.testing.assert_allclose(best, [[1.0, 1 / 3, 0.0]])
    assert nucleus_trust(best, "fraction") == pytest.approx(1 / 3)
    assert nucleus_trust(best, "mean_iou") == pytest.approx((1 + 1 / 3) / 3)


def test_the_best_of_several_overlapping_sample_nuclei_counts():
    mean = square((30, 30), 0, 0, 10)
    split = square((30, 30), 0, 0, 10)
    split[:, 6:] = np.where(split[:, 6:] > 0, 2, 0)  # one nucleus cut 6 | 4 in the sample
    np.testing.assert_allclose(best_iou_per_sample(mean, [split]), [[0.6]])


def test_an_empty_sample_set_is_an_error():
    mean = square((30, 30), 0, 0, 10)
    with pytest.raises(ValueError, match="no samples"):
        best_iou_per_sample(mean, [])
    with pytest.raises(ValueError, match="at least one sample"):
        nucleus_trust(np.zeros((3, 0)))
    with pytest.raises(ValueError, match="n >= 2"):
        segment_samples(np.zeros((0, 30, 30)))
    with pytest.raises(ValueError, match="n >= 2"):
        nuclei_trust(np.zeros((1, 30, 30)))


def test_an_unknown_definition_names_the_choices():
    with pytest.raises(ValueError, match="mean_iou, fraction"):
        nucleus_trust(np.ones((2, 3)), "median")


def test_a_mean_without_nuclei_gives_an_empty_table():
    labels, table = nuclei_trust(np.zeros((4, 30, 30)), segment=threshold_segment,
                                 progress=False)
    assert labels.max() == 0 and len(table) == 0
    assert list(table.columns) == ["label", "trust", "area", "samples_present"]


def test_every_sample_is_segmented_at_the_diameter_of_the_mean():
    diameters = []

    def recording_segment(image, diameter):
        diameters.append(diameter)
        return threshold_segment(image, diameter)

    segmented = segment_samples(two_nuclei_samples(n=4, faint_in=1), segment=recording_segment,
                                progress=False)
    assert len(diameters) == 5 and len(set(diameters)) == 1
    assert segmented.counts.tolist() == [2, 1, 1, 1]  # counted on the way, for free


def test_the_default_segmentation_trusts_a_drawn_nucleus_over_one_drawn_once():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    disc = lambda y, x: ((yy - y) ** 2 + (xx - x) ** 2 < 12**2).astype(float)  # noqa: E731
    samples = 100 + 5 * rng.standard_normal((8, 96, 96))
    samples += 1000 * disc(30, 30) + 1000 * disc(66, 66)
    samples[1:] -= 1000 * disc(66, 66)  # the second nucleus only in the first sample
    labels, table = nuclei_trust(samples, progress=False)
    trust = table.set_index("label").trust
    assert trust[labels[30, 30]] == 1.0
    if labels[66, 66]:  # the mean shows it at an eighth of the brightness, if at all
        assert trust[labels[66, 66]] <= 1 / 8


def test_matched_is_one_to_one_at_iou_one_half():
    truth = square((40, 40), 0, 0, 10, label=7) + square((40, 40), 20, 20, 10, label=9)
    virtual = (square((40, 40), 0, 0, 10, label=1)       # the same nucleus: matched
               + square((40, 40), 20, 26, 10, label=2)   # IoU 40/160 with 9: not matched
               + square((40, 40), 0, 30, 5, label=3))    # invented: not matched
    np.testing.assert_array_equal(matched_to_truth(virtual, truth), [1, 0, 0])


def test_mean_inside_is_the_mean_over_each_nucleus_in_label_order():
    labels = square((10, 10), 0, 0, 2, label=5) + square((10, 10), 5, 5, 2, label=2)
    values = np.arange(100, dtype=float).reshape(10, 10)
    np.testing.assert_allclose(mean_inside(values, labels), [(55 + 56 + 65 + 66) / 4,
                                                             (0 + 1 + 10 + 11) / 4])
