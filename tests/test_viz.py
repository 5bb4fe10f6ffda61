import matplotlib

matplotlib.use("Agg")

from pathlib import Path  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from skimage.draw import disk  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

from pix2pixhd import logs, metrics, viz  # noqa: E402

SIZE = 32


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def images(rng):
    """phase (rad-like), a stain with two bright nuclei, and a blurry and a noisy prediction."""
    stain = rng.normal(100, 5, (SIZE, SIZE))
    stain[disk((10, 10), 5)] += 1000
    stain[disk((22, 20), 6)] += 600
    return {
        "phase": rng.normal(0, 0.3, (SIZE, SIZE)),
        "stain": stain,
        "GAN": stain + rng.normal(0, 50, stain.shape),
        "regression": 0.5 * stain + 3000,  # far off the stain's range: must not change the scale
    }


def image_axes(figure: Figure) -> list[plt.Axes]:
    return [ax for ax in figure.axes if ax.images and not hasattr(ax, "_colorbar")]


def colorbar_labels(figure: Figure) -> list[str]:
    return [ax.get_ylabel() for ax in figure.axes if hasattr(ax, "_colorbar")]


def legend_texts(ax: plt.Axes) -> list[str]:
    return [text.get_text() for text in ax.get_legend().get_texts()]


def evaluation_table(rng, n: int, offset: float) -> pd.DataFrame:
    table = pd.DataFrame({
        "fov": [f"fov_{i:04d}" for i in range(n)],
        "psnr": rng.normal(25 + offset, 1, n),
        "ssim": rng.uniform(0.5, 0.9, n),
        "pearson": rng.uniform(0.6, 0.95, n),
        "f1_iou50": rng.uniform(0.4, 0.9, n),
        "real_stain_f1_iou50": np.linspace(0.8, 1.0, n),
    })
    return table


def training_scalars(tags, n=30) -> pd.DataFrame:
    rows = []
    for tag in tags:
        val = tag.startswith(("val/", "D_out/val"))
        steps = range(0, n * 10, 50) if val else range(0, n * 10, 10)
        rows += [(tag, step, 1.0 / (1 + step / 100) + 0.01 * (step % 30), 0.0) for step in steps]
    return pd.DataFrame(rows, columns=["tag", "step", "value", "wall_time"])


# --- images side by side -------------------------------------------------------------------------


def test_plot_predictions_shows_every_stain_on_the_real_stains_scale(images):
    predictions = {"GAN": images["GAN"], "regression": images["regression"]}
    figure = viz.plot_predictions(images["phase"], images["stain"], predictions)
    axes = image_axes(figure)
    assert [ax.get_title() for ax in axes] == [
        "phase", "real stain", "GAN prediction", "regression prediction"]
    expected = np.percentile(images["stain"], viz.STAIN_PERCENTILES)
    for ax in axes[1:]:
        np.testing.assert_allclose(ax.images[0].get_clim(), expected)
    assert axes[0].images[0].get_cmap().name == "gray"
    labels = colorbar_labels(figure)
    assert any("rad" in label for label in labels)
    assert any("a.u." in label for label in labels)


def test_stain_colours_reach_bright_nuclei_so_a_clipped_prediction_looks_dimmer():
    """A bright nucleus of 0.3 % of the pixels, above the 99.5th percentile: the shared scale
    reaches it, so a prediction clipped at 1,000 shows that nucleus below the top colour."""
    stain = np.full((64, 64), 100.0)
    stain[disk((20, 20), 8)] = 800.0  # ordinary nuclei: 5 % of the pixels
    stain[disk((45, 45), 2)] = 5000.0  # 13 pixels
    clipped = np.minimum(stain, 1000.0)
    figure = viz.plot_predictions(np.zeros_like(stain), stain, {"GAN": clipped})
    low, high = image_axes(figure)[2].images[0].get_clim()
    assert high > 2 * clipped.max()
    bars = [ax._colorbar for ax in figure.axes if hasattr(ax, "_colorbar")]
    stain_bar = next(bar for bar in bars if "stain" in bar.ax.get_ylabel())
    assert stain_bar.extend == "both"
    assert "real stain's percentiles 1-99.9" in stain_bar.ax.get_ylabel()


def test_plot_predictions_crop_adds_a_zoomed_row_and_outlines_the_crop(images, tmp_path):
    crop = (slice(4, 20), slice(8, 16))
    figure = viz.plot_predictions(images["phase"], images["stain"], {"GAN": images["GAN"]},
                                  crop=crop, titles=["in", "out", "model"],
                                  path=tmp_path / "sub" / "predictions.png")
    axes = image_axes(figure)
    assert len(axes) == 6
    top, zoom = axes[:3], axes[3:]
    for ax in top:
        boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert len(boxes) == 1 and (boxes[0].get_width(), boxes[0].get_height()) == (8, 16)
    for ax in zoom:
        assert ax.images[0].get_array().shape == (16, 8)
        assert "zoom" in ax.get_title()
    np.testing.assert_array_equal(zoom[1].images[0].get_array(), images["stain"][crop])
    stains = axes[1:3] + axes[4:6]
    assert len({ax.images[0].get_clim() for ax in stains}) == 1
    assert (tmp_path / "sub" / "predictions.png").stat().st_size > 0


@pytest.mark.parametrize("crop", [(slice(10, 5), slice(0, 8)), (slice(0, 8),), (0, 8)])
def test_plot_predictions_refuses_a_crop_that_selects_nothing(images, crop):
    with pytest.raises(ValueError, match="crop"):
        viz.plot_predictions(images["phase"], images["stain"], {}, crop=crop)


def test_plot_predictions_names_the_image_of_another_shape(images):
    with pytest.raises(ValueError, match="GAN"):
        viz.plot_predictions(images["phase"], images["stain"], {"GAN": images["GAN"][:-1]})


def test_plot_prediction_grid_has_one_row_per_fov_with_a_shared_scale_per_row(images, tmp_path):
    brighter = {key: 2 * value for key, value in images.items()}
    figure = viz.plot_prediction_grid(
        [images["phase"], brighter["phase"]], [images["stain"], brighter["stain"]],
        [images["GAN"], brighter["GAN"]], ["fov_0001", "fov_0007"], title="worst two",
        path=tmp_path / "grid.png")
    axes = image_axes(figure)
    assert len(axes) == 6
    assert [ax.get_title().split(":")[0] for ax in axes] == ["fov_0001"] * 3 + ["fov_0007"] * 3
    for row in (axes[:3], axes[3:]):
        assert row[1].images[0].get_clim() == row[2].images[0].get_clim()
    assert axes[1].images[0].get_clim() != axes[4].images[0].get_clim()
    assert figure.get_suptitle() == "worst two"
    assert (tmp_path / "grid.png").is_file()
    with pytest.raises(ValueError, match="one of each per row"):
        viz.plot_prediction_grid([images["phase"]], [images["stain"]], [], ["fov_0001"])


def test_segmentation_overlay_draws_both_outlines_in_their_colours(images, tmp_path):
    truth = np.zeros((SIZE, SIZE), dtype=np.uint16)
    truth[disk((10, 10), 5)] = 1
    truth[disk((22, 20), 6)] = 2
    predicted = np.where(truth == 2, 7, 0)
    figure = viz.plot_segmentation_overlay(images["stain"], truth, predicted, title="regression",
                                           path=tmp_path / "overlay.png")
    ax = image_axes(figure)[0]
    assert ax.get_title() == "regression"
    stain_image, truth_outline, predicted_outline = (image.get_array() for image in ax.images)
    for outline, labels, mode, key in ((truth_outline, truth, "outer", "truth"),
                                       (predicted_outline, predicted, "inner", "prediction")):
        drawn = outline[..., 3] > 0
        np.testing.assert_array_equal(drawn, find_boundaries(labels, mode=mode))
        np.testing.assert_allclose(outline[drawn][0], matplotlib.colors.to_rgba(
            viz.OUTLINE_COLOURS[key]))
    assert legend_texts(ax) == ["ground truth (2 nuclei)", "segmented (1 nucleus)"]
    assert any("a.u." in label for label in colorbar_labels(figure))
    assert (tmp_path / "overlay.png").is_file()


def test_segmentation_overlay_of_a_prediction_takes_the_real_stains_range(images):
    labels = np.zeros((SIZE, SIZE), dtype=np.uint16)
    figure = viz.plot_segmentation_overlay(images["regression"], labels, labels,
                                           reference=images["stain"])
    np.testing.assert_allclose(image_axes(figure)[0].images[0].get_clim(),
                               np.percentile(images["stain"], viz.STAIN_PERCENTILES))
    assert any("real stain's" in label for label in colorbar_labels(figure))
    with pytest.raises(ValueError, match="reference"):
        viz.plot_segmentation_overlay(images["stain"], labels, labels,
                                      reference=images["stain"][:-1])


def test_instance_errors_outline_each_outcome_in_its_named_colour(images, tmp_path):
    from pix2pixhd.metrics import error_causes

    truth = np.zeros((SIZE, SIZE), dtype=np.uint16)
    truth[disk((10, 10), 5)] = 1  # matched
    truth[disk((22, 20), 6)] = 2  # missed
    predicted = np.where(truth == 1, 4, 0)
    predicted[disk((6, 26), 3)] = 9  # invented
    truth[26:30, 2:6] = 3  # too large: a 4 x 4 nucleus under an 8 x 8 prediction
    predicted[24:32, 0:8] = 5
    causes = error_causes(truth, predicted)
    figure = viz.plot_instance_errors([images["stain"]] * 2, [truth] * 2, [predicted] * 2,
                                      [causes] * 2, ["worst", "best"], path=tmp_path / "e.png")
    ax = image_axes(figure)[0]
    assert ax.get_title() == "worst\n1 matched, 1 missed, 1 invented"
    _, matched, missed, invented, other = (image.get_array() for image in ax.images)
    expected = {"matched": (matched, predicted == 4, "inner"),
                "missed": (missed, truth == 2, "outer"),
                "invented": (invented, predicted == 9, "inner")}
    for key, (outline, mask, mode) in expected.items():
        drawn = outline[..., 3] > 0
        np.testing.assert_array_equal(drawn, find_boundaries(mask, mode=mode))
        np.testing.assert_allclose(outline[drawn][0], matplotlib.colors.to_rgba(
            viz.ERROR_OUTLINES[key][0]))
    np.testing.assert_array_equal(other[..., 3] > 0, find_boundaries(predicted == 5, mode="inner")
                                  | find_boundaries(truth == 3, mode="outer"))
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert [text.split(":")[0] for text in legend] == ["green", "blue", "red", "yellow"]
    assert len(image_axes(figure)) == 2 and (tmp_path / "e.png").is_file()
    with pytest.raises(ValueError, match="one of each per panel"):
        viz.plot_instance_errors([images["stain"]], [truth], [predicted], [], ["worst"])


def test_logged_images_are_shown_side_by_side_as_stored_with_titles(rng):
    grids = [(step, rng.integers(0, 256, (20, 15, 3), dtype=np.uint8)) for step in (50, 750)]
    figure = viz.plot_logged_images(grids, titles=["epoch 1", "epoch 15"], title="validation")
    axes = image_axes(figure)
    assert [ax.get_title() for ax in axes] == ["epoch 1", "epoch 15"]
    for ax, (_, grid) in zip(axes, grids, strict=True):
        np.testing.assert_array_equal(ax.images[0].get_array(), grid)
    assert [ax.get_title() for ax in image_axes(viz.plot_logged_images(grids))] == [
        "step 50", "step 750"]
    with pytest.raises(ValueError, match="2 images"):
        viz.plot_logged_images(grids, titles=["one"])


# --- tables of metrics ---------------------------------------------------------------------------


def test_metric_distributions_draw_every_image_and_the_real_stain_mean(rng, tmp_path):
    tables = {"GAN": evaluation_table(rng, 7, 0), "regression": evaluation_table(rng, 7, 2)}
    tables["GAN"].loc[0, "psnr"] = np.inf  # a perfect prediction: left out of the panel
    figure = viz.plot_metric_distributions(tables, path=tmp_path / "metrics.png")
    assert len(figure.axes) == 4
    psnr, *_, f1 = figure.axes
    assert psnr.get_ylabel() == "PSNR (dB)"
    points = [collection.get_offsets() for collection in psnr.collections]
    assert [len(p) for p in points] == [6, 7]
    assert np.all(np.isfinite(np.concatenate(points)))
    reference = [line for line in f1.get_lines() if line.get_linestyle() == "--"]
    assert len(reference) == 1
    np.testing.assert_allclose(reference[0].get_ydata(), 0.9)
    assert "real stain" in legend_texts(f1)[0]
    assert psnr.get_legend() is None  # no real_stain_psnr column, no line
    assert (tmp_path / "metrics.png").is_file()


def test_metric_distributions_skip_metrics_no_table_has(rng):
    tables = {"GAN": evaluation_table(rng, 5, 0).drop(columns=["f1_iou50"])}
    assert len(viz.plot_metric_distributions(tables).axes) == 3
    with pytest.raises(ValueError, match="psnr"):
        viz.plot_metric_distributions(tables, metrics=("f1_iou50",))


def test_f1_vs_threshold_has_a_line_per_model_and_a_dashed_real_stain(tmp_path):
    thresholds = np.round(np.arange(0.5, 1.0, 0.05), 2)
    curve = pd.DataFrame({"threshold": thresholds, "f1": 1 - thresholds,
                          "real_stain_f1": 1.2 - thresholds})
    figure = viz.plot_f1_vs_threshold({"GAN": curve, "regression": curve.assign(f1=0.5)},
                                      path=tmp_path / "f1.png")
    ax = figure.axes[0]
    assert legend_texts(ax) == ["GAN", "regression", "real stain (same segmentation)"]
    assert ax.get_lines()[-1].get_linestyle() == "--"
    np.testing.assert_allclose(ax.get_lines()[-1].get_ydata(), 1.2 - thresholds)
    assert "IoU" in ax.get_xlabel() and "F1" in ax.get_ylabel()
    assert (tmp_path / "f1.png").is_file()
    with pytest.raises(ValueError, match="f1_per_threshold"):
        viz.plot_f1_vs_threshold({"GAN": curve.drop(columns="f1")})


def test_power_spectra_are_log_scaled_with_the_real_stain_once_and_the_table_bands(tmp_path):
    frequency = np.arange(1, 17) / 32
    table = pd.DataFrame({"frequency": frequency, "prediction": frequency**-2,
                          "real_stain": frequency**-1.5})
    figure = viz.plot_power_spectra({"GAN": table, "regression": table},
                                    path=tmp_path / "spectra.png")
    ax = figure.axes[0]
    assert ax.get_yscale() == "log"
    assert "cycles/pixel" in ax.get_xlabel()
    labels = legend_texts(ax)
    assert labels.count("real stain") == 1 and {"GAN", "regression"} <= set(labels)
    shaded = sorted((patch.get_x(), patch.get_x() + patch.get_width()) for patch in ax.patches)
    assert shaded == sorted(metrics.SPECTRAL_BANDS.values())
    assert "high band (0.3-0.45 cycles/pixel)" in labels
    assert (tmp_path / "spectra.png").is_file()


# --- MC-dropout ----------------------------------------------------------------------------------


def test_mc_samples_share_the_stain_scale_and_show_differences_centred_on_zero(images, rng,
                                                                               tmp_path):
    samples = images["stain"] + rng.normal(0, 30, (6, SIZE, SIZE))
    figure = viz.plot_mc_samples(images["phase"], samples, images["stain"], n_shown=3,
                                 path=tmp_path / "mc.png")
    axes = image_axes(figure)
    titles = [ax.get_title() for ax in axes]
    assert titles[:5] == ["phase", "sample 1", "sample 2", "sample 3", "real stain"]
    stains = axes[1:5]
    assert len({ax.images[0].get_clim() for ax in stains}) == 1
    differences = axes[5:]
    assert len(differences) == 3
    low, high = differences[0].images[0].get_clim()
    assert low == -high and high > 0
    np.testing.assert_allclose(differences[0].images[0].get_array(),
                               samples[0] - samples.mean(axis=0))
    assert "6 samples" in figure.get_suptitle()
    assert (tmp_path / "mc.png").is_file()


def test_mc_samples_show_at_most_the_samples_there_are(images):
    figure = viz.plot_mc_samples(images["phase"], images["stain"][None], images["stain"],
                                 n_shown=4)
    assert len(image_axes(figure)) == 3  # phase, the one sample, real stain; no differences


def test_uncertainty_maps_report_the_given_rank_correlation_of_std_and_error(images, rng,
                                                                             tmp_path):
    std = rng.uniform(1, 10, (SIZE, SIZE))
    mean = images["stain"] + std * rng.normal(0, 1, std.shape)
    cv = std / np.abs(mean)
    expected = spearmanr(std.ravel(), np.abs(mean - images["stain"]).ravel()).statistic
    figure = viz.plot_uncertainty_maps(mean, std, images["stain"], cv=cv, spearman=expected,
                                       path=tmp_path / "uncertainty.png")
    axes = image_axes(figure)
    assert len(axes) == 4
    assert [ax.get_title() for ax in axes] == [
        "mean of the samples", "std of the samples", "|mean − real stain|",
        "coefficient of variation"]
    np.testing.assert_allclose(axes[2].images[0].get_array(), np.abs(mean - images["stain"]))
    assert any(f"ρ = {expected:.2f}" in ax.get_title() for ax in figure.axes)
    labels = colorbar_labels(figure)
    assert sum("a.u." in label for label in labels) == 3
    assert any("ratio" in label for label in labels)
    assert any("pixels" in label for label in labels)
    assert (tmp_path / "uncertainty.png").is_file()


def test_uncertainty_maps_subsample_pixels_for_the_correlation(images, rng):
    std = rng.uniform(1, 10, (SIZE, SIZE))
    figure = viz.plot_uncertainty_maps(images["stain"] + std, std, images["stain"],
                                       max_pixels=100)
    assert len(image_axes(figure)) == 3
    assert any("100 random pixels" in ax.get_title() for ax in figure.axes)
    assert not any("ρ" in ax.get_title() for ax in figure.axes)  # no correlation was given


def test_sparsification_legend_gives_the_curves_ause(tmp_path):
    curve = {"fractions": np.array([0.0, 0.5]), "model": np.array([1.0, 0.6]),
             "oracle": np.array([1.0, 0.2]), "random": np.array([1.0, 1.0]), "ause": 0.1}
    figure = viz.plot_sparsification(curve, path=tmp_path / "sparsification.png")
    ax = figure.axes[0]
    labels = legend_texts(ax)
    assert any("AUSE = 0.100" in label for label in labels)
    assert "random order" in labels
    assert len(ax.collections) == 1  # the shaded area
    assert "fraction of pixels removed" in ax.get_xlabel()
    assert (tmp_path / "sparsification.png").is_file()


def test_sparsification_of_several_models_has_one_ause_each():
    good = {"fractions": np.linspace(0, 0.9, 10), "model": np.linspace(1, 0.1, 10),
            "oracle": np.linspace(1, 0.1, 10), "ause": 0.0}
    bad = dict(good, model=np.ones(10), ause=0.405)
    ax = viz.plot_sparsification({"GAN": good, "regression": bad}).axes[0]
    labels = [label for label in legend_texts(ax) if "AUSE" in label]
    assert len(labels) == 2
    assert labels[0].startswith("GAN") and "AUSE = 0.000" in labels[0]
    assert labels[1].startswith("regression") and "AUSE = 0.405" in labels[1]


def test_sparsification_without_an_ause_draws_the_curves_without_one():
    curve = {"fractions": np.array([0.0, 0.5]), "model": np.array([1.0, 0.6]),
             "oracle": np.array([1.0, 0.2])}
    ax = viz.plot_sparsification(curve).axes[0]
    assert not any("AUSE" in label for label in legend_texts(ax))
    assert len(ax.collections) == 1


def test_reliability_diagram_draws_each_curve_and_the_diagonal_on_log_axes(tmp_path):
    bins = pd.DataFrame({"rms_std": [1.0, 2.0, 4.0], "rms_error": [10.0, 12.0, 30.0]})
    scaled = bins.assign(rms_std=5 * bins["rms_std"])
    figure = viz.plot_reliability({"raw (UCE 900)": bins, "x5 (UCE 200)": scaled},
                                  path=tmp_path / "reliability.png")
    ax = figure.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    lines = ax.get_lines()
    np.testing.assert_allclose(lines[1].get_xdata(), [5.0, 10.0, 20.0])
    diagonal = lines[-1]
    np.testing.assert_allclose(diagonal.get_xdata(), diagonal.get_ydata())
    np.testing.assert_allclose(diagonal.get_xdata(), [1.0, 30.0])
    assert legend_texts(ax)[:2] == ["raw (UCE 900)", "x5 (UCE 200)"]
    assert "3 bins" in ax.get_title()
    assert (tmp_path / "reliability.png").is_file()


def test_reliability_diagram_names_the_function_that_makes_its_bins():
    with pytest.raises(ValueError, match="reliability_bins"):
        viz.plot_reliability(pd.DataFrame({"std": [1.0]}))


# --- training logs -------------------------------------------------------------------------------

GAN_TAGS = ["loss/D_real", "loss/D_fake", "loss/G_GAN", "loss/G_GAN_Feat", "D_out/train_real",
            "D_out/train_fake", "D_out/val_real", "D_out/val_fake", "val/psnr", "val/ssim", "lr"]


def test_training_curves_of_a_gan_run_have_four_labelled_panels(tmp_path):
    figure = viz.plot_training_curves(training_scalars(GAN_TAGS), path=tmp_path / "train.png")
    panels = [ax for ax in figure.axes if ax.get_title()]
    titles = [ax.get_title() for ax in panels]
    assert [t[:3] for t in titles] == ["(a)", "(b)", "(c)", "(d)"]
    assert "discriminator losses" in titles[0]
    d_out = panels[2]
    targets = {line.get_ydata()[0] for line in d_out.get_lines() if len(line.get_xdata()) == 2}
    assert targets == {0.0, 1.0}
    assert {"D_out/val_real", "D_out/val_fake"} <= set(legend_texts(d_out))
    validation = panels[3]
    assert set(legend_texts(validation)) == {"val/psnr", "val/ssim"}
    assert "PSNR (dB)" in validation.get_ylabel()
    assert (tmp_path / "train.png").is_file()


def test_training_curves_of_a_regression_run_show_its_l1_loss():
    figure = viz.plot_training_curves(training_scalars(["loss/G_L1", "val/psnr", "val/ssim"]))
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert len(panels) == 2
    assert legend_texts(panels[0]) == ["loss/G_L1"]
    assert "regression" in panels[0].get_title()
    with pytest.raises(ValueError, match="lr"):
        viz.plot_training_curves(training_scalars(["lr"]))


def test_training_curves_of_the_shipped_viscy_model_show_its_loss_panel():
    """The VisCy run logs loss/G_L1_MSDSSIM: a panel of its own beside validation."""
    scalars = logs.read_scalars(Path(__file__).parents[1] / "checkpoints/viscy_nuclei/logs")
    figure = viz.plot_training_curves(scalars)
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert "generator loss" in panels[0].get_title()
    assert legend_texts(panels[0]) == ["loss/G_L1_MSDSSIM"]
    assert set(legend_texts(panels[1])) == {"val/psnr", "val/ssim"}


def test_training_curves_smooth_a_short_run_less_than_asked():
    scalars = training_scalars(["loss/G_L1"], n=20)  # 20 points: the weight is capped at 0.5
    ax = viz.plot_training_curves(scalars, smoothing=0.9).axes[0]
    raw, smoothed = ax.get_lines()[:2]
    np.testing.assert_allclose(smoothed.get_ydata(), logs.smooth(raw.get_ydata(), 0.5))


def test_intensity_histograms_mark_the_normalisation_statistics_of_each_channel(rng, tmp_path):
    statistics = {"phase": {"p_low": -1.0, "median": 0.0, "p_high": 1.0},
                  "nuclei": {"p_low": 90.0, "median": 100.0, "p_high": 900.0}}
    values = {"phase": rng.normal(0, 0.5, 1000), "nuclei": rng.gamma(2, 100, 1000)}
    figure = viz.plot_intensity_histograms(values, statistics, path=tmp_path / "h.png")
    assert (tmp_path / "h.png").is_file()
    for ax, channel in zip(figure.axes, values, strict=True):
        marked = sorted(line.get_xdata()[0] for line in ax.get_lines())
        assert marked == sorted(statistics[channel].values())
        assert ax.get_yscale() == "log" and ax.get_xlabel()


def test_stain_maps_draw_each_map_and_its_ceiling(rng, tmp_path):
    from pix2pixhd.normalisation import DatasetNormaliser

    stats = {"phase": {"median": 0.0, "iqr": 1.0},
             "nuclei": {"p_low": 100.0, "p_high": 300.0, "p_top": 1100.0},
             "membrane": {"p_low": 0.0, "p_high": 10.0, "p_top": 50.0}}
    maps = {name: DatasetNormaliser("phase", ["membrane", "nuclei"], stats, stain_map=name)
            for name in ("linear", "asinh")}
    figure = viz.plot_stain_maps(maps, rng.gamma(2, 100, 1000), path=tmp_path / "m.png")
    assert (tmp_path / "m.png").is_file()
    ax = next(ax for ax in figure.axes if ax.get_ylabel() == "generator output units")
    linear, linear_ceiling, asinh, asinh_ceiling = ax.get_lines()
    # linear: p_low -> -1 and p_high -> +1, where its ceiling is; the nuclei channel, not membrane
    np.testing.assert_allclose(np.interp([100, 300], linear.get_xdata(), linear.get_ydata()),
                               [-1, 1], atol=1e-3)
    assert linear_ceiling.get_xdata()[0] == pytest.approx(300)
    assert np.interp(1100, asinh.get_xdata(), asinh.get_ydata()) == pytest.approx(0.8, abs=1e-3)
    assert asinh_ceiling.get_xdata()[0] == pytest.approx(maps["asinh"].tanh_ceiling()["nuclei"])
    assert "linear: ceiling 300 a.u." in [text.get_text() for text in ax.get_legend().get_texts()]


def test_intensity_histograms_name_a_channel_without_statistics(rng):
    with pytest.raises(ValueError, match="nuclei"):
        viz.plot_intensity_histograms({"nuclei": rng.random(10)}, {"phase": {}})


def test_training_crops_show_stains_on_the_fixed_tanh_scale(rng):
    inputs, targets = rng.normal(size=(6, 1, 16, 16)), rng.uniform(-1, 1, (6, 1, 16, 16))
    figure = viz.plot_training_crops(inputs, targets, n=4)
    shown = image_axes(figure)
    assert len(shown) == 8
    assert [ax.images[0].get_clim() == (-1.0, 1.0) for ax in shown] == [False] * 4 + [True] * 4
    assert len(colorbar_labels(figure)) == 2


def test_training_crops_show_targets_above_the_tanh_bound(rng):
    inputs, targets = rng.normal(size=(4, 1, 16, 16)), rng.uniform(-1, 1, (4, 1, 16, 16))
    targets[0, 0, :4, :4] = 6.0  # a bright nucleus, far above p_high
    figure = viz.plot_training_crops(inputs, targets, n=4)
    low, high = image_axes(figure)[4].images[0].get_clim()
    assert low == -1.0 and high > 1.0
    bar = [ax for ax in figure.axes if hasattr(ax, "_colorbar")][-1]
    assert [line.get_ydata()[0] for line in bar.get_lines()] == [1.0]
    assert "tanh" in bar.get_ylabel()


def test_training_crops_refuse_inputs_and_targets_of_other_crops(rng):
    with pytest.raises(ValueError, match="one batch"):
        viz.plot_training_crops(rng.random((2, 1, 16, 16)), rng.random((2, 1, 8, 8)))


def test_a_figure_replaces_a_link_at_its_path_and_leaves_the_target_alone(tmp_path):
    import matplotlib.pyplot as plt

    from pix2pixhd.viz import save_figure

    target = tmp_path / "elsewhere.png"
    target.write_bytes(b"someone's file")
    link = tmp_path / "out" / "figure.png"
    link.parent.mkdir()
    link.symlink_to(target)
    figure = plt.figure()
    save_figure(figure, link)
    plt.close(figure)
    assert target.read_bytes() == b"someone's file"
    assert not link.is_symlink() and link.read_bytes().startswith(b"\x89PNG")


def test_plot_robustness_draws_a_column_per_perturbation_and_a_line_per_model(tmp_path):
    rows = [{"model": model, "perturbation": kind, "level": level, "f1_iou50": 0.9 - level / 10,
             "band_power_ratio_mid": 1.0 / (1 + level)}
            for kind in ("blur_sigma", "noise") for level in (0.0, 1.0, 2.0)
            for model in ("GAN", "regression")]
    rows += [{"model": "real stain", "perturbation": kind, "level": level, "f1_iou50": 0.98}
             for kind in ("blur_sigma", "noise") for level in (0.0, 1.0, 2.0)]
    figure = viz.plot_robustness(pd.DataFrame(rows), path=tmp_path / "robustness.png")
    top, bottom = figure.axes[0], figure.axes[2]
    assert (tmp_path / "robustness.png").is_file() and len(figure.axes) == 4
    assert [line.get_label() for line in top.lines] == ["GAN", "regression", "real stain"]
    assert "blur" in bottom.get_xlabel() and bottom.get_yscale() == "log"
    with pytest.raises(ValueError, match="robustness_table"):
        viz.plot_robustness(pd.DataFrame({"model": ["GAN"]}))
    plt.close(figure)


def test_plot_nuclei_trust_colours_each_virtual_nucleus_by_its_own_trust(tmp_path):
    virtual = np.zeros((64, 64), np.int32)
    virtual[5:15, 5:15], virtual[30:40, 30:40] = 1, 2
    truth = np.zeros((64, 64), np.int32)
    truth[5:15, 5:15] = 1
    stain = np.random.default_rng(0).random((64, 64))
    nuclei = pd.DataFrame({"fov": ["a", "a", "b"], "label": [1, 2, 1],
                           "trust": [1.0, 0.25, 0.5], "matched": [1, 0, 1]})
    figure = viz.plot_nuclei_trust(nuclei, virtual, truth, stain, fov="a", auroc=0.9,
                                   threshold=0.5, path=tmp_path / "trust.png")
    assert (tmp_path / "trust.png").is_file()
    trust_layer = figure.axes[0].images[1].get_array()
    assert trust_layer[10, 10] == 1.0 and trust_layer[35, 35] == 0.25
    assert np.ma.is_masked(trust_layer[50, 50])  # background stays uncoloured
    assert "AUROC" in figure.axes[1].get_title() and "0.90" in figure.axes[1].get_title()
    heights = sorted(round(p.get_height(), 2) for p in figure.axes[1].patches
                     if p.get_height() > 0)
    assert heights == [0.5, 0.5, 1.0]  # matched: 0.5 and 1.0 halves; unmatched: all at 0.25
    with pytest.raises(ValueError, match="no rows of field of view 'c'"):
        viz.plot_nuclei_trust(nuclei, virtual, truth, stain, fov="c")
    with pytest.raises(ValueError, match="matched"):
        viz.plot_nuclei_trust(nuclei.drop(columns="matched"), virtual, truth, stain, fov="a")
