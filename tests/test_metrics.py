import math
import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy import stats
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import f1_score, jaccard_score

from pix2pixhd.metrics import (
    COURSE_INSTANCE_METRICS,
    ERROR_CAUSES,
    IOU_THRESHOLDS,
    PER_THRESHOLD_KEYS,
    SPECTRAL_BANDS,
    auroc,
    band_power_ratio,
    bootstrap_interval,
    error_causes,
    f1_column,
    found_by_brightness,
    hf_power_ratio,
    high_frequency_power,
    instance_metrics,
    iou_matrix,
    log_spectral_distance,
    mae,
    match_instances,
    matched_labels,
    nrmse,
    pearson_r,
    pixel_metrics,
    psnr,
    radial_power_spectrum,
    spectral_metrics,
    ssim,
)


def textured_pair(seed=0, shape=(64, 80)):
    """A smooth target and a noisy, rescaled prediction of it (different ranges on purpose)."""
    rng = np.random.default_rng(seed)
    target = ndi.gaussian_filter(rng.normal(size=shape), 3) * 10 + 5
    pred = 1.3 * target + rng.normal(scale=0.5, size=shape) - 2
    return pred, target


# --- pixel metrics -------------------------------------------------------------------------------


def test_psnr_of_a_constant_offset_is_computed_by_hand():
    target = np.tile(np.linspace(0.0, 1.0, 32), (32, 1))  # range exactly 1
    assert psnr(target + 0.1, target) == pytest.approx(20.0)  # 10 log10(1 / 0.01)
    assert psnr(target + 0.1, target, data_range=10.0) == pytest.approx(40.0)


def test_psnr_matches_skimage_with_the_targets_range():
    pred, target = textured_pair()
    expected = peak_signal_noise_ratio(target, pred, data_range=target.max() - target.min())
    assert psnr(pred, target) == pytest.approx(expected, rel=1e-12)


def test_identical_images_give_infinite_psnr_and_ssim_one():
    _, target = textured_pair()
    assert psnr(target, target) == float("inf")
    assert ssim(target, target) == pytest.approx(1.0, abs=1e-12)
    assert nrmse(target, target) == 0.0


def test_ssim_matches_skimage_gaussian_wang_settings():
    pred, target = textured_pair()
    expected = structural_similarity(
        target, pred, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=target.max() - target.min(),
    )
    assert ssim(pred, target) == pytest.approx(expected, abs=1e-10)


def test_ssim_takes_its_data_range_from_the_target_not_the_prediction_or_dtype():
    pred, target = textured_pair()
    from_target = ssim(pred, target, data_range=target.max() - target.min())
    assert ssim(pred, target) == from_target
    assert ssim(pred.astype(np.float32), target.astype(np.float32)) == pytest.approx(
        from_target, abs=1e-5
    )
    assert ssim(pred, target, data_range=pred.max() - pred.min()) != pytest.approx(from_target)


def test_pearson_matches_scipy_and_is_nan_for_a_constant_image_without_warnings():
    pred, target = textured_pair()
    assert pearson_r(pred, target) == pytest.approx(stats.pearsonr(pred.ravel(), target.ravel())[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(pearson_r(np.ones_like(target), target))


def test_mae_is_the_mean_absolute_difference():
    target = np.zeros((4, 4))
    pred = np.zeros((4, 4))
    pred[0, :] = 2.0
    pred[1, :] = -1.0
    assert mae(pred, target) == pytest.approx((4 * 2 + 4 * 1) / 16)


def test_nrmse_matches_skimage_min_max_and_agrees_with_psnr():
    pred, target = textured_pair()
    expected = normalized_root_mse(target, pred, normalization="min-max")
    assert nrmse(pred, target) == pytest.approx(expected, rel=1e-12)
    assert psnr(pred, target) == pytest.approx(-20 * np.log10(nrmse(pred, target)))


def test_pixel_metrics_returns_the_five_metrics_as_floats():
    pred, target = textured_pair()
    metrics = pixel_metrics(pred, target)
    assert set(metrics) == {"psnr", "ssim", "pearson", "mae", "nrmse"}
    assert all(type(value) is float for value in metrics.values())
    assert metrics["ssim"] == ssim(pred, target)


def test_pixel_metrics_refuse_mismatched_shapes_and_constant_targets():
    with pytest.raises(ValueError, match=r"\(8, 8\).*\(8, 9\)"):
        psnr(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(ValueError, match="data_range"):
        psnr(np.zeros((16, 16)), np.ones((16, 16)))


# --- sharpness -----------------------------------------------------------------------------------


def test_white_noise_has_a_flat_spectrum_at_its_variance():
    rng = np.random.default_rng(1)
    spectra = [radial_power_spectrum(rng.normal(scale=2.0, size=(128, 128))) for _ in range(16)]
    frequencies = spectra[0][0]
    power = np.mean([p for _, p in spectra], axis=0)
    band = frequencies >= 0.1  # lower bins hold too few coefficients to average out
    np.testing.assert_allclose(power[band], 4.0, rtol=0.15)  # flat at the variance 2^2
    assert np.mean(power[band]) == pytest.approx(4.0, rel=0.03)
    assert frequencies[0] == 0 and frequencies[-1] == 0.5 and frequencies.size == 65


def test_white_noise_high_frequency_fraction_is_the_area_outside_the_cutoff():
    noise = np.random.default_rng(2).normal(size=(256, 256))
    assert high_frequency_power(noise, 0.25) == pytest.approx(1 - np.pi * 0.25**2, abs=0.02)


def test_hf_power_ratio_falls_monotonically_with_blur():
    _, target = textured_pair(shape=(128, 128))
    target = target + np.random.default_rng(3).normal(scale=0.3, size=target.shape)
    ratios = [hf_power_ratio(ndi.gaussian_filter(target, s), target) for s in (0.5, 1, 1.5, 2, 3)]
    assert hf_power_ratio(target, target) == pytest.approx(1.0)
    assert all(a > b for a, b in zip(ratios, ratios[1:], strict=False))
    assert ratios[0] < 1


def test_hf_power_ratio_ignores_brightness_and_contrast():
    pred, target = textured_pair(shape=(96, 96))
    assert hf_power_ratio(3 * pred + 7, target) == pytest.approx(hf_power_ratio(pred, target))


def sinusoid(frequency, shape=(128, 128), amplitude=1.0):
    """A plane wave along x of `frequency` cycles/pixel."""
    x = np.arange(shape[1])[None, :]
    return np.broadcast_to(amplitude * np.sin(2 * np.pi * frequency * x), shape).copy()


@pytest.mark.parametrize(("frequency", "band"), [(0.1, "low"), (0.22, "mid"), (0.38, "high")])
def test_a_sinusoid_puts_its_power_in_its_own_band(frequency, band):
    """Against white noise of small variance, a wave adds power only in the band holding it."""
    rng = np.random.default_rng(4)
    # the Hann window spreads a line over about 2 bins (0.016 cycles/pixel at 128 px); its far
    # leakage shows next to noise of variance 1e-6 but stays well under a variance of 1e-4
    reference = rng.normal(scale=1e-2, size=(128, 128))
    wave = sinusoid(frequency) + reference
    ratios = {name: band_power_ratio(wave, reference, name) for name in SPECTRAL_BANDS}
    assert ratios[band] > 1e3
    for other in set(SPECTRAL_BANDS) - {band}:
        assert ratios[other] == pytest.approx(1.0, rel=0.1)


def test_band_power_ratio_of_scaled_image_is_the_square_of_the_scale():
    """Power is in the stain's units: twice the amplitude is four times the power, any band."""
    _, target = textured_pair(shape=(96, 96))
    for band in SPECTRAL_BANDS:
        assert band_power_ratio(2 * target + 5, target, band) == pytest.approx(4.0)


def test_white_noise_against_white_noise_has_band_ratios_of_the_variance_ratio():
    rng = np.random.default_rng(5)
    loud, quiet = rng.normal(scale=3.0, size=(256, 256)), rng.normal(scale=1.0, size=(256, 256))
    for band in SPECTRAL_BANDS:
        assert band_power_ratio(loud, quiet, band) == pytest.approx(9.0, rel=0.1)


def test_log_spectral_distance_is_zero_for_equal_spectra_and_one_for_a_tenfold_power():
    rng = np.random.default_rng(6)
    image = rng.normal(size=(128, 128))
    assert log_spectral_distance(image, image) == 0
    # sqrt(10) times the amplitude is 10 times the power at every frequency: log10 = 1
    assert log_spectral_distance(np.sqrt(10) * image, image) == pytest.approx(1.0)
    assert log_spectral_distance(image, np.sqrt(10) * image) == pytest.approx(1.0)


def test_log_spectral_distance_grows_with_blur():
    _, target = textured_pair(shape=(128, 128))
    target = target + np.random.default_rng(7).normal(scale=0.3, size=target.shape)
    distances = [log_spectral_distance(ndi.gaussian_filter(target, s), target) for s in (0.5, 1, 2)]
    assert all(a < b for a, b in zip(distances, distances[1:], strict=False))


def test_spectral_metrics_returns_the_summary_keys():
    pred, target = textured_pair(shape=(64, 64))
    assert set(spectral_metrics(pred, target)) == {
        "band_power_ratio_low", "band_power_ratio_mid", "band_power_ratio_high",
        "log_spectral_distance"}


# --- instance matching ---------------------------------------------------------------------------


def squares(shape, boxes):
    """A label image with rectangle (label, row0, row1, col0, col1) objects, later ones on top."""
    labels = np.zeros(shape, dtype=np.int32)
    for label, r0, r1, c0, c1 in boxes:
        labels[r0:r1, c0:c1] = label
    return labels


def random_labels(rng, shape=(40, 40), n=8):
    """Overlapping random rectangles with non-consecutive ids."""
    boxes = []
    for i in range(n):
        r, c = rng.integers(0, shape[0] - 5), rng.integers(0, shape[1] - 5)
        boxes.append((3 * i + 7, r, r + rng.integers(3, 15), c, c + rng.integers(3, 15)))
    return squares(shape, boxes)


def test_identical_label_images_score_one_everywhere():
    labels = random_labels(np.random.default_rng(0))
    result = match_instances(labels, labels)
    n = len(np.unique(labels)) - 1
    assert result["f1"] == [1.0] * len(IOU_THRESHOLDS)
    assert result["mean_matched_iou"] == [1.0] * len(IOU_THRESHOLDS)
    assert result["tp"] == [n] * len(IOU_THRESHOLDS)
    assert (result["f1_mean"], result["n_true"], result["n_pred"]) == (1.0, n, n)
    assert (result["splits"], result["merges"]) == (0, 0)


def test_shifted_square_has_iou_one_third_matched_at_0_3_not_at_0_5():
    gt = squares((20, 30), [(1, 5, 15, 0, 10)])
    pred = squares((20, 30), [(1, 5, 15, 5, 15)])  # 5 shared columns: 50 / 150
    result = match_instances(gt, pred, thresholds=[0.3, 0.5])
    assert result["tp"] == [1, 0]
    assert result["fp"] == [0, 1] and result["fn"] == [0, 1]
    assert result["mean_matched_iou"][0] == pytest.approx(1 / 3)
    assert np.isnan(result["mean_matched_iou"][1])
    assert result["f1"] == [1.0, 0.0]


def test_empty_prediction_scores_zero_without_warnings():
    gt = squares((20, 20), [(1, 0, 5, 0, 5), (2, 10, 15, 10, 15)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = match_instances(gt, np.zeros_like(gt))
        row = instance_metrics(gt, np.zeros_like(gt))
    assert result["recall"] == [0.0] * 10 and result["f1"] == [0.0] * 10
    assert result["precision"] == [0.0] * 10 and result["fn"] == [2] * 10
    assert (row["n_true"], row["n_pred"], row["f1_mean"]) == (2, 0, 0.0)


def test_one_object_cut_in_half_is_one_split():
    gt = squares((20, 30), [(1, 0, 10, 0, 20)])
    pred = squares((20, 30), [(4, 0, 10, 0, 10), (9, 0, 10, 10, 20)])
    result = match_instances(gt, pred)
    assert (result["splits"], result["merges"]) == (1, 0)
    assert result["tp"][0] == 1  # each half has IoU exactly 0.5: one of them matches at 0.5


def test_two_objects_fused_are_one_merge():
    gt = squares((20, 30), [(1, 0, 10, 0, 10), (2, 0, 10, 10, 20)])
    pred = squares((20, 30), [(5, 0, 10, 0, 20)])
    result = match_instances(gt, pred)
    assert (result["splits"], result["merges"]) == (0, 1)


def test_label_values_and_their_order_do_not_change_the_result():
    rng = np.random.default_rng(4)
    gt, pred = random_labels(rng), random_labels(rng)
    thresholds = [0.1, 0.2, 0.3, 0.5, 0.7]
    expected = match_instances(gt, pred, thresholds)

    def permuted(labels):
        ids = np.unique(labels)[1:]
        lookup = np.zeros(labels.max() + 1, dtype=np.int64)
        lookup[ids] = rng.permutation(ids.size) * 11 + 1000
        return lookup[labels]

    got = match_instances(permuted(gt), permuted(pred), thresholds)
    huge_ids = match_instances(gt.astype(np.int64) * 10**9, pred, thresholds)  # beyond bincount
    for key in expected:
        np.testing.assert_equal(got[key], expected[key])
        np.testing.assert_equal(huge_ids[key], expected[key])


def greedy_true_positives(gt, pred, threshold):
    """Best-IoU-first matching, the shortcut the optimal matching must beat."""
    gt_ids, pred_ids, iou = iou_matrix(gt, pred)
    iou = iou.toarray()
    used_g, used_p, tp = set(), set(), 0
    for flat in np.argsort(-iou, axis=None):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] >= threshold and i not in used_g and j not in used_p:
            used_g.add(i)
            used_p.add(j)
            tp += 1
    return tp


def test_low_threshold_matching_is_optimal_where_greedy_is_not():
    # gt A = cols 0-9, gt B = cols 10-19; pred X = cols 3-12, pred Y = cols 0-2.
    # IoU(A, X) = 7/13, IoU(A, Y) = 3/10, IoU(B, X) = 3/17. Greedy takes A-X first and is stuck
    # with one pair; the optimum pairs A-Y and B-X.
    gt = squares((10, 25), [(1, 0, 10, 0, 10), (2, 0, 10, 10, 20)])
    pred = squares((10, 25), [(1, 0, 10, 3, 13), (2, 0, 10, 0, 3)])
    assert greedy_true_positives(gt, pred, 0.15) == 1
    result = match_instances(gt, pred, thresholds=[0.15, 0.2, 0.5])
    assert result["tp"] == [2, 1, 1]
    assert result["mean_matched_iou"][0] == pytest.approx((3 / 10 + 3 / 17) / 2)
    assert result["mean_matched_iou"][1] == pytest.approx(7 / 13)  # the better of the two


@pytest.mark.parametrize("seed", range(5))
def test_sparse_iou_matrix_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    gt, pred = random_labels(rng), random_labels(rng)
    gt_ids, pred_ids, iou = iou_matrix(gt, pred)
    np.testing.assert_array_equal(gt_ids, np.unique(gt)[1:])
    np.testing.assert_array_equal(pred_ids, np.unique(pred)[1:])
    dense = np.zeros((gt_ids.size, pred_ids.size))
    for i, g in enumerate(gt_ids):
        for j, p in enumerate(pred_ids):
            dense[i, j] = np.sum((gt == g) & (pred == p)) / np.sum((gt == g) | (pred == p))
    np.testing.assert_allclose(iou.toarray(), dense, rtol=1e-12)


def test_matching_refuses_float_masks_and_mismatched_shapes():
    with pytest.raises(ValueError, match="integer label image"):
        match_instances(np.zeros((4, 4)), np.zeros((4, 4), dtype=int))
    with pytest.raises(ValueError, match="shape"):
        match_instances(np.zeros((4, 4), int), np.zeros((4, 5), int))


def test_instance_metrics_row_matches_match_instances_and_error_causes():
    rng = np.random.default_rng(5)
    gt, pred = random_labels(rng), random_labels(rng)
    full, row = match_instances(gt, pred), instance_metrics(gt, pred)
    assert row["f1_iou50"] == full["f1"][0] and row["recall_iou50"] == full["recall"][0]
    assert row["f1_mean"] == full["f1_mean"] and row["merges"] == full["merges"]
    assert set(PER_THRESHOLD_KEYS) <= set(full)
    assert [row[f1_column(t)] for t in full["thresholds"]] == full["f1"]
    assert row["map_iou75"] == match_instances(gt, pred, [0.75])["average_precision"][0]
    causes = error_causes(gt, pred)
    assert all(row[cause] == causes[cause].size for cause in ERROR_CAUSES)


# --- the course's first-part metrics -------------------------------------------------------------


def coco_reference(gt, pred, threshold):
    """COCO's per-image AP and recall written out step by step, for equally confident objects.

    Dense IoU from pixels; each detection, in order, takes the unmatched true object of highest
    IoU >= threshold; cumulative precision and recall; precision made non-increasing from the
    right; read at recall levels 0, 0.01, ..., 1 (the first point reaching each level). Ties in
    confidence are ordered with the unmatched detections first (the order under which COCO's
    value does not depend on the input order, see metrics._average_precision).
    """
    gt_ids, pred_ids = np.unique(gt)[1:], np.unique(pred)[1:]
    iou = np.array([[np.sum((gt == g) & (pred == p)) / np.sum((gt == g) | (pred == p))
                     for g in gt_ids] for p in pred_ids]).reshape(len(pred_ids), len(gt_ids))
    taken, hit = set(), []
    for row in iou:
        free = [j for j in np.argsort(-row) if j not in taken and row[j] >= threshold]
        hit.append(bool(free))
        if free:
            taken.add(free[0])
    order = sorted(range(len(hit)), key=lambda k: hit[k])  # misses first, stable
    tp = np.cumsum([hit[k] for k in order])
    fp = np.cumsum([not hit[k] for k in order])
    recall = tp / max(len(gt_ids), 1)
    precision = tp / np.maximum(tp + fp, 1)
    for k in range(len(precision) - 2, -1, -1):
        precision[k] = max(precision[k], precision[k + 1])
    levels = np.linspace(0, 1, 101)
    at = np.searchsorted(recall, levels, side="left")
    read = [precision[i] if i < len(precision) else 0.0 for i in at]
    n_tp = int(sum(hit))
    return {"ap": float(np.mean(read)), "recall": n_tp / max(len(gt_ids), 1), "tp": n_tp,
            "fp": len(pred_ids) - n_tp, "fn": len(gt_ids) - n_tp}


def course_case():
    """7 true nuclei, 9 predicted: 3 exact, 2 shifted (IoU 0.54), 1 grown (IoU 0.77), 1 missed,
    3 invented. At IoU 0.5: TP 6, FP 3, FN 1; at 0.75: TP 4, FP 5, FN 3 (all counts differ)."""
    gt_boxes, pred_boxes = [], []
    for k in range(3):  # exact
        gt_boxes.append((k + 1, 0, 10, 20 * k, 20 * k + 10))
        pred_boxes.append((k + 11, 0, 10, 20 * k, 20 * k + 10))
    for k in range(2):  # shifted by 3 columns: IoU 70 / 130
        gt_boxes.append((k + 4, 20, 30, 20 * k, 20 * k + 10))
        pred_boxes.append((k + 14, 20, 30, 20 * k + 3, 20 * k + 13))
    gt_boxes.append((6, 40, 50, 0, 10))  # grown to 10 x 13: IoU 100 / 130
    pred_boxes.append((16, 40, 50, 0, 13))
    gt_boxes.append((7, 40, 50, 40, 50))  # missed
    for k in range(3):  # invented
        pred_boxes.append((k + 17, 60, 70, 20 * k, 20 * k + 10))
    return squares((80, 80), gt_boxes), squares((80, 80), pred_boxes)


def test_course_case_counts_all_differ():
    gt, pred = course_case()
    counts = [(r["tp"], r["fp"], r["fn"]) for r in (coco_reference(gt, pred, t)
                                                  for t in (0.5, 0.75))]
    assert counts == [(6, 3, 1), (4, 5, 3)]


@pytest.mark.parametrize("case", ["hand-built", "random 0", "random 1", "random 2"])
def test_course_metrics_equal_coco_reference_and_sklearn(case):
    if case == "hand-built":
        gt, pred = course_case()
    else:
        rng = np.random.default_rng(int(case[-1]) + 20)
        gt, pred = random_labels(rng, n=10), random_labels(rng, n=12)
    row = instance_metrics(gt, pred)
    assert set(COURSE_INSTANCE_METRICS) <= set(row)
    at50, at75 = coco_reference(gt, pred, 0.5), coco_reference(gt, pred, 0.75)
    assert row["map_iou50"] == pytest.approx(at50["ap"], abs=1e-12)
    assert row["map_iou75"] == pytest.approx(at75["ap"], abs=1e-12)
    assert row["accuracy_iou50"] == pytest.approx(at50["tp"] / (at50["tp"] + at50["fp"]
                                                                + at50["fn"]))
    mean_recall = np.mean([coco_reference(gt, pred, t)["recall"] for t in IOU_THRESHOLDS])
    assert row["mar"] == pytest.approx(mean_recall, abs=1e-12)
    truth, found = gt.ravel() > 0, pred.ravel() > 0
    assert row["dice"] == pytest.approx(f1_score(truth, found))
    assert row["jaccard"] == pytest.approx(jaccard_score(truth, found))


def test_course_metrics_of_the_hand_built_case_by_hand():
    gt, pred = course_case()
    row = instance_metrics(gt, pred)
    assert row["accuracy_iou50"] == pytest.approx(6 / 10)
    # one point (recall 6/7, precision 6/9): the recall levels 0 ... 0.85 are reached, 86 of 101
    assert row["map_iou50"] == pytest.approx(6 / 9 * 86 / 101)
    assert row["map_iou75"] == pytest.approx(4 / 9 * 58 / 101)  # recall 4/7 = 0.571...
    overlap = 3 * 100 + 2 * 70 + 100  # exact, shifted, grown
    assert row["dice"] == pytest.approx(2 * overlap / (700 + 900 + 30))
    assert row["jaccard"] == pytest.approx(overlap / (700 + 900 + 30 - overlap))


def test_course_metrics_of_an_empty_prediction_are_zero():
    gt, _ = course_case()
    row = instance_metrics(gt, np.zeros_like(gt))
    assert [row[key] for key in COURSE_INSTANCE_METRICS] == [0.0] * 6


# --- errors by cause -----------------------------------------------------------------------------


def error_case():
    """Hand-built nuclei, one per 30 x 30 cell, with each cause a different number of times:
    missed 5, invented 3 (one grazing a true nucleus), merges 1, splits 2, too large 4 (two
    matched at IoU 0.625, two unmatched at IoU 0.25), plus 2 exact, and 1 shifted (IoU 0.43)
    and 1 too small (IoU 0.16) that are in no cause."""
    gt, pred = np.zeros((150, 180), np.int32), np.zeros((150, 180), np.int32)
    cells = iter((30 * (k // 6), 30 * (k % 6)) for k in range(30))
    ids = iter(range(1, 200))

    def put(labels, r, c, height, width):
        labels[r:r + height, c:c + width] = next(ids)

    for _ in range(2):  # exact
        r, c = next(cells)
        put(gt, r, c, 10, 10)
        put(pred, r, c, 10, 10)
    for _ in range(5):  # missed
        put(gt, *next(cells), 10, 10)
    for _ in range(2):  # invented
        put(pred, *next(cells), 10, 10)
    r, c = next(cells)  # invented, grazing a true nucleus that is matched by another
    put(gt, r, c, 10, 12)
    put(pred, r, c, 10, 10)
    put(pred, r, c + 10, 10, 10)
    r, c = next(cells)  # merge: two true nuclei under one
    put(gt, r, c, 10, 10)
    put(gt, r, c + 10, 10, 10)
    put(pred, r, c, 10, 20)
    for _ in range(2):  # split: one true nucleus in two halves
        r, c = next(cells)
        put(gt, r, c, 10, 20)
        put(pred, r, c, 10, 10)
        put(pred, r, c + 10, 10, 10)
    for _ in range(2):  # too large, matched: 10 x 16 around 10 x 10
        r, c = next(cells)
        put(gt, r, c, 10, 10)
        put(pred, r, c, 10, 16)
    for _ in range(2):  # too large, unmatched: 20 x 20 around 10 x 10
        r, c = next(cells)
        put(gt, r + 5, c + 5, 10, 10)
        put(pred, r, c, 20, 20)
    r, c = next(cells)  # shifted by 4 columns: IoU 60 / 140
    put(gt, r, c, 10, 10)
    put(pred, r, c + 4, 10, 10)
    r, c = next(cells)  # too small: a 4 x 4 prediction inside a 10 x 10 nucleus
    put(gt, r, c, 10, 10)
    put(pred, r + 3, c + 3, 4, 4)
    return gt, pred


def test_error_causes_counts_each_cause_of_a_hand_built_case():
    gt, pred = error_case()
    causes = error_causes(gt, pred)
    counts = {cause: causes[cause].size for cause in ERROR_CAUSES}
    assert counts == {"missed": 5, "invented": 3, "merges": 1, "splits": 2, "too_large": 4}
    # exact 2, grazed 1, one of the merged (IoU 0.5) 1, one half of each split 2, too large 2
    assert causes["matched_true"].size == causes["matched_pred"].size == 8
    row = instance_metrics(gt, pred)
    assert {cause: row[cause] for cause in ERROR_CAUSES} == counts
    full = match_instances(gt, pred)
    assert (full["merges"], full["splits"]) == (1, 2)


def test_error_causes_name_the_right_nuclei():
    gt = squares((30, 60), [(3, 0, 10, 0, 10), (8, 0, 10, 20, 30)])
    pred = squares((30, 60), [(5, 0, 10, 0, 10), (6, 20, 30, 40, 50), (7, 0, 10, 28, 38)])
    causes = error_causes(gt, pred)  # 8 is grazed by 7 (2 of 100 pixels): missed, and 7 invented
    assert causes["matched_true"].tolist() == [3] and causes["matched_pred"].tolist() == [5]
    assert causes["missed"].tolist() == [8] and causes["invented"].tolist() == [6, 7]


def test_error_causes_rules_follow_their_parameters():
    gt = squares((20, 40), [(1, 0, 10, 0, 10)])
    pred = squares((20, 40), [(1, 0, 10, 0, 13)])  # 1.3 times the area, IoU 0.77
    assert error_causes(gt, pred)["too_large"].size == 0
    assert error_causes(gt, pred, size_ratio=1.25)["too_large"].tolist() == [1]
    assert error_causes(gt, pred, iou_threshold=0.8)["missed"].size == 0  # overlaps: not missed
    with pytest.raises(ValueError, match="size_ratio"):
        error_causes(gt, pred, size_ratio=1.0)


# --- recall by brightness ------------------------------------------------------------------------


def test_found_by_brightness_counts_a_hand_built_case():
    # four true nuclei: 3 and 7 bright (means 5,000 and 3,000), 4 and 9 dim (means 800 and 2,000)
    gt = squares((40, 80), [(3, 0, 10, 0, 10), (7, 0, 10, 20, 30), (4, 20, 30, 0, 10),
                            (9, 20, 30, 40, 50)])
    stain = np.full(gt.shape, 100.0)
    for label, mean in [(3, 5000.0), (7, 3000.0), (4, 800.0), (9, 2000.0)]:
        stain[gt == label] = mean
    stain[0, 0] += 600.0  # means are over the nucleus, not its first pixel: 3 stays at 5,006
    # found: 3 exactly and 4 shifted by 2 columns (IoU 80 / 120); 7 drawn 3 times too large
    # (IoU 1/3), 9 not drawn at all
    pred = squares((40, 80), [(1, 0, 10, 0, 10), (2, 0, 30, 20, 30), (5, 20, 30, 2, 12)])
    counts = found_by_brightness(gt, pred, stain, threshold=2500.0)
    assert counts == {"bright_nuclei": 2, "bright_found": 1, "other_nuclei": 2, "other_found": 1}
    # the threshold is strict: a nucleus whose mean equals it is not bright
    assert found_by_brightness(gt, pred, stain, threshold=3000.0)["bright_nuclei"] == 1
    assert found_by_brightness(gt, gt, stain, threshold=0.0) == {
        "bright_nuclei": 4, "bright_found": 4, "other_nuclei": 0, "other_found": 0}


def recall(counts):
    return counts[..., 1] / counts[..., 0]


def delta_method_half_width(nuclei, found, z=1.96):
    """z times the standard error of sum(found) / sum(nuclei) over images (the delta method):
    an independent reference for the bootstrap."""
    ratio = found.sum() / nuclei.sum()
    return z * np.sqrt(np.sum((found - ratio * nuclei) ** 2)) / nuclei.sum()


def test_bootstrap_interval_of_a_pooled_recall_matches_the_delta_method():
    # 300 images holding 1 to 5 nuclei each, 70 % found: a ratio of sums whose factors are not 1
    rng = np.random.default_rng(1)
    nuclei = rng.integers(1, 6, 300).astype(float)
    found = rng.binomial(nuclei.astype(int), 0.7).astype(float)
    low, high = bootstrap_interval(np.stack([nuclei, found], axis=1), recall, n_resamples=4000)
    point = found.sum() / nuclei.sum()
    half = delta_method_half_width(nuclei, found)
    assert low < point < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert (low + high) / 2 == pytest.approx(point, abs=0.1 * half)


def test_bootstrap_interval_of_one_nucleus_per_image_is_the_binomial_one():
    found = np.zeros(400)
    found[:300] = 1
    low, high = bootstrap_interval(np.stack([np.ones(400), found], axis=1), recall,
                                   n_resamples=4000)
    wald = 1.96 * math.sqrt(0.75 * 0.25 / 400)  # 0.042
    assert low == pytest.approx(0.75 - wald, abs=0.006)
    assert high == pytest.approx(0.75 + wald, abs=0.006)


def test_bootstrap_interval_narrows_with_the_level_and_repeats_with_the_seed():
    counts = np.array([[3, 1], [2, 2], [4, 1], [1, 1], [5, 4], [2, 0]], float)
    wide, narrow = bootstrap_interval(counts, recall), bootstrap_interval(counts, recall,
                                                                          level=0.5)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    assert bootstrap_interval(counts, recall) == wide
    assert bootstrap_interval(counts, recall, seed=1) != wide


def test_bootstrap_interval_where_nothing_varies_or_nothing_is_defined():
    everything_found = np.array([[3, 3], [1, 1], [4, 4]], float)
    assert bootstrap_interval(everything_found, recall) == (1.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_interval(np.zeros((3, 2)), recall))
    assert all(math.isnan(v) for v in bootstrap_interval(np.zeros((0, 2)), recall))
    # images without any nucleus of the kind are left out of the resamples where they alone
    # are drawn, not counted as a recall of 0
    low, high = bootstrap_interval(np.array([[0, 0], [0, 0], [2, 1]], float), recall)
    assert low == high == 0.5
    with pytest.raises(ValueError, match="n_images, k"):
        bootstrap_interval(np.ones(3), recall)


def test_matched_labels_are_the_true_positives_of_match_instances():
    gt = np.zeros((40, 40), np.int32)
    gt[0:10, 0:10], gt[20:30, 20:30], gt[30:40, 0:10] = 4, 8, 6
    pred = np.zeros((40, 40), np.int32)
    pred[0:10, 1:10] = 3     # IoU 0.9 with 4
    pred[20:30, 27:37] = 5   # IoU 30/170 with 8: too low
    pred[0:5, 30:35] = 2     # over background
    gt_ids, pred_ids = matched_labels(gt, pred, 0.5)
    assert gt_ids.tolist() == [4] and pred_ids.tolist() == [3]
    assert match_instances(gt, pred, [0.5])["tp"] == [1]
    with pytest.raises(ValueError, match="outside"):
        matched_labels(gt, pred, 0.0)


def test_auroc_matches_scikit_learn_with_ties_and_known_cases():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    positive = rng.random(200) < 0.3
    score = np.round(rng.normal(size=200) + positive, 1)  # rounded: many ties
    assert auroc(score, positive) == pytest.approx(roc_auc_score(positive, score))
    assert auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert auroc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    assert auroc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5
    assert np.isnan(auroc([1, 2], [1, 1]))
    with pytest.raises(ValueError, match="differ in length"):
        auroc([1, 2, 3], [0, 1])
