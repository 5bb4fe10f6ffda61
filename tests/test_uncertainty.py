import numpy as np
import pytest
from skimage.draw import disk
from skimage.measure import label

from pix2pixhd.uncertainty import (
    ause,
    evaluate_uncertainty,
    fit_std_scale,
    nuclei_count_spread,
    per_nucleus_uncertainty,
    reliability_bins,
    sparsification_curve,
    spearman_uncertainty_error,
    uncertainty_calibration_error,
    uncertainty_maps,
)

# --- maps --------------------------------------------------------------------------------------


def test_uncertainty_maps_on_a_hand_computed_case():
    samples = np.array([[[1.0, 5.0]], [[3.0, 5.0]]])  # (n=2, H=1, W=2)
    maps = uncertainty_maps(samples, eps=1e-12)
    np.testing.assert_allclose(maps["mean"], [[2.0, 5.0]])
    np.testing.assert_allclose(maps["std"], [[np.sqrt(2.0), 0.0]])
    np.testing.assert_allclose(maps["cv"], [[np.sqrt(2.0) / 2, 0.0]])


def test_cv_stays_finite_where_the_mean_is_zero():
    samples = np.array([[[-1.0, 10.0]], [[1.0, 10.0]]])
    cv = uncertainty_maps(samples)["cv"]
    assert np.all(np.isfinite(cv))
    assert cv[0, 0] == pytest.approx(np.sqrt(2) / (0.01 * np.percentile([0, 10], 99)))


# --- does the uncertainty point at the errors? ------------------------------------------------


def test_spearman_is_one_for_a_monotone_relation():
    x = np.random.default_rng(0).uniform(0, 3, size=(300, 300))
    assert spearman_uncertainty_error(x, np.exp(x), max_pixels=10_000) == pytest.approx(1.0)
    assert spearman_uncertainty_error(x, -(x**3)) == pytest.approx(-1.0)


def test_sparsification_of_uncertainty_equal_to_error_is_the_oracle():
    error = np.abs(np.random.default_rng(0).normal(size=(50, 40)))
    curve = sparsification_curve(error, error)
    np.testing.assert_allclose(curve["model"], curve["oracle"])
    assert curve["model"][0] == pytest.approx(1.0)
    assert curve["oracle"][-1] < 0.1
    assert ause(curve) == pytest.approx(0.0, abs=1e-12)


def test_random_uncertainty_gives_a_flat_sparsification_curve():
    rng = np.random.default_rng(0)
    error = rng.exponential(size=100_000)
    curve = sparsification_curve(rng.uniform(size=error.size), error)
    up_to_90 = curve["fractions"] <= 0.9
    np.testing.assert_allclose(curve["model"][up_to_90], 1.0, atol=0.05)
    np.testing.assert_allclose(curve["random"][up_to_90], 1.0, atol=0.05)
    assert ause(curve) > 0.3


def test_sparsification_and_ause_on_a_hand_computed_case():
    error = np.array([4.0, 3.0, 2.0, 1.0])  # mean 2.5
    uncertainty = np.array([1.0, 2.0, 3.0, 4.0])  # exactly the wrong order
    curve = sparsification_curve(uncertainty, error, fractions=[0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(curve["model"], np.array([2.5, 3.0, 3.5, 4.0]) / 2.5)
    np.testing.assert_allclose(curve["oracle"], np.array([2.5, 2.0, 1.5, 1.0]) / 2.5)
    # gaps 0, 0.4, 0.8, 1.2 at steps of 0.25: 0.25 * (0.2 + 0.6 + 1.0)
    assert ause(curve) == pytest.approx(0.45)
    assert curve["ause"] == pytest.approx(0.45)


def test_uce_is_zero_when_squared_errors_match_variances_by_bin():
    variance = np.repeat([1.0, 2.0, 3.0, 4.0], 5)
    squared_error = variance * np.tile([0.0, 2.0, 1.0, 0.5, 1.5], 4)  # mean 1 in every bin
    assert uncertainty_calibration_error(variance, squared_error, n_bins=4) == pytest.approx(0.0)
    assert uncertainty_calibration_error(variance, squared_error, n_bins=1) == pytest.approx(0.0)


def test_uce_on_a_hand_computed_case():
    variance = np.array([4.0, 1.0, 3.0, 2.0])
    squared_error = np.array([5.0, 1.0, 5.0, 1.0])
    # bins by variance: {1, 2} with errors {1, 1}: |1 - 1.5| = 0.5; {3, 4}: |5 - 3.5| = 1.5
    assert uncertainty_calibration_error(variance, squared_error, n_bins=2) == pytest.approx(1.0)


def test_fit_std_scale_recovers_a_known_factor_and_lowers_uce():
    rng = np.random.default_rng(0)
    std = rng.uniform(0.5, 2.0, size=200_000)
    error = rng.normal(0.0, 3.0 * std)
    scale = fit_std_scale(std, error)
    assert scale == pytest.approx(3.0, rel=0.02)
    before = uncertainty_calibration_error(std**2, error**2)
    after = uncertainty_calibration_error((scale * std) ** 2, error**2)
    assert after < 0.1 * before


def confidently_wrong(seed=0, factor=2.0, n=200_000, share=0.01):
    """std and errors with a known variance (factor * std)^2, except a `share` of pixels with a
    near-zero std and an error of 100: what pixels above a model's ceiling look like."""
    rng = np.random.default_rng(seed)
    std = rng.uniform(0.5, 2.0, size=n)
    error = rng.normal(0.0, factor * std)
    wrong = rng.random(n) < share
    std[wrong], error[wrong] = 0.01, 100.0
    return std, error


def test_fit_std_scale_is_not_set_by_a_few_confidently_wrong_pixels():
    std, error = confidently_wrong(factor=2.0)
    scale = fit_std_scale(std, error)
    assert scale == pytest.approx(2.0, rel=0.05)
    # the mean-square (Gaussian maximum-likelihood) scale is pulled to about 6 by the 1 %
    mean_square = np.sqrt(np.mean(error**2) / np.mean(std**2))
    assert mean_square > 5
    uce = {s: uncertainty_calibration_error((s * std) ** 2, error**2)
           for s in (1.0, scale, mean_square)}
    assert uce[scale] < uce[1.0] and uce[scale] < uce[mean_square]


def test_fit_std_scale_finds_the_lowest_uce():
    std, error = confidently_wrong(seed=1, factor=3.0)
    scale = fit_std_scale(std, error)
    best = uncertainty_calibration_error((scale * std) ** 2, error**2)
    for step in (0.9, 0.97, 1.03, 1.1):
        assert best <= uncertainty_calibration_error((step * scale * std) ** 2, error**2)


def test_reliability_bins_on_a_hand_computed_case():
    bins = reliability_bins(np.array([4.0, 1.0, 3.0, 2.0]), np.array([5.0, 1.0, 5.0, 1.0]),
                            n_bins=2)
    assert bins["pixels"].tolist() == [2, 2]
    np.testing.assert_allclose(bins["mean_variance"], [1.5, 3.5])
    np.testing.assert_allclose(bins["mean_squared_error"], [1.0, 5.0])
    np.testing.assert_allclose(bins["rms_std"], np.sqrt([1.5, 3.5]))
    np.testing.assert_allclose(bins["rms_error"], [1.0, np.sqrt(5.0)])


# --- nuclei ------------------------------------------------------------------------------------


def test_per_nucleus_uncertainty_on_a_hand_computed_case():
    true = np.zeros((6, 8), dtype=np.int32)
    true[0:2, 0:2] = 1  # 4 pixels, predicted as 2 x 3 = IoU 4 / 6
    true[4:6, 4:8] = 7  # 8 pixels, no prediction overlaps
    pred = np.zeros_like(true)
    pred[0:2, 0:3] = 5
    pred[3, 0] = 9  # stray, overlaps no true nucleus
    std = np.zeros(true.shape)
    std[0, 0:2] = 2.0  # nucleus 1: mean std (2 + 2 + 0 + 0) / 4
    std[4:6, 4:8] = 0.5
    table = per_nucleus_uncertainty(std, pred, true)
    assert table["label"].tolist() == [1, 7]
    assert table["area"].tolist() == [4, 8]
    np.testing.assert_allclose(table["mean_std"], [1.0, 0.5])
    np.testing.assert_allclose(table["iou"], [4 / 6, 0.0])
    assert table["matched_label"].tolist() == [5, 0]


def test_per_nucleus_uncertainty_picks_the_best_overlap():
    true = np.zeros((4, 10), dtype=np.int32)
    true[:, 0:6] = 1
    pred = np.zeros_like(true)
    pred[:, 0:1] = 2  # IoU 1/6
    pred[:, 1:6] = 3  # IoU 5/6
    table = per_nucleus_uncertainty(np.ones(true.shape), pred, true)
    assert table["matched_label"].tolist() == [3]
    assert table["iou"].tolist() == pytest.approx([5 / 6])


def blobs(centres, shape=(64, 64), radius=7):
    image = np.zeros(shape)
    for centre in centres:
        image[disk(centre, radius, shape=shape)] = 100.0
    return image


def test_nuclei_count_spread_counts_objects_per_sample():
    samples = np.stack([
        blobs([(15, 15), (45, 45)]),
        blobs([(15, 15), (45, 45), (15, 45)]),
        blobs([(15, 15), (45, 45), (45, 15)]),
    ])
    spread = nuclei_count_spread(samples, segment=lambda image: label(image > 50),
                                 progress=False)
    assert spread["counts"] == [2, 3, 3]
    assert spread["mean"] == pytest.approx(8 / 3)
    assert spread["std"] == pytest.approx(np.std([2, 3, 3], ddof=1))


def test_evaluate_uncertainty_with_nuclei_reports_every_score():
    rng = np.random.default_rng(0)
    always = [(15, 15), (45, 45)]
    samples = np.stack([  # the doubtful nucleus also sits 3 px off, so its IoU is the lowest
        blobs(always + ([(15, 48)] if i % 2 else [])) + rng.normal(0, 2, (64, 64))
        for i in range(8)
    ])
    target = blobs(always + [(15, 45)])
    true_labels = label(target > 50).astype(np.int32)
    scores = evaluate_uncertainty(samples, target, true_labels=true_labels, std_scale=2.0)
    assert scores["nuclei_true"] == 3
    assert scores["nuclei_count_mean"] == pytest.approx(2.5)
    assert scores["nuclei_count_std"] > 0
    assert scores["mae"] == pytest.approx(np.mean(np.abs(samples.mean(0) - target)))
    assert scores["spearman_std_abs_error"] > 0  # the doubtful nucleus is the wrong one
    for key in ("ause", "uce", "uce_unscaled", "mean_std", "nucleus_spearman_std_iou"):
        assert np.isfinite(scores[key]), key
    assert scores["uce"] != scores["uce_unscaled"]


def test_evaluate_uncertainty_takes_counts_of_samples_segmented_already():
    samples = np.stack([blobs([(15, 15)]), blobs([(15, 15), (45, 45)])])
    true_labels = label(blobs([(15, 15)]) > 50).astype(np.int32)
    scores = evaluate_uncertainty(samples, samples[0], true_labels=true_labels,
                                  sample_counts=[4, 6])  # not what segmenting would count
    assert scores["nuclei_count_mean"] == 5.0
    assert scores["nuclei_count_std"] == pytest.approx(np.std([4, 6], ddof=1))
    with pytest.raises(ValueError, match="3 sample counts for 2 samples"):
        evaluate_uncertainty(samples, samples[0], true_labels=true_labels,
                             sample_counts=[1, 2, 3])


def test_informative_uncertainty_scores_better_than_shuffled_uncertainty():
    # errors drawn with the spread the samples show: a calibrated, informative model
    rng = np.random.default_rng(0)
    spread = np.repeat(np.linspace(0.1, 3.0, 64)[:, None], 64, axis=1)
    samples = rng.normal(0.0, spread, size=(32, 64, 64))
    target = rng.normal(0.0, spread)
    informative = evaluate_uncertainty(samples, target)
    shuffled = evaluate_uncertainty(samples[:, rng.permutation(64)], target)
    assert informative["spearman_std_abs_error"] > 0.3
    assert informative["ause"] < shuffled["ause"]
    assert informative["uce"] < shuffled["uce"]
