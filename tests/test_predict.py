"""Whole-image inference: padding, tiling with blending, units, files."""

import json
import logging

import numpy as np
import pytest
import torch

from pix2pixhd.layout import list_fovs, list_tiffs, read_image, write_image
from pix2pixhd.predict import (
    blending_window,
    load_predictor,
    pad_to_multiple,
    predict_folder,
    predict_image,
    predict_tensor,
    tile_starts,
)


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
    stain = predict_image(generator, phase, normaliser, tile_size=64)  # one pass, as below
    assert stain.shape == (1, 50, 61) and stain.dtype == np.float32
    assert config.data.stain_map == normaliser.stain_map == "asinh"  # the quick preset's
    # the tanh output in [-1, 1] maps back into [p_low, the map's ceiling] of the stain
    low, ceiling = normaliser.stats["nuclei"]["p_low"], normaliser.tanh_ceiling()["nuclei"]
    assert low - 1e-3 <= stain.min() and stain.max() <= ceiling * (1 + 1e-6)
    np.testing.assert_allclose(normaliser.normalise_target(stain), predict_tensor(
        generator, torch.from_numpy(normaliser.normalise_input(phase))[None, None])[0],
        atol=1e-5)


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


class SideRecorder(torch.nn.Module):
    """Passes its input through and records each input's side (H, W); trained on 64 crops."""

    size_multiple = 1
    training_crop_size = 64

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))  # predict_image reads its device
        self.sides = []

    def forward(self, x):
        self.sides.append(tuple(x.shape[-2:]))
        return x * self.weight


def test_by_default_an_image_goes_in_tiles_of_the_training_crops_side():
    """Instance norm is calibrated on inputs the size of the training crops (docs/recipe.md)."""
    from pix2pixhd.predict import default_overlap, tiles

    network, phase = SideRecorder(), np.random.default_rng(0).normal(size=(200, 150))
    stain = predict_image(network, phase.astype(np.float32), IdentityNormaliser())
    assert default_overlap(64) == 16 and default_overlap(2048) == 128  # a quarter, capped
    expected = list(tiles(200, 150, 64, 16))
    assert network.sides == [(64, 64)] * len(expected) and len(expected) == 4 * 3
    np.testing.assert_allclose(stain[0], phase, atol=1e-5)  # the blend of exact tiles
    network.sides.clear()
    predict_image(network, phase[:64, :50].astype(np.float32), IdentityNormaliser())
    assert network.sides == [(64, 50)]  # within the crop size: one pass


def test_generators_know_their_training_crop_size(checkpoint):
    from pix2pixhd.config import load_config
    from pix2pixhd.models import make_generator

    config = load_config("quick")
    config.data.crop_size = 96
    assert make_generator(config).training_crop_size == 96
    generator, config, _ = load_predictor(checkpoint)
    assert generator.training_crop_size == config.data.crop_size


def test_predict_folder_writes_one_tiff_per_fov_and_channel(checkpoint, tiny_dataset, tmp_path):
    written = predict_folder(checkpoint, tiny_dataset / "test", tmp_path)
    fovs = list_fovs(tiny_dataset, "test")
    assert sorted(p.stem for p in written) == fovs
    assert all(p.parent.name == "nuclei" for p in written)
    assert read_image(written[0]).shape == read_image(
        tiny_dataset / "test" / "phase" / f"{fovs[0]}.tif").shape


def test_predict_replaces_its_own_outputs_but_not_a_users_files(checkpoint, tiny_dataset,
                                                                   tmp_path):
    from pix2pixhd.layout import DataError

    fov = list_fovs(tiny_dataset, "test")[0]
    own = tmp_path / "own"
    first = predict_folder(checkpoint, tiny_dataset / "test", own)
    assert predict_folder(checkpoint, tiny_dataset / "test", own) == first  # a rerun is fine
    users = tmp_path / "users"
    stain = np.full((8, 8), 7.0, np.float32)
    write_image(users / "nuclei" / f"{fov}.tif", stain)
    with pytest.raises(DataError, match=f"{fov}.tif is already there.*holds no units.json"):
        predict_folder(checkpoint, tiny_dataset / "test", users)
    np.testing.assert_array_equal(read_image(users / "nuclei" / f"{fov}.tif"), stain)
    assert not (users / "units.json").exists()


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


def test_an_input_folder_takes_any_tiff_case_and_outputs_keep_their_names(
    checkpoint, tiny_dataset, tmp_path, caplog
):
    """a.tif and a.tiff both come out, D.TIF is read, b.tif.bak and a hidden .part leftover of
    an interrupted write are skipped, the skipped names in one line."""
    phase = read_image(tiny_dataset / "test" / "phase" / "fov_0000.tif")
    folder = tmp_path / "in"
    for name in ("a.tif", "a.tiff", "D.TIF", "e.Tiff"):
        write_image(folder / name, phase)
    (folder / "b.tif.bak").write_bytes((folder / "a.tif").read_bytes())
    (folder / ".x.tif.abc.part").write_bytes(b"half a file")
    (folder / "c.tif.part").write_bytes(b"half a file")
    assert [p.name for p in list_tiffs(folder)] == ["D.TIF", "a.tif", "a.tiff", "e.Tiff"]
    caplog.clear()  # the listing above logs too when the package's INFO messages are on
    with caplog.at_level(logging.INFO, logger="pix2pixhd.layout"):
        written = predict_folder(checkpoint, folder, tmp_path / "out")
    assert sorted(p.name for p in written) == ["D.TIF", "a.tif", "a.tiff", "e.Tiff"]
    skipped, = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert "b.tif.bak" in skipped and ".part" not in skipped
    assert json.loads((tmp_path / "out" / "units.json").read_text())["units"] == "stain"


class WholeInputNetwork(torch.nn.Module):
    """Output = input minus its mean over the whole input: tiles would change it."""

    whole_input_statistics = True
    size_multiple = 1

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.scale * (x - x.mean(dim=(-2, -1), keepdim=True))


def test_a_network_with_whole_input_statistics_predicts_in_one_pass_up_to_the_limit(caplog):
    from pix2pixhd.predict import ONE_PASS_LIMIT, TILE_SIZE, default_tile_size

    network, normaliser = WholeInputNetwork(), IdentityNormaliser()
    assert default_tile_size(network, (ONE_PASS_LIMIT, 1500)) == ONE_PASS_LIMIT
    assert default_tile_size(torch.nn.Identity(), (2000, 2000)) == TILE_SIZE
    phase = np.random.default_rng(0).normal(size=(1200, 40)).astype(np.float32)
    phase[:600] += 5  # a mean that differs between the halves: tiles would see other means
    one_pass = predict_image(network, phase, normaliser)[0]
    np.testing.assert_allclose(one_pass, phase - phase.mean(), atol=1e-4)
    with caplog.at_level(logging.WARNING, logger="pix2pixhd.predict"):
        assert default_tile_size(network, (ONE_PASS_LIMIT + 1, 64), "big.tif") == TILE_SIZE
    assert "big.tif" in caplog.text and "tiles" in caplog.text


class IdentityNormaliser:
    target_channels = ["nuclei"]

    def normalise_input(self, x):
        return x

    def denormalise_target(self, y):
        return y
