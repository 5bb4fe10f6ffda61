"""Tests for pix2pixhd.normalisation: the statistics, the two strategies, old checkpoints."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pix2pixhd import layout
from pix2pixhd.layout import DataError
from pix2pixhd.normalisation import (
    PERCENTILES,
    DatasetNormaliser,
    Normaliser,
    PerImageNormaliser,
    channel_statistics,
)

from .tiny_data import MALFORMED

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


def hand_stats() -> dict[str, dict[str, float]]:
    return {
        "phase": {"median": 10.0, "iqr": 4.0, "p_low": 0.0, "p_high": 20.0},
        "nuclei": {"median": 150.0, "iqr": 50.0, "p_low": 100.0, "p_high": 300.0},
        "membrane": {"median": 0.0, "iqr": 1.0, "p_low": -2.0, "p_high": 6.0},
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
        q25, q50, q75, low, high = np.percentile(values.astype(np.float64),
                                                 [25, 50, 75, *PERCENTILES])
        got = stats[channel]
        np.testing.assert_allclose([got["median"], got["iqr"], got["p_low"], got["p_high"]],
                                   [q50, q75 - q25, low, high], rtol=1e-6)
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
    assert "strategy" not in state["normaliser"]  # written before strategies were recorded
    generator, _, normaliser = load_predictor(path)
    assert type(normaliser) is DatasetNormaliser

    phase_stats = state["normaliser"]["stats"]["phase"]
    stain_stats = state["normaliser"]["stats"]["nuclei"]
    phase = np.random.default_rng(0).normal(phase_stats["median"], phase_stats["iqr"],
                                            (64, 64)).astype(np.float32)
    reference_generator = make_generator(from_dict(state["config"])).eval()
    reference_generator.load_state_dict(state["generator"])
    x = (phase - phase_stats["median"]) / phase_stats["iqr"]
    with torch.no_grad():
        y = reference_generator(torch.from_numpy(x)[None, None])[0].numpy()
    low, high = stain_stats["p_low"], stain_stats["p_high"]
    expected = (y + 1) / 2 * (high - low) + low
    np.testing.assert_allclose(predict_image(generator, phase, normaliser), expected,
                               rtol=1e-5, atol=1e-4 * (high - low))
