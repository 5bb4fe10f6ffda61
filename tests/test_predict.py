"""Whole-image inference: padding, tiling with blending, units, files."""

import numpy as np
import pytest
import torch

from pix2pixhd.layout import list_fovs, read_image
from pix2pixhd.predict import (
    blending_window,
    load_predictor,
    pad_to_multiple,
    predict_folder,
    predict_image,
    tile_starts,
)
from pix2pixhd.train import Trainer


@pytest.fixture(scope="module")
def checkpoint(tiny_dataset, tmp_path_factory):
    from pix2pixhd.config import apply_overrides, load_config

    from .conftest import TINY

    folder = tmp_path_factory.mktemp("checkpoints")
    config = apply_overrides(load_config("quick"), TINY + [
        f"data.root={tiny_dataset}", f"train.checkpoints_dir={folder}"])
    trainer = Trainer(config)
    trainer.fit(epochs=1)
    return trainer.run_dir / "latest.pt"


def test_padding_reaches_the_multiple_and_keeps_the_image():
    image = torch.arange(5 * 7, dtype=torch.float32).reshape(1, 1, 5, 7)
    padded, size = pad_to_multiple(image, 4)
    assert padded.shape[-2:] == (8, 8) and size == (5, 7)
    assert torch.equal(padded[..., :5, :7], image)
    assert torch.equal(padded[..., 5, :7], image[..., 3, :])  # reflection about the last row


def test_tiles_cover_the_image_and_windows_rise_smoothly():
    starts = tile_starts(1000, 256, 64)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 256 - 64 for a, b in zip(starts, starts[1:], strict=False))
    window = blending_window(256, 64)
    assert np.all(np.diff(window[:64]) > 0) and np.all(window[64:-64] == 1)
    # raised-cosine ramps of two neighbours sum to one over their shared pixels
    np.testing.assert_allclose(window[:64] + window[-64:], 1.0, atol=1e-6)


def test_prediction_is_in_stain_units_with_the_input_size(checkpoint, tiny_dataset):
    generator, config, normaliser = load_predictor(checkpoint)
    phase = read_image(tiny_dataset / "test" / "phase" / "fov_0000.tif")[:50, :61]
    stain = predict_image(generator, phase, normaliser)
    assert stain.shape == (1, 50, 61) and stain.dtype == np.float32
    stats = normaliser.stats["nuclei"]
    # the tanh output in [-1, 1] maps back into [p_low, p_high] of the stain
    assert stats["p_low"] - 1e-3 <= stain.min() and stain.max() <= stats["p_high"] + 1e-3


def test_tiled_equals_untiled_within_a_small_tolerance(checkpoint):
    generator, _, normaliser = load_predictor(checkpoint)
    rng = np.random.default_rng(0)
    from scipy.ndimage import gaussian_filter

    phase = gaussian_filter(rng.normal(size=(192, 160)), 2).astype(np.float32)
    whole = predict_image(generator, phase, normaliser, tile_size=1024)
    tiled = predict_image(generator, phase, normaliser, tile_size=96, overlap=32)
    spread = whole.max() - whole.min()
    assert np.abs(tiled - whole).mean() < 0.03 * spread
    assert np.abs(tiled - whole).max() < 0.25 * spread


def test_predict_folder_writes_one_tiff_per_fov_and_channel(checkpoint, tiny_dataset, tmp_path):
    written = predict_folder(checkpoint, tiny_dataset / "test", tmp_path)
    fovs = list_fovs(tiny_dataset, "test")
    assert sorted(p.stem for p in written) == fovs
    assert all(p.parent.name == "nuclei" for p in written)
    assert read_image(written[0]).shape == read_image(
        tiny_dataset / "test" / "phase" / f"{fovs[0]}.tif").shape


def test_small_images_predict_and_a_single_pixel_is_refused(checkpoint):
    generator, _, normaliser = load_predictor(checkpoint)
    rng = np.random.default_rng(0)
    for shape in [(2, 2), (3, 5), (5, 40)]:
        phase = rng.normal(size=shape).astype(np.float32)
        assert predict_image(generator, phase, normaliser).shape == (1, *shape)
    with pytest.raises(ValueError, match="1x1 pixels is too small"):
        predict_image(generator, np.ones((1, 1), np.float32), normaliser)
    with pytest.raises(ValueError, match="overlap -5 must not be negative"):
        predict_image(generator, np.ones((8, 8), np.float32), normaliser, overlap=-5)


def test_the_foreign_input_warning_fires_only_far_from_the_training_data():
    from pix2pixhd.predict import FOREIGN_SHIFT, FOREIGN_SPREAD, foreign_input_message

    stats = {"median": 0.3, "iqr": 0.6}
    rng = np.random.default_rng(1)
    typical = rng.normal(0.3, 0.6 / 1.349, (64, 64))  # a normal's IQR is 1.349 sigma
    assert foreign_input_message(typical, stats, "typical.tif") is None
    shifted = typical + 0.6 * (FOREIGN_SHIFT + 0.5)
    assert "shifted.tif is far from the training data" in foreign_input_message(
        shifted, stats, "shifted.tif")
    assert foreign_input_message(typical * (FOREIGN_SPREAD + 1), stats, "wide.tif")
    assert foreign_input_message(0.3 + (typical - 0.3) / (FOREIGN_SPREAD + 1), stats, "flat.tif")
