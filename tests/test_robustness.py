"""robustness.py: the perturbations of a phase image, and the table of scores they give."""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from pix2pixhd.metrics import band_power
from pix2pixhd.predict import predict_with_tta
from pix2pixhd.robustness import PERTURBATIONS, perturb_phase, robustness_table


class Identity:
    """A normaliser that leaves images as they are."""

    def normalise_input(self, image):
        return image

    def denormalise_target(self, image):
        return image


class Pointwise(torch.nn.Module):
    """A stand-in generator: stain = f(phase) pixel by pixel, or with a column ramp added (a
    network whose output depends on the image's orientation)."""

    size_multiple = 1

    def __init__(self, ramp=False):
        super().__init__()
        self.ramp = ramp
        self.unused = torch.nn.Parameter(torch.zeros(1))  # predict_image reads the device here

    def forward(self, x):
        out = x.clone()
        if self.ramp:
            out = out + torch.arange(x.shape[-1], dtype=x.dtype) / x.shape[-1]
        return out


def nuclei_image(seed=0, size=96):
    """(image, labels): bright disks on a noisy background."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.uint16)
    rows, cols = np.mgrid[:size, :size]
    for label, (r, c) in enumerate([(20, 20), (20, 70), (70, 30), (65, 75)], start=1):
        labels[(rows - r) ** 2 + (cols - c) ** 2 < 10 ** 2] = label
    image = (labels > 0) * 100.0 + rng.normal(0, 3, labels.shape)
    return image.astype(np.float32), labels


def test_no_perturbation_returns_a_copy():
    image, _ = nuclei_image()
    out = perturb_phase(image)
    np.testing.assert_array_equal(out, image)
    assert out is not image


def test_blur_is_a_gaussian_filter_and_removes_fine_detail():
    image, _ = nuclei_image()
    blurred = perturb_phase(image, blur_sigma=2.0)
    np.testing.assert_allclose(blurred, ndi.gaussian_filter(image, 2.0, mode="reflect"),
                               atol=1e-4)
    assert band_power(blurred, 0.3, 0.45) < 0.01 * band_power(image, 0.3, 0.45)


def test_offset_and_noise_are_in_units_of_the_images_iqr():
    image, _ = nuclei_image()
    iqr = np.subtract(*np.percentile(image, [75, 25]))
    np.testing.assert_allclose(perturb_phase(image, offset=2.0) - image, 2.0 * iqr, rtol=1e-5)
    noisy = perturb_phase(image, noise=0.5, seed=1) - image
    assert noisy.std() == pytest.approx(0.5 * iqr, rel=0.05)
    np.testing.assert_array_equal(perturb_phase(image, noise=0.5, seed=1),
                                  perturb_phase(image, noise=0.5, seed=1))


def test_a_negative_blur_or_a_3d_image_is_refused():
    image, _ = nuclei_image()
    with pytest.raises(ValueError, match="cannot be negative"):
        perturb_phase(image, blur_sigma=-1)
    with pytest.raises(ValueError, match="2-D"):
        perturb_phase(image[None])


def test_table_scores_each_level_and_a_perfect_model_matches_the_real_stain():
    images = [(*nuclei_image(seed)[:1], *nuclei_image(seed)) for seed in (0, 1)]
    table = robustness_table({"identity": (Pointwise(), Identity())}, images,
                             {"blur_sigma": [0, 3], "noise": [0, 1]})
    assert list(table.perturbation.unique()) == ["blur_sigma", "noise"]
    model = table[table.model == "identity"].set_index(["perturbation", "level"])
    real = table[table.model == "real stain"].f1_iou50
    assert model.loc[("blur_sigma", 0.0), "f1_iou50"] == pytest.approx(real.iloc[0])
    assert model.loc[("blur_sigma", 0.0), "band_power_ratio_high"] == pytest.approx(1.0)
    assert model.loc[("blur_sigma", 3.0), "band_power_ratio_high"] < 0.1
    assert model.loc[("noise", 1.0), "band_power_ratio_high"] > 1.0


def test_table_refuses_an_unknown_perturbation():
    with pytest.raises(ValueError, match="gamma"):
        robustness_table({}, [], {"gamma": [1]})
    assert set(PERTURBATIONS) == {"blur_sigma", "offset", "noise"}


def test_tta_keeps_an_equivariant_model_and_turns_any_model_equivariant():
    image, _ = nuclei_image(size=64)
    image = image[:, :48].copy()  # not square: rotations change the shape
    np.testing.assert_allclose(predict_with_tta(Pointwise(), image, Identity())[0], image,
                               atol=1e-4)
    ramp = Pointwise(ramp=True)
    once = predict_with_tta(ramp, image, Identity())[0]
    turned = predict_with_tta(ramp, np.rot90(image).copy(), Identity())[0]
    np.testing.assert_allclose(turned, np.rot90(once), atol=1e-4)
