import json
import logging
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from pix2pixhd import metrics
from pix2pixhd.evaluate import (
    SUMMARY_KEYS,
    compare_models,
    evaluate_folder,
    evaluate_predictions,
    f1_per_threshold,
    find_predictions,
    radial_spectra,
    summarise,
    write_evaluation,
)
from pix2pixhd.files import write_json
from pix2pixhd.layout import DataError, read_image, read_mask, write_image, write_mask
from pix2pixhd.segmentation import segment_nuclei

SIZE = 64
BACKGROUND = 0.1
CENTRES = [(16, 16), (16, 46), (46, 20), (44, 48)]
FOVS = ["fov_0000", "fov_0001", "fov_0002"]


def disks(rng: np.random.Generator) -> np.ndarray:
    """Four separate nuclei of radius 6-8 px as labels 1..4 on a 64 x 64 field."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    labels = np.zeros((SIZE, SIZE), np.int32)
    for label, (y, x) in enumerate(CENTRES, start=1):
        centre = np.array([y, x]) + rng.integers(-2, 3, size=2)
        radius = rng.uniform(6, 8)
        labels[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2] = label
    return labels


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """A hand-made test split: nuclei stains (bright disks + noise), phase, masks = the disks."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for fov in FOVS:
        labels = disks(rng)
        stain = np.where(labels > 0, 1.0, BACKGROUND) + rng.normal(0, 0.03, labels.shape)
        write_image(root / "test" / "nuclei" / f"{fov}.tif", stain)
        write_image(root / "test" / "phase" / f"{fov}.tif", rng.normal(size=labels.shape))
        write_mask(root / "test" / "nuclei_masks" / f"{fov}.tif", labels)
    return root / "test"


def stain(split, fov):
    return read_image(split / "nuclei" / f"{fov}.tif")


def write_predictions(folder, split, transform, fovs=FOVS):
    for fov in fovs:
        write_image(folder / f"{fov}.tif", transform(stain(split, fov)))
    return folder


def evaluate(pred, split, **kwargs):
    return evaluate_predictions(pred, split, progress=False, **kwargs).set_index("fov")


def blurred(image):
    return ndi.gaussian_filter(image, 2.0)


# --- finding the predictions ---------------------------------------------------------------------


def test_predictions_are_found_in_the_channel_folder_and_at_the_top_level(split, tmp_path):
    nested = write_predictions(tmp_path / "nested" / "nuclei", split, lambda s: s)
    flat = write_predictions(tmp_path / "flat", split, lambda s: s)
    assert find_predictions(tmp_path / "nested") == {f: nested / f"{f}.tif" for f in FOVS}
    assert find_predictions(tmp_path / "flat") == {f: flat / f"{f}.tif" for f in FOVS}


def test_predictions_as_the_2024_course_stored_them_are_found_in_subfolders(split, tmp_path):
    """.tiff and .TIF files in subfolders of the prediction folder, as VisCy's writer left them."""
    folder = tmp_path / "viscy"
    for index, fov in enumerate(FOVS):
        suffix = (".tiff", ".TIF", ".tif")[index]
        write_image(folder / "run" / f"plate_{index}" / f"{fov}{suffix}", stain(split, fov))
    (folder / "run" / "notes.txt").write_text("not an image")
    found = find_predictions(folder)
    assert sorted(found) == FOVS and found[FOVS[0]].name == f"{FOVS[0]}.tiff"
    assert list(evaluate(folder, split).index) == FOVS


def test_two_files_of_one_field_of_view_are_an_error_naming_both(split, tmp_path):
    write_image(tmp_path / "a" / f"{FOVS[0]}.tif", stain(split, FOVS[0]))
    write_image(tmp_path / "b" / f"{FOVS[0]}.tiff", stain(split, FOVS[0]))
    with pytest.raises(DataError, match=rf"a/{FOVS[0]}\.tif and .*b/{FOVS[0]}\.tiff"):
        find_predictions(tmp_path)


def test_names_are_mapped_by_a_pattern(split, tmp_path, caplog):
    for fov in FOVS:
        write_image(tmp_path / f"pred_{fov}_nuclei.tif", stain(split, fov))
    write_image(tmp_path / "other.tif", stain(split, FOVS[0]))
    with caplog.at_level(logging.WARNING, logger="pix2pixhd.evaluate"):
        table = evaluate(tmp_path, split, pattern=r"pred_(?P<fov>.*)_nuclei")
    assert list(table.index) == FOVS and (table["psnr"] == math.inf).all()
    assert "do not match the pattern" in caplog.text and "other.tif" in caplog.text
    assert sorted(find_predictions(tmp_path, pattern=r"pred_(.*)_nuclei")) == FOVS


def test_sorted_order_pairs_by_position_with_a_one_line_warning(split, tmp_path, caplog):
    """The 2024 notebook's names (5_0.tiff, ...) pair with the split's FOVs in sorted order."""
    for index, fov in enumerate(FOVS):
        write_image(tmp_path / "preds" / f"{index + 5}_0.tiff", stain(split, fov))
    with caplog.at_level(logging.WARNING, logger="pix2pixhd.evaluate"):
        table = evaluate(tmp_path / "preds", split, match="sorted")
    assert list(table.index) == FOVS and (table["psnr"] == math.inf).all()
    warning, = [r.getMessage() for r in caplog.records if "sorted order" in r.getMessage()]
    assert "5_0.tiff -> fov_0000" in warning and "\n" not in warning
    write_image(tmp_path / "preds" / "9_0.tiff", stain(split, FOVS[0]))
    with pytest.raises(DataError, match="4 predictions and .* 3 fields of view"):
        evaluate(tmp_path / "preds", split, match="sorted")


def test_a_prediction_in_other_units_keeps_only_unit_free_scores(split, tmp_path, caplog):
    """Stains scaled to other units (here counts, 0-1000) get a warning naming the file; PSNR,
    SSIM, MAE and NRMSE stay empty with the reason, Pearson r and F1 are the same as before."""
    same = evaluate(write_predictions(tmp_path / "same", split, blurred), split)
    assert (same["units"] == "stain").all()
    counts = write_predictions(tmp_path / "counts", split, lambda s: 1000 * blurred(s) + 100)
    with caplog.at_level(logging.WARNING, logger="pix2pixhd.evaluate"):
        table = evaluate(counts, split)
    assert table[["psnr", "ssim", "mae", "nrmse"]].isna().all().all()
    assert table["units"].str.contains("unlike the real stain").all()
    np.testing.assert_allclose(table["pearson"], same["pearson"], rtol=1e-5)
    np.testing.assert_array_equal(table["f1_iou50"], same["f1_iou50"])
    assert str(counts / f"{FOVS[0]}.tif") in caplog.text
    summary = summarise(table)
    assert math.isnan(summary["psnr"]) and summary["pearson"] == pytest.approx(
        same["pearson"].mean(), rel=1e-5)


def test_units_json_in_viscy_units_leaves_the_unit_dependent_scores_empty(split, tmp_path):
    pred = write_predictions(tmp_path, split, lambda s: s)
    (tmp_path / "units.json").write_text(json.dumps({"units": "viscy", "reason": "no dataset"}))
    table = evaluate(pred, split)
    assert table["psnr"].isna().all() and (table["pearson"] > 0.99).all()
    assert table["units"].str.contains("units.json of .* says", regex=True).all()


def test_units_json_beside_a_channel_folder_counts_for_it(split, tmp_path):
    pred = write_predictions(tmp_path / "nuclei", split, lambda s: s)
    (tmp_path / "units.json").write_text(json.dumps({"units": "viscy", "reason": "no dataset"}))
    assert evaluate(pred, split)["psnr"].isna().all()


def test_both_layouts_at_once_are_refused(split, tmp_path):
    write_predictions(tmp_path / "nuclei", split, lambda s: s)
    write_predictions(tmp_path, split, lambda s: s)
    with pytest.raises(DataError, match="both"):
        find_predictions(tmp_path)


def test_an_empty_prediction_folder_names_the_expected_layout(tmp_path):
    with pytest.raises(DataError, match="no predictions.*nuclei"):
        find_predictions(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        find_predictions(tmp_path / "absent")


def test_missing_predictions_are_an_error_naming_them(split, tmp_path):
    pred = write_predictions(tmp_path, split, lambda s: s, fovs=FOVS[:2])
    with pytest.raises(DataError, match=FOVS[2]) as error:
        evaluate(pred, split)
    assert FOVS[0] not in str(error.value)
    assert "--allow-missing" in str(error.value)  # the flag a command-line user can pass


def test_allow_missing_evaluates_the_others_with_a_warning(split, tmp_path, caplog):
    pred = write_predictions(tmp_path, split, lambda s: s, fovs=FOVS[:2])
    with caplog.at_level(logging.WARNING, logger="pix2pixhd.evaluate"):
        table = evaluate(pred, split, allow_missing=True)
    assert list(table.index) == FOVS[:2]
    assert FOVS[2] in caplog.text


def test_the_data_root_instead_of_the_split_suggests_the_split(split, tmp_path):
    pred = write_predictions(tmp_path, split, lambda s: s)
    with pytest.raises(DataError, match="did you mean .*test"):
        evaluate(pred, split.parent)


# --- the scores ----------------------------------------------------------------------------------


def test_the_real_stain_as_prediction_scores_like_the_real_stain(split, tmp_path):
    table = evaluate(write_predictions(tmp_path, split, lambda s: s), split)
    assert list(table.index) == FOVS
    assert (table["psnr"] == math.inf).all()
    assert np.allclose(table["ssim"], 1.0)
    assert (table["hf_power_ratio"] == 1.0).all()
    for column in ["f1_iou50", "f1_mean", "n_pred", "f1_iou75", "f1_iou95"]:
        assert (table[column] == table["real_stain_" + column]).all()
    # the segmentation finds the four disks: the real stain's ceiling is reachable here
    assert (table["real_stain_f1_iou50"] == 1.0).all()
    assert (table["n_true"] == len(CENTRES)).all()


def test_psnr_is_computed_against_the_real_stains_range(split, tmp_path):
    table = evaluate(write_predictions(tmp_path, split, blurred), split)
    target = stain(split, FOVS[1]).astype(np.float64)
    pred = blurred(stain(split, FOVS[1])).astype(np.float32).astype(np.float64)
    by_hand = 10 * np.log10(np.ptp(target) ** 2 / np.mean((pred - target) ** 2))
    assert table.loc[FOVS[1], "psnr"] == pytest.approx(by_hand, rel=1e-9)


def test_a_blurred_prediction_is_less_sharp_and_scores_lower(split, tmp_path):
    table = evaluate(write_predictions(tmp_path, split, blurred), split)
    assert (table["hf_power_ratio"] < 1).all()
    assert np.isfinite(table["psnr"]).all()
    assert (table["ssim"] < 0.99).all()


def test_hf_cutoff_reaches_the_sharpness_ratio(split, tmp_path):
    pred = write_predictions(tmp_path, split, blurred)
    table = evaluate(pred, split, hf_cutoff=0.1)
    expected = metrics.hf_power_ratio(read_image(pred / f"{FOVS[0]}.tif"), stain(split, FOVS[0]),
                                      cutoff=0.1)
    assert table.loc[FOVS[0], "hf_power_ratio"] == pytest.approx(expected, rel=1e-12)


def test_a_constant_prediction_finds_no_nuclei_without_warnings(split, tmp_path):
    pred = write_predictions(tmp_path, split, lambda s: np.full_like(s, BACKGROUND))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = evaluate(pred, split)
        summary = summarise(table)
    assert (table["f1_iou50"] == 0).all() and (table["n_pred"] == 0).all()
    assert (table["real_stain_f1_iou50"] == 1.0).all()
    assert summary["f1_mean"] == 0


def test_a_custom_segmentation_is_used_for_prediction_and_real_stain(split, tmp_path):
    def one_object(image):
        return (image > 0.5 * image.max()).astype(np.int32)

    table = evaluate(write_predictions(tmp_path, split, lambda s: s), split, segment=one_object)
    assert (table["n_pred"] == 1).all() and (table["real_stain_n_pred"] == 1).all()


def test_a_rewritten_real_stain_is_segmented_again(tmp_path):
    rng = np.random.default_rng(1)
    labels = disks(rng)
    image = np.where(labels > 0, 1.0, BACKGROUND) + rng.normal(0, 0.03, labels.shape)
    split = tmp_path / "data" / "test"
    write_mask(split / "nuclei_masks" / "a.tif", labels)
    write_image(split / "nuclei" / "a.tif", image)
    write_image(tmp_path / "pred" / "a.tif", image)
    before = evaluate(tmp_path / "pred", split).loc["a", "real_stain_n_pred"]
    write_image(split / "nuclei" / "a.tif", np.where(labels == 1, BACKGROUND, image))
    after = evaluate(tmp_path / "pred", split).loc["a", "real_stain_n_pred"]
    assert (before, after) == (len(CENTRES), len(CENTRES) - 1)


def test_without_masks_instance_columns_are_skipped_with_a_warning(split, tmp_path, caplog):
    data = tmp_path / "data" / "test"
    for fov in FOVS:
        write_image(data / "nuclei" / f"{fov}.tif", stain(split, fov))
    pred = write_predictions(tmp_path / "pred", split, blurred)
    with caplog.at_level(logging.WARNING, logger="pix2pixhd.evaluate"):
        table = evaluate(pred, data)
    assert "masks" in caplog.text
    assert "f1_iou50" not in table and "psnr" in table
    assert math.isnan(summarise(table)["f1_iou50"])


def test_a_prediction_of_another_shape_names_the_file(split, tmp_path):
    pred = write_predictions(tmp_path, split, lambda s: s[:32])
    with pytest.raises(DataError, match=f"{FOVS[0]}.tif has shape"):
        evaluate(pred, split)


# --- tables and files ----------------------------------------------------------------------------


def test_summary_means_every_numeric_column_and_counts_images():
    table = pd.DataFrame({"fov": ["a", "b"], "psnr": [20.0, 30.0], "n_pred": [3, 4],
                          "mean_matched_iou_iou50": [math.nan, 0.8]})
    summary = summarise(table)
    assert summary["psnr"] == 25.0 and summary["n_pred"] == 3.5 and summary["n_images"] == 2
    assert summary["mean_matched_iou_iou50"] == 0.8  # nan (nothing matched) is left out
    assert set(SUMMARY_KEYS) <= set(summary)


def test_summary_json_has_the_contract_keys_and_null_for_non_finite(split, tmp_path):
    pred = write_predictions(tmp_path / "pred", split, lambda s: s)
    summary = evaluate_folder(pred, split, tmp_path / "out", progress=False)

    def refuse(constant):
        raise ValueError(f"summary.json holds {constant}")

    written = json.loads((tmp_path / "out" / "summary.json").read_text(), parse_constant=refuse)
    assert set(SUMMARY_KEYS) | {"n_images"} <= set(written)
    assert list(written) == sorted(written)
    assert summary["psnr"] == math.inf and written["psnr"] is None
    assert written["n_images"] == len(FOVS)
    assert all(v is None or math.isfinite(v) for v in written.values())
    assert written["f1_iou50"] == pytest.approx(summary["f1_iou50"])


def test_csvs_hold_one_row_per_image_and_one_summary_row(split, tmp_path):
    table = evaluate_predictions(write_predictions(tmp_path / "pred", split, blurred), split,
                                 progress=False)
    summary = write_evaluation(table, tmp_path / "out")
    per_image = pd.read_csv(tmp_path / "out" / "per_image.csv")
    summary_row = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert list(per_image["fov"]) == FOVS and len(summary_row) == 1
    assert np.allclose(per_image["psnr"], table["psnr"])
    assert summary_row.loc[0, "ssim"] == pytest.approx(summary["ssim"])


def test_course_metrics_and_error_causes_are_columns_and_in_the_summary(split, tmp_path):
    table = evaluate_predictions(write_predictions(tmp_path / "pred", split, blurred), split,
                                 progress=False)
    summary = write_evaluation(table, tmp_path / "out")
    per_image = pd.read_csv(tmp_path / "out" / "per_image.csv")
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    columns = [*metrics.COURSE_INSTANCE_METRICS, *metrics.ERROR_CAUSES]
    assert set(columns) <= set(per_image) and set(columns) <= set(written)
    truth = read_mask(split / "nuclei_masks" / f"{FOVS[0]}.tif")
    expected = metrics.instance_metrics(truth, segment_nuclei(blurred(stain(split, FOVS[0]))))
    for column in columns:
        assert per_image.loc[0, column] == pytest.approx(expected[column])
        assert summary[column] == pytest.approx(per_image[column].mean())


def test_compare_models_adds_the_real_stain_as_reference(split, tmp_path):
    sharp = summarise(evaluate(write_predictions(tmp_path / "a", split, lambda s: s), split))
    blurry = summarise(evaluate(write_predictions(tmp_path / "b", split, blurred), split))
    spectral = ["hf_power_ratio", "band_power_ratio_low", "band_power_ratio_mid",
                "band_power_ratio_high", "log_spectral_distance", "f1_iou50", "psnr"]
    table = compare_models({"Pix2PixHD GAN": sharp, "regression (L1)": blurry}, columns=spectral)
    assert list(table.index) == ["Pix2PixHD GAN", "regression (L1)", "real stain"]
    assert table.loc["real stain", "hf_power_ratio"] == 1.0
    # the real stain compared with itself: ratios of 1, no spectral distance
    assert table.loc["real stain", "band_power_ratio_mid"] == 1.0
    assert table.loc["real stain", "log_spectral_distance"] == 0.0
    # the identical prediction measures the same, which the reference row states by definition
    assert table.loc["Pix2PixHD GAN", "band_power_ratio_mid"] == pytest.approx(1.0)
    assert table.loc["Pix2PixHD GAN", "log_spectral_distance"] == pytest.approx(0.0)
    assert table.loc["real stain", "f1_iou50"] == sharp["real_stain_f1_iou50"]
    assert math.isnan(table.loc["real stain", "psnr"])
    assert table.loc["regression (L1)", "hf_power_ratio"] < 1
    assert "real stain" not in compare_models({"GAN": sharp}, reference=None).index


def test_compare_models_reads_summaries_with_nulls_from_json(tmp_path):
    table = compare_models({"m": {"psnr": None, "ssim": 0.5, "real_stain_f1_iou50": 0.9}})
    assert math.isnan(table.loc["m", "psnr"]) and table.loc["real stain", "f1_iou50"] == 0.9


def test_f1_falls_with_the_iou_threshold_and_matches_the_real_stain_for_itself(split, tmp_path):
    curve = f1_per_threshold(evaluate(write_predictions(tmp_path, split, lambda s: s), split))
    assert np.allclose(curve["threshold"], metrics.IOU_THRESHOLDS)
    assert (np.diff(curve["f1"]) <= 0).all()
    assert np.array_equal(curve["f1"], curve["real_stain_f1"])
    assert curve["f1"].iloc[0] == 1.0


def test_f1_per_threshold_without_instance_columns_says_why():
    with pytest.raises(ValueError, match="masks"):
        f1_per_threshold(pd.DataFrame({"fov": ["a"], "psnr": [20.0]}))


def test_radial_spectra_show_blur_as_lost_high_frequency_power(split, tmp_path):
    same = radial_spectra(write_predictions(tmp_path / "a", split, lambda s: s), split,
                          progress=False)
    blurry = radial_spectra(write_predictions(tmp_path / "b", split, blurred), split,
                            progress=False)
    assert np.allclose(same["prediction"], same["real_stain"])
    assert same["frequency"].min() > 0 and same["frequency"].max() == 0.5
    high = blurry["frequency"] > 0.25
    assert (blurry["prediction"][high] < 0.1 * blurry["real_stain"][high]).all()
    expected = np.mean([metrics.radial_power_spectrum(stain(split, f))[1][1:] for f in FOVS], 0)
    assert np.allclose(blurry["real_stain"], expected)


def test_band_ratios_of_the_summary_are_those_of_the_mean_spectra(split, tmp_path):
    """Two images, one 100x brighter in power: the summary divides the mean spectra.

    Field a: the prediction is twice the real stain t (power ratio 4). Field b: the real stain
    is 10 t and the prediction t (ratio 0.01). Both are made of the same texture t of band
    power P, so the mean spectra give (4P + P) / (P + 100P) = 5/101 in every band, while the
    mean of the per-image ratios would be (4 + 0.01) / 2 = 2.005.
    """
    texture, masks = stain(split, FOVS[0]), read_mask(split / "nuclei_masks" / f"{FOVS[0]}.tif")
    data = tmp_path / "data" / "test"
    for fov, real, prediction in (("a", texture, 2 * texture), ("b", 10 * texture, texture)):
        write_image(data / "nuclei" / f"{fov}.tif", real)
        write_mask(data / "nuclei_masks" / f"{fov}.tif", masks)
        write_image(tmp_path / "pred" / f"{fov}.tif", prediction)
    summary = evaluate_folder(tmp_path / "pred", data, tmp_path / "out", progress=False)
    per_image = pd.read_csv(tmp_path / "out" / "per_image.csv").set_index("fov")
    spectra = radial_spectra(tmp_path / "pred", data, progress=False)
    for band, (low, high) in metrics.SPECTRAL_BANDS.items():
        key = f"band_power_ratio_{band}"
        assert summary[key] == pytest.approx(5 / 101, rel=1e-6)  # float32 TIFFs
        assert per_image.loc["a", key] == pytest.approx(4.0) and per_image.loc["b", key] == (
            pytest.approx(0.01))
        in_band = (spectra["frequency"] >= low) & (spectra["frequency"] < high)
        from_figure = (spectra["prediction"][in_band].mean()
                       / spectra["real_stain"][in_band].mean())
        assert summary[key] == pytest.approx(from_figure, rel=1e-9)


def test_bright_nuclei_recall_pools_the_counts_over_images():
    # one image finds its only bright nucleus, another none of its three: 1 of 4, not (1 + 0) / 2
    table = pd.DataFrame({"fov": ["a", "b"], "bright_nuclei": [1, 3], "bright_found": [1, 0],
                          "other_nuclei": [10, 30], "other_found": [9, 21]})
    summary = summarise(table)
    assert summary["recall_bright_nuclei"] == 0.25
    assert summary["recall_other_nuclei"] == 0.75
    assert summary["recall_gap_bright_nuclei"] == 0.5
    # resampling two images gives a, a (gap 0.9 - 1 = -0.1), a, b (0.5) or b, b (0.7 - 0 = 0.7),
    # a quarter of the time each end: the 95 % interval spans them
    assert summary["recall_gap_bright_nuclei_low95"] == pytest.approx(-0.1)
    assert summary["recall_gap_bright_nuclei_high95"] == pytest.approx(0.7)
    assert (summary["recall_bright_nuclei_low95"], summary["recall_bright_nuclei_high95"]) == (
        0.0, 1.0)
    assert (summary["recall_other_nuclei_low95"], summary["recall_other_nuclei_high95"]) == (
        pytest.approx(0.7), pytest.approx(0.9))


def test_bright_nuclei_recall_is_nan_without_bright_nuclei():
    table = pd.DataFrame({"fov": ["a", "b"], "bright_nuclei": [0, 0], "bright_found": [0, 0],
                          "other_nuclei": [10, 30], "other_found": [9, 21]})
    summary = summarise(table)
    for key in ("recall_bright_nuclei", "recall_bright_nuclei_low95",
                "recall_gap_bright_nuclei", "recall_gap_bright_nuclei_high95"):
        assert math.isnan(summary[key]), key
    assert summary["recall_other_nuclei"] == 0.75


def test_bright_nuclei_are_counted_above_the_datasets_p_high(split, tmp_path):
    # the hand-made split has no dataset.json: no threshold, no counts, unless one is given
    pred = write_predictions(tmp_path / "pred", split, lambda s: s)
    assert "bright_nuclei" not in evaluate_predictions(pred, split, progress=False)
    table = evaluate_predictions(pred, split, bright_threshold=0.5, progress=False)
    masks = [read_mask(split / "nuclei_masks" / f"{fov}.tif") for fov in table["fov"]]
    assert table["bright_nuclei"].sum() == sum(np.unique(m[m > 0]).size for m in masks)
    assert table["other_nuclei"].sum() == 0
    write_json(split.parent / "dataset.json", {})  # not a dataset.json pix2pixhd wrote: ignored
    try:
        assert "bright_nuclei" not in evaluate_predictions(pred, split, progress=False)
    finally:
        (split.parent / "dataset.json").unlink()


def test_the_default_bright_threshold_is_the_datasets_p_high(tiny_dataset, tmp_path):
    import shutil

    from scipy import ndimage

    root = tmp_path / "data"
    shutil.copytree(tiny_dataset / "test", root / "test")
    split = root / "test"
    fovs = sorted(path.stem for path in (split / "nuclei").glob("*.tif"))
    means = {}
    for fov in fovs:
        labels = read_mask(split / "nuclei_masks" / f"{fov}.tif")
        ids = np.unique(labels[labels > 0])
        means[fov] = np.asarray(ndimage.mean(read_image(split / "nuclei" / f"{fov}.tif"),
                                             labels, ids))
    # a p_high between the nuclei's means, so that some are bright and some are not
    p_high = float(np.median(np.concatenate(list(means.values()))))
    info = json.loads((tiny_dataset / "dataset.json").read_text())
    info["normalisation"]["nuclei"]["p_high"] = p_high
    write_json(root / "dataset.json", info)
    pred = write_predictions(tmp_path / "pred", split, lambda s: s, fovs=fovs)
    table = evaluate_predictions(pred, split, progress=False)
    bright = sum(int((values > p_high).sum()) for values in means.values())
    assert 0 < bright < sum(values.size for values in means.values())
    assert table["bright_nuclei"].sum() == bright


@pytest.mark.parametrize("content, reason", [
    ("{not json", "is not valid JSON"),
    ('{"normalisation": []}', "'normalisation' holds a list"),
    ('{"normalisation": {"../../etc": {}}}', "is not a plain name"),
    ('{"source": "synthetic"}', "holds no normalisation.nuclei.p_high"),
])
def test_a_dataset_json_that_gives_no_bright_threshold_is_named_with_the_metrics_it_costs(
        split, tmp_path, caplog, content, reason):
    data = tmp_path / "data" / "test"
    for fov in FOVS:
        write_image(data / "nuclei" / f"{fov}.tif", stain(split, fov))
        write_mask(data / "nuclei_masks" / f"{fov}.tif", read_mask(split / "nuclei_masks"
                                                                     / f"{fov}.tif"))
    (tmp_path / "data" / "dataset.json").write_text(content)
    pred = write_predictions(tmp_path / "pred", split, blurred)
    with caplog.at_level(logging.WARNING, logger="pix2pixhd.evaluate"):
        summary = summarise(evaluate(pred, data))
    lines = [line for line in caplog.text.splitlines() if "recall_bright_nuclei" in line]
    assert len(lines) == 1 and reason in lines[0]
    assert "recall_other_nuclei, recall_gap_bright_nuclei are not computed" in lines[0]
    assert math.isnan(summary["recall_bright_nuclei"])  # the key is there, empty
