"""Tests for pix2pixhd.normalisation: the statistics, the two strategies, old checkpoints."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pix2pixhd import layout
from pix2pixhd.layout import DataError
from pix2pixhd.normalisation import (
    PERCENTILES,
    TOP_PERCENTILE,
    DatasetNormaliser,
    Normaliser,
    PerImageNormaliser,
    channel_statistics,
    refresh_dataset_statistics,
)

from .tiny_data import MALFORMED

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


def hand_stats() -> dict[str, dict[str, float]]:
    return {
        "phase": {"median": 10.0, "iqr": 4.0, "p_low": 0.0, "p_high": 20.0},
        "nuclei": {"median": 150.0, "iqr": 50.0, "p_low": 100.0, "p_high": 300.0,
                   "p_top": 1100.0},
        "membrane": {"median": 0.0, "iqr": 1.0, "p_low": -2.0, "p_high": 6.0, "p_top": 30.0},
    }


def hand_normaliser() -> DatasetNormaliser:
    return DatasetNormaliser("phase", ["nuclei", "membrane"], hand_stats())


# --- statistics ---


def test_channel_statistics_are_the_percentiles_of_every_train_pixel(tiny_dataset):
    stats = channel_statistics(tiny_dataset, "train")
    for channel in ("phase", "nuclei"):
        values = np.concatenate([layout.read_image(p).ravel() for p in
                                 sorted((tiny_dataset / "train" / channel).glob("*.tif"))])
        # 64x64 images are not subsampled, so these are every pixel's percentiles
        q25, q50, q75, low, high, top = np.percentile(values.astype(np.float64),
                                                      [25, 50, 75, *PERCENTILES, TOP_PERCENTILE])
        got = stats[channel]
        np.testing.assert_allclose(
            [got["median"], got["iqr"], got["p_low"], got["p_high"], got["p_top"]],
            [q50, q75 - q25, low, high, top], rtol=1e-6)
        assert got["mean"] == pytest.approx(values.mean(), rel=1e-5)


def test_large_images_are_measured_on_a_strided_subsample(tmp_path):
    image = np.arange(1024 * 1024, dtype=np.float32).reshape(1024, 1024)
    layout.write_image(layout.image_path(tmp_path, "train", "phase", "a"), image)
    stats = channel_statistics(tmp_path, "train")["phase"]
    every_fourth = image[::4, ::4]  # 256 x 256 = 65536 pixels
    assert stats["median"] == pytest.approx(np.median(every_fourth.astype(np.float64)))


def test_the_dataset_json_a_writer_makes_holds_the_statistics(tiny_dataset):
    info = layout.read_dataset_json(tiny_dataset)
    assert info["normalisation"] == channel_statistics(tiny_dataset, "train")
    assert info["percentiles"] == list(PERCENTILES)
    assert info["top_percentile"] == TOP_PERCENTILE


# --- the dataset strategy ---


def test_dataset_strategy_maps_known_points_by_hand():
    normaliser = hand_normaliser()
    phase = np.array([10.0, 14.0, 6.0], dtype=np.float32)
    np.testing.assert_allclose(normaliser.normalise_input(phase), [0.0, 1.0, -1.0])
    stains = np.array([[[100.0, 300.0, 200.0]], [[-2.0, 6.0, 2.0]]], dtype=np.float32)  # (2,1,3)
    np.testing.assert_allclose(normaliser.normalise_target(stains), [[[-1, 1, 0]], [[-1, 1, 0]]])


def test_normalise_target_round_trips():
    rng = np.random.default_rng(0)
    normaliser = hand_normaliser()
    stains = rng.uniform(-50, 500, (3, 2, 8, 8)).astype(np.float32)  # (B, C, H, W)
    back = normaliser.denormalise_target(normaliser.normalise_target(stains))
    np.testing.assert_allclose(back, stains, rtol=1e-5, atol=1e-3)
    assert back.dtype == np.float32


@pytest.mark.parametrize("strategy", [DatasetNormaliser, PerImageNormaliser])
def test_numpy_and_torch_agree(strategy):
    normaliser = strategy("phase", ["nuclei", "membrane"], hand_stats())
    stains = np.random.default_rng(0).uniform(0, 300, (2, 5, 5)).astype(np.float32)
    from_numpy = normaliser.normalise_target(stains)
    from_torch = normaliser.normalise_target(torch.from_numpy(stains))
    assert isinstance(from_torch, torch.Tensor) and from_torch.dtype == torch.float32
    np.testing.assert_allclose(from_torch.numpy(), from_numpy, rtol=1e-6)
    np.testing.assert_allclose(
        normaliser.normalise_input(torch.from_numpy(stains[0])).numpy(),
        normaliser.normalise_input(stains[0]),
        rtol=1e-6,
    )


def test_single_channel_target_accepts_a_row_of_values():
    """The notebook normalises np.linspace(p_low, p_high, 5)[None]: shape (1, 5)."""
    normaliser = DatasetNormaliser("phase", ["nuclei"], hand_stats())
    values = np.linspace(100.0, 300.0, 5)[None]
    np.testing.assert_allclose(normaliser.normalise_target(values)[0], [-1, -0.5, 0, 0.5, 1])


def test_wrong_channel_count_is_refused():
    with pytest.raises(ValueError, match="channels"):
        hand_normaliser().normalise_target(np.zeros((3, 4, 4)))


def test_dataset_strategy_from_dataset_uses_dataset_json(dataset_root):
    normaliser = DatasetNormaliser.from_dataset(dataset_root, "phase", ["nuclei"])
    stats = json.loads((dataset_root / "dataset.json").read_text())["normalisation"]
    assert normaliser.stats["phase"]["median"] == stats["phase"]["median"]
    p_low, p_high = stats["nuclei"]["p_low"], stats["nuclei"]["p_high"]
    np.testing.assert_allclose(
        normaliser.normalise_target(np.array([[[p_low, p_high]]])), [[[-1.0, 1.0]]]
    )


def test_missing_channel_statistics_name_the_channel(dataset_root):
    data = json.loads((dataset_root / "dataset.json").read_text())
    del data["normalisation"]["membrane"]
    (dataset_root / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="'membrane'"):
        DatasetNormaliser.from_dataset(dataset_root, "phase", ["membrane"])
    with pytest.raises(DataError, match="'membrane'"):
        DatasetNormaliser("phase", ["membrane"], {"phase": {"median": 0.0, "iqr": 1.0}})


def test_a_constant_train_channel_is_refused_naming_the_file(dataset_root):
    data = json.loads((dataset_root / "dataset.json").read_text())
    data["normalisation"]["phase"]["iqr"] = 0.0
    (dataset_root / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"dataset\.json: channel 'phase' has an interquartile "
                                        r"range of 0\.0"):
        DatasetNormaliser.from_dataset(dataset_root, "phase", ["nuclei"])


@pytest.mark.parametrize("case", MALFORMED)
def test_training_refuses_a_malformed_dataset_json_in_one_line(dataset_root, case):
    damage, words = MALFORMED[case]
    damage(dataset_root)
    with pytest.raises(DataError) as error:
        DatasetNormaliser.from_dataset(dataset_root, "phase", ["nuclei"])
    message = str(error.value)
    assert "\n" not in message and str(dataset_root / "dataset.json") in message
    assert words in message


def test_normalising_by_the_image_undoes_its_units():
    """An image in other units (a * phase + b) gives the same network input as the phase."""
    rng = np.random.default_rng(0)
    phase = rng.normal(0.3, 0.5, (32, 32)).astype(np.float64)
    normaliser = hand_normaliser()
    native = normaliser.for_image(phase).normalise_input(phase)
    other_units = normaliser.for_image(200 * phase + 1000).normalise_input(200 * phase + 1000)
    np.testing.assert_allclose(other_units, native, atol=1e-9)
    q25, q50, q75 = np.percentile(native, [25, 50, 75])
    assert abs(q50) < 1e-12 and q75 - q25 == pytest.approx(1)
    # the targets keep the train split's range
    np.testing.assert_allclose(normaliser.for_image(phase).normalise_target(
        np.array([[[100.0]], [[6.0]]])), [[[-1.0]], [[1.0]]])


# --- the asinh stain map ---


def asinh_normaliser(**stats) -> DatasetNormaliser:
    return DatasetNormaliser("phase", ["nuclei", "membrane"], hand_stats() | stats,
                             stain_map="asinh")


def test_asinh_map_matches_values_computed_by_hand():
    """nuclei: p_low 100, p_high 300, p_top 1100, so s = 200 / 4 = 50 and p_top - p_low = 20 s;
    asinh(u) = ln(u + sqrt(u^2 + 1)), and a = 2 asinh(20) / 1.8 puts p_top at +0.8."""
    normaliser = asinh_normaliser()
    stains = np.array([[[400.0, 1100.0, 100.0]], [[10.0, 30.0, -2.0]]])  # (C=2, 1, 3)
    y = normaliser.normalise_target(stains)
    # 400 is 6 s above p_low: y = -1 + 2 asinh(6) / a = -1 + 1.8 ln(6 + sqrt 37) / ln(20 + sqrt 401)
    expected = -1 + 1.8 * math.log(6 + math.sqrt(37)) / math.log(20 + math.sqrt(401))
    assert expected == pytest.approx(0.215666, abs=1e-6)
    np.testing.assert_allclose(y[0, 0], [expected, 0.8, -1.0], rtol=1e-12, atol=1e-12)
    # membrane: s = 2, 10 is 6 s above p_low = -2 and 30 is 16 s above it
    membrane = -1 + 1.8 * math.log(6 + math.sqrt(37)) / math.log(16 + math.sqrt(257))
    np.testing.assert_allclose(y[1, 0], [membrane, 0.8, -1.0], rtol=1e-12, atol=1e-12)
    # the ceiling, +1: asinh(u) = a, so u = sinh(a) = ((20 + sqrt 401)^(10/9) - its inverse) / 2
    root = 20 + math.sqrt(401)
    assert normaliser.tanh_ceiling()["nuclei"] == pytest.approx(
        100 + 50 * (root ** (10 / 9) - root ** (-10 / 9)) / 2, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_asinh_map_round_trips_below_within_and_above_the_train_range(dtype):
    rng = np.random.default_rng(0)
    normaliser = asinh_normaliser()
    stains = np.stack([rng.uniform(-500, 20000, (3, 16, 16)),
                       rng.uniform(-10, 200, (3, 16, 16))], axis=1).astype(dtype)  # (B, 2, H, W)
    back = normaliser.denormalise_target(normaliser.normalise_target(stains))
    assert back.dtype == dtype
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(back, stains, rtol=rtol, atol=rtol * 200)
    tensor = torch.from_numpy(stains)
    np.testing.assert_allclose(normaliser.denormalise_target(normaliser.normalise_target(tensor))
                               .numpy(), stains, rtol=rtol, atol=rtol * 200)


def test_asinh_map_is_strictly_increasing():
    normaliser = DatasetNormaliser("phase", ["nuclei"], hand_stats(), stain_map="asinh")
    stains = np.linspace(-1000.0, 100000.0, 200001)[None]  # (1, N): one channel
    assert np.all(np.diff(normaliser.normalise_target(stains)[0]) > 0)
    outputs = np.linspace(-3.0, 3.0, 20001)[None]
    assert np.all(np.diff(normaliser.denormalise_target(outputs)[0]) > 0)


def test_asinh_gives_ordinary_stain_more_units_than_a_linear_map_reaching_as_far():
    """The point of the compression: a linear map whose ceiling were as high would leave the
    span p_low..p_high (background to ordinary nuclei) a few hundredths of the output."""
    normaliser = DatasetNormaliser("phase", ["nuclei"], hand_stats(), stain_map="asinh")
    ceiling = normaliser.tanh_ceiling()["nuclei"]
    span = np.diff(normaliser.normalise_target(np.array([[100.0, 300.0]]))[0])[0]
    linear_span = 2 * (300 - 100) / (ceiling - 100)
    assert span > 3 * linear_span


def test_the_stain_map_is_recorded_and_a_record_without_one_is_linear(tmp_path):
    normaliser = asinh_normaliser()
    torch.save({"normaliser": normaliser.to_dict()}, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)["normaliser"]
    assert loaded["stain_map"] == "asinh" and loaded["stats"]["nuclei"]["p_top"] == 1100.0
    assert Normaliser.from_dict(loaded) == normaliser
    old = {key: value for key, value in loaded.items() if key != "stain_map"}
    assert Normaliser.from_dict(old).stain_map == "linear"
    with pytest.raises(DataError, match="stain map 'log' is not one of linear, asinh"):
        Normaliser.from_dict(loaded | {"stain_map": "log"})


def test_for_image_keeps_the_stain_map():
    normaliser = asinh_normaliser()
    phase = np.random.default_rng(0).normal(3.0, 2.0, (16, 16))
    assert normaliser.for_image(phase).stain_map == "asinh"
    stains = np.array([[[400.0]], [[10.0]]])
    np.testing.assert_allclose(normaliser.for_image(phase).normalise_target(stains),
                               normaliser.normalise_target(stains))


@pytest.mark.parametrize("p_top, words", [
    (None, "no p_top for channel 'nuclei'"),
    (float("nan"), "normalisation.nuclei.p_top is nan"),
    (200.0, "normalisation.nuclei.p_top is 200.0, not a finite number at or above p_high 300"),
])
def test_asinh_without_a_usable_p_top_is_refused(p_top, words):
    stats = hand_stats()
    if p_top is None:
        del stats["nuclei"]["p_top"]
    else:
        stats["nuclei"]["p_top"] = p_top
    values = {"input_channel": "phase", "target_channels": ["nuclei"], "stats": stats}
    Normaliser.from_dict(values)  # the linear map does not need it
    with pytest.raises(DataError, match=re.escape(words)):
        Normaliser.from_dict(values | {"stain_map": "asinh"})


def test_a_dataset_json_without_p_top_names_the_file_and_the_command_that_adds_it(
        dataset_root, capsys):
    from pix2pixhd.cli import main

    path = dataset_root / "dataset.json"
    info = json.loads(path.read_text())
    for stats in info["normalisation"].values():
        del stats["p_top"]
    del info["top_percentile"]
    path.write_text(json.dumps(info))
    DatasetNormaliser.from_dataset(dataset_root, "phase", ["nuclei"])  # linear: still fine
    with pytest.raises(DataError) as error:
        DatasetNormaliser.from_dataset(dataset_root, "phase", ["nuclei"], stain_map="asinh")
    assert str(error.value) == (
        f"{path} has no p_top for 'nuclei', which data.stain_map=asinh needs (the file predates "
        f"it): add it with `python -m pix2pixhd data statistics {dataset_root}`, or set "
        "data.stain_map=linear")
    assert main(["data", "statistics", str(dataset_root)]) == 0
    assert str(path) in capsys.readouterr().out
    again = json.loads(path.read_text())
    assert again["normalisation"] == channel_statistics(dataset_root, "train")
    assert again["source"] == info["source"] and again["top_percentile"] == TOP_PERCENTILE
    DatasetNormaliser.from_dataset(dataset_root, "phase", ["nuclei"], stain_map="asinh")


def test_refreshing_the_statistics_keeps_the_other_entries(tiny_dataset, tmp_path):
    import shutil

    root = shutil.copytree(tiny_dataset, tmp_path / "data")
    before = layout.read_dataset_json(root)
    refresh_dataset_statistics(root)
    assert layout.read_dataset_json(root) == before  # same images, same numbers


def test_asinh_leaves_no_more_than_a_ten_thousandth_of_real_test_pixels_out_of_reach(tmp_path):
    """On a small synthetic dataset (seed 0): the share of the real test stain above the
    brightest value a tanh output can take is at most 0.01 % with asinh; the linear map's
    is 50 times that, so the check can tell them apart."""
    from pix2pixhd.synthetic import make_dataset

    root = make_dataset(tmp_path / "data", n_train=24, n_val=1, n_test=8, size=256, seed=0)
    test = np.concatenate([layout.read_image(path).ravel()
                           for path in sorted((root / "test" / "nuclei").glob("*.tif"))])
    share = {}
    for stain_map in ("asinh", "linear"):
        normaliser = DatasetNormaliser.from_dataset(root, "phase", ["nuclei"],
                                                    stain_map=stain_map)
        share[stain_map] = float(np.mean(test > normaliser.tanh_ceiling()["nuclei"]))
    assert share["asinh"] <= 1e-4
    assert share["linear"] > 50 * 1e-4


# --- the per-image strategy (VisCy's) ---


def test_per_image_strategy_maps_known_points_by_hand():
    normaliser = PerImageNormaliser("phase", ["nuclei"], {"nuclei": {"median": 150.0,
                                                                    "iqr": 50.0}})
    phase = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])  # median 3, quartiles 2 and 4: IQR 2
    np.testing.assert_allclose(normaliser.normalise_input(phase), [[-1, -0.5, 0, 0.5, 1]])
    np.testing.assert_allclose(normaliser.normalise_input(10 * phase - 7), [[-1, -0.5, 0, 0.5, 1]])
    stain = np.array([[[100.0, 150.0, 250.0]]])
    np.testing.assert_allclose(normaliser.normalise_target(stain), [[[-1.0, 0.0, 2.0]]])
    np.testing.assert_allclose(normaliser.denormalise_target(np.array([[[-1.0, 0.0, 2.0]]])),
                               stain)
    assert normaliser.for_image(phase) is normaliser


def test_per_image_strategy_needs_only_the_stains_median_and_iqr():
    only_median_iqr = {"nuclei": {"median": 150.0, "iqr": 50.0}}
    PerImageNormaliser("phase", ["nuclei"], only_median_iqr)  # no phase, no p_low needed
    with pytest.raises(DataError, match=r"\(p_low, p_high\) for channel 'nuclei'"):
        DatasetNormaliser("phase", ["nuclei"], only_median_iqr | {"phase": {"median": 0.0,
                                                                            "iqr": 1.0}})


def test_a_constant_image_cannot_be_scaled_by_itself():
    normaliser = PerImageNormaliser("phase", ["nuclei"], hand_stats())
    with pytest.raises(DataError, match="interquartile range of 0.0"):
        normaliser.normalise_input(np.full((8, 8), 3.0))
    with pytest.raises(DataError, match="interquartile range of 0.0"):
        hand_normaliser().for_image(np.full((8, 8), 3.0))


# --- checkpoints: the strategy is recorded, old ones still load ---


@pytest.mark.parametrize("strategy", [DatasetNormaliser, PerImageNormaliser])
def test_the_strategy_survives_a_weights_only_checkpoint(tmp_path, strategy):
    normaliser = strategy("phase", ["nuclei", "membrane"], hand_stats())
    torch.save({"normaliser": normaliser.to_dict()}, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)["normaliser"]
    json.dumps(loaded)  # plain types only
    assert loaded["strategy"] == strategy.strategy
    back = Normaliser.from_dict(loaded)
    assert type(back) is strategy and back == normaliser


@pytest.mark.parametrize("stats, words", [
    ([1.0, 2.0], "statistics are a list, not a mapping"),
    ({"phase": {"median": "0", "iqr": 1.0}, "nuclei": {"p_low": 0.0, "p_high": 1.0}},
     "normalisation.phase.median is '0', not a finite number"),
    ({"phase": {"median": 0.0, "iqr": 1.0}, "nuclei": {"p_low": 0.0, "p_high": float("nan")}},
     "normalisation.nuclei.p_high is nan, not a finite number"),
])
def test_malformed_statistics_in_a_checkpoint_are_named(stats, words):
    values = {"input_channel": "phase", "target_channels": ["nuclei"], "stats": stats}
    with pytest.raises(DataError, match=re.escape(words)):
        Normaliser.from_dict(values)


def test_a_normaliser_dict_without_a_strategy_is_the_dataset_strategy():
    """Checkpoints written before strategies were recorded hold only these three keys."""
    old = {"input_channel": "phase", "target_channels": ["nuclei"], "stats": hand_stats()}
    assert Normaliser.from_dict(old) == DatasetNormaliser("phase", ["nuclei"], hand_stats())
    with pytest.raises(DataError, match="'histogram' is not one of dataset, per_image"):
        Normaliser.from_dict(old | {"strategy": "histogram"})


@pytest.mark.parametrize("name", ["pix2pixhd_nuclei", "regression_nuclei", "viscy_nuclei"])
def test_shipped_checkpoints_predict_as_their_recorded_statistics_say(name):
    """The reference scales by hand with the numbers in the file, not with the module."""
    if name.startswith("viscy"):
        pytest.importorskip("viscy")
    from pix2pixhd.checkpoint import load_checkpoint
    from pix2pixhd.config import from_dict
    from pix2pixhd.models import make_generator
    from pix2pixhd.predict import load_predictor, predict_image

    path = CHECKPOINTS / name / "latest.pt"
    state = load_checkpoint(path)
    record = state["normaliser"]
    assert (record["strategy"], record["stain_map"]) == ("dataset", "asinh")
    generator, _, normaliser = load_predictor(path)
    assert type(normaliser) is DatasetNormaliser and normaliser.stain_map == "asinh"

    phase_stats = state["normaliser"]["stats"]["phase"]
    stain_stats = state["normaliser"]["stats"]["nuclei"]
    phase = np.random.default_rng(0).normal(phase_stats["median"], phase_stats["iqr"],
                                            (64, 64)).astype(np.float32)
    reference_generator = make_generator(from_dict(state["config"])).eval()
    reference_generator.load_state_dict(state["generator"])
    x = (phase - phase_stats["median"]) / phase_stats["iqr"]
    with torch.no_grad():
        y = reference_generator(torch.from_numpy(x)[None, None])[0].numpy()
    low, high, top = stain_stats["p_low"], stain_stats["p_high"], stain_stats["p_top"]
    # asinh: s = (p_high - p_low) / 4, and a puts p_top at +0.8
    softness = (high - low) / 4
    scale = 2 * math.asinh((top - low) / softness) / 1.8
    expected = low + softness * np.sinh((y.astype(np.float64) + 1) / 2 * scale)
    np.testing.assert_allclose(predict_image(generator, phase, normaliser), expected,
                               rtol=1e-4, atol=1e-4 * (high - low))


def test_linear_units_of_a_normalised_stain_match_values_computed_by_hand():
    """nuclei p_low 100, p_high 300: linear units are (x - 100) / 100 - 1; membrane p_low -2,
    p_high 6: (x + 2) / 4 - 1. The stains are 400, 1100 and 100; 10, 30 and -2."""
    normaliser = asinh_normaliser()
    stains = np.array([[[400.0, 1100.0, 100.0]], [[10.0, 30.0, -2.0]]])
    linear = normaliser.in_linear_units(normaliser.normalise_target(stains))
    np.testing.assert_allclose(linear[0, 0], [2.0, 9.0, -1.0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(linear[1, 0], [2.0, 7.0, -1.0], rtol=1e-9, atol=1e-9)
    # under the linear map they are the normalised stain itself
    plain = hand_normaliser()
    y = plain.normalise_target(stains)
    np.testing.assert_allclose(plain.in_linear_units(y), y, rtol=1e-12, atol=1e-12)


def test_linear_units_pass_gradients_that_grow_with_the_stain():
    """The point of loss.l1_units=stain: under asinh, one normalised unit near the top of the
    range is worth many more stain units than one near the background."""
    normaliser = asinh_normaliser()
    stains = torch.tensor([[[100.0, 300.0, 1100.0]], [[-2.0, 6.0, 30.0]]], dtype=torch.float64)
    y = normaliser.normalise_target(stains).requires_grad_(True)
    normaliser.in_linear_units(y).sum().backward()
    slopes = y.grad[0, 0]
    assert slopes[0] < slopes[1] < slopes[2]
    # d(linear)/dy = (dx/dy) / 100 with x = 100 + 50 sinh((y + 1) a / 2): at x = 1100 (u = 20)
    scale = 2 * math.asinh(20) / 1.8
    assert slopes[2].item() == pytest.approx(50 * math.cosh(math.asinh(20)) * scale / 2 / 100,
                                             rel=1e-9)
