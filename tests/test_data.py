"""Tests for pix2pixhd.data: normalisation, aligned crops and symmetries, sampling, checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pix2pixhd import layout
from pix2pixhd.config import Config
from pix2pixhd.data import (
    EpochSampler,
    Normaliser,
    PairedDataset,
    check_dataset,
    check_training_data,
    make_loaders,
    set_loader_epoch,
)
from pix2pixhd.layout import DataError, image_path

SIZE = 32


def nuclei_from_phase(phase: np.ndarray) -> np.ndarray:
    """The tiny datasets' stain is a known pixel-wise function of the phase image."""
    return 3.0 * phase + 5.0


def write_dataset(root: Path, *, n_train: int = 4, n_val: int = 2, n_test: int = 2) -> Path:
    """A tiny valid dataset: phase, nuclei, membrane images and test masks, SIZE x SIZE."""
    rng = np.random.default_rng(1)
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        for i in range(count):
            fov = f"fov_{i:04d}"
            phase = rng.normal(100.0, 10.0, (SIZE, SIZE)).astype(np.float32)
            layout.write_image(image_path(root, split, "phase", fov), phase)
            layout.write_image(image_path(root, split, "nuclei", fov), nuclei_from_phase(phase))
            layout.write_image(image_path(root, split, "membrane", fov), -phase)
            if split == "test":
                mask = (phase > 100).astype(np.uint16)
                layout.write_mask(image_path(root, split, layout.MASKS, fov), mask)
    layout.write_dataset_json(root, {"source": "test"})
    return root


@pytest.fixture
def dataset_root(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "data")


def hand_normaliser() -> Normaliser:
    stats = {
        "phase": {"median": 10.0, "iqr": 4.0, "p_low": 0.0, "p_high": 20.0},
        "nuclei": {"median": 150.0, "iqr": 50.0, "p_low": 100.0, "p_high": 300.0},
        "membrane": {"median": 0.0, "iqr": 1.0, "p_low": -2.0, "p_high": 6.0},
    }
    return Normaliser("phase", ["nuclei", "membrane"], stats)


def all_symmetries(image: np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of a square, built independently of data.py."""
    return [np.rot90(image, r) for r in range(4)] + [np.rot90(image.T, r) for r in range(4)]


def find_window(crop: np.ndarray, image: np.ndarray) -> tuple[int, int, int] | None:
    """(symmetry, top, left) such that crop is a window of that symmetry of image, or None."""
    h, w = crop.shape
    for k, transformed in enumerate(all_symmetries(image)):
        windows = np.lib.stride_tricks.sliding_window_view(transformed, (h, w))
        hits = np.argwhere((windows == crop).all(axis=(-2, -1)))
        if len(hits):
            return k, int(hits[0][0]), int(hits[0][1])
    return None


# --- Normaliser ---


def test_normaliser_maps_known_points_by_hand():
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


def test_normaliser_numpy_and_torch_agree():
    normaliser = hand_normaliser()
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
    normaliser = Normaliser("phase", ["nuclei"], hand_normaliser().stats)
    values = np.linspace(100.0, 300.0, 5)[None]
    np.testing.assert_allclose(normaliser.normalise_target(values)[0], [-1, -0.5, 0, 0.5, 1])


def test_wrong_channel_count_is_refused():
    with pytest.raises(ValueError, match="channels"):
        hand_normaliser().normalise_target(np.zeros((3, 4, 4)))


def test_normaliser_from_dataset_uses_dataset_json(dataset_root):
    normaliser = Normaliser.from_dataset(dataset_root, "phase", ["nuclei"])
    stats = json.loads((dataset_root / "dataset.json").read_text())["normalisation"]
    assert normaliser.stats["phase"]["median"] == stats["phase"]["median"]
    p_low, p_high = stats["nuclei"]["p_low"], stats["nuclei"]["p_high"]
    np.testing.assert_allclose(
        normaliser.normalise_target(np.array([[[p_low, p_high]]])), [[[-1.0, 1.0]]]
    )


def test_normaliser_dict_survives_a_weights_only_checkpoint(tmp_path):
    normaliser = hand_normaliser()
    torch.save({"normaliser": normaliser.to_dict()}, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)["normaliser"]
    assert Normaliser.from_dict(loaded) == normaliser
    json.dumps(loaded)  # plain types only


def test_missing_channel_statistics_name_the_channel(dataset_root):
    data = json.loads((dataset_root / "dataset.json").read_text())
    del data["normalisation"]["membrane"]
    (dataset_root / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="'membrane'"):
        Normaliser.from_dataset(dataset_root, "phase", ["membrane"])
    with pytest.raises(DataError, match="'membrane'"):
        Normaliser("phase", ["membrane"], {"phase": {"median": 0.0, "iqr": 1.0}})


# --- PairedDataset ---


def test_items_have_the_documented_shapes(dataset_root):
    normaliser = Normaliser.from_dataset(dataset_root, "phase", ["nuclei", "membrane"])
    dataset = PairedDataset(
        dataset_root, "train", normaliser, crop_size=16, augment=True, crops_per_image=3
    )
    assert len(dataset) == 4 * 3
    item = dataset[5]
    assert item["input"].shape == (1, 16, 16) and item["input"].dtype == torch.float32
    assert item["target"].shape == (2, 16, 16) and item["target"].dtype == torch.float32
    assert item["input"].is_contiguous() and item["target"].is_contiguous()
    assert item["fov"] == "fov_0001"


def test_augmented_crops_stay_aligned_and_are_true_windows(dataset_root):
    normaliser = Normaliser.from_dataset(dataset_root, "phase", ["nuclei"])
    dataset = PairedDataset(dataset_root, "train", normaliser, crop_size=12, augment=True)
    seen = set()
    for epoch in range(20):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item = dataset[index]
            phase = normaliser.stats["phase"]
            raw_input = item["input"][0].numpy() * phase["iqr"] + phase["median"]
            raw_target = normaliser.denormalise_target(item["target"].numpy())[0]
            np.testing.assert_allclose(raw_target, nuclei_from_phase(raw_input), rtol=1e-4)
            original = layout.read_image(image_path(dataset_root, "train", "phase", item["fov"]))
            found = find_window(item["input"][0].numpy(), normaliser.normalise_input(original))
            assert found is not None, "the crop is not a window of any symmetry of the image"
            seen.add(found[0])
    assert seen == set(range(8))


def test_centre_crop_without_augmentation(dataset_root):
    normaliser = Normaliser.from_dataset(dataset_root, "phase", ["nuclei"])
    dataset = PairedDataset(dataset_root, "val", normaliser, crop_size=10, augment=False)
    original = normaliser.normalise_input(
        layout.read_image(image_path(dataset_root, "val", "phase", "fov_0000"))
    )
    for epoch in (0, 7):
        dataset.set_epoch(epoch)
        np.testing.assert_array_equal(dataset[0]["input"][0].numpy(), original[11:21, 11:21])
    whole = PairedDataset(dataset_root, "val", normaliser, crop_size=0, augment=False)
    assert whole[1]["input"].shape == (1, SIZE, SIZE)


def test_same_seed_and_epoch_give_the_same_items(dataset_root):
    normaliser = Normaliser.from_dataset(dataset_root, "phase", ["nuclei"])

    def items(seed, epoch):
        dataset = PairedDataset(
            dataset_root, "train", normaliser, crop_size=12, augment=True, seed=seed
        )
        dataset.set_epoch(epoch)
        return torch.stack([dataset[i]["input"] for i in range(len(dataset))])

    assert torch.equal(items(0, 2), items(0, 2))
    assert not torch.equal(items(0, 2), items(0, 3))
    assert not torch.equal(items(0, 2), items(1, 2))


def test_channels_of_different_shapes_are_refused(dataset_root):
    layout.write_image(image_path(dataset_root, "train", "nuclei", "fov_0002"), np.ones((SIZE, 30)))
    normaliser = Normaliser.from_dataset(dataset_root, "phase", ["nuclei"])
    with pytest.raises(DataError, match=r"fov_0002.*\(32, 32\).*\(32, 30\)"):
        PairedDataset(dataset_root, "train", normaliser, crop_size=8, augment=True)


def test_images_smaller_than_the_crop_are_refused_with_the_fix(dataset_root):
    normaliser = Normaliser.from_dataset(dataset_root, "phase", ["nuclei"])
    with pytest.raises(DataError, match=r"fov_0000\.tif is 32x32.*crop of 40.*data\.crop_size"):
        PairedDataset(dataset_root, "train", normaliser, crop_size=40, augment=True)


# --- EpochSampler ---


@pytest.mark.parametrize("n, world_size", [(10, 1), (10, 3), (7, 4), (12, 4)])
def test_sampler_shards_are_equal_and_cover_the_dataset(n, world_size):
    shards = []
    for rank in range(world_size):
        sampler = EpochSampler(n, seed=3, rank=rank, world_size=world_size)
        sampler.set_epoch(5)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler) == -(-n // world_size)
    everything = [i for shard in shards for i in shard]
    assert set(everything) == set(range(n))
    assert len(everything) - n < world_size  # only the wrap-around padding repeats
    if n % world_size == 0:
        assert all(not set(a) & set(b) for a in shards for b in shards if a is not b)


def test_sampler_order_depends_only_on_seed_and_epoch():
    def order(seed, epoch):
        sampler = EpochSampler(50, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 1) == order(0, 1)
    assert sorted(order(0, 1)) == list(range(50))
    assert order(0, 1) != order(0, 2)
    assert order(0, 1) != order(1, 0)
    assert list(EpochSampler(5, seed=0, shuffle=False)) == [0, 1, 2, 3, 4]


# --- make_loaders ---


def small_config(root: Path, **data) -> Config:
    config = Config()
    config.data.root = str(root)
    config.data.crop_size = 16
    config.data.val_crop_size = 0
    config.data.batch_size = 2
    config.data.num_workers = 0
    config.data.target_channels = ["nuclei", "membrane"]
    for key, value in data.items():
        setattr(config.data, key, value)
    return config


def test_make_loaders_shapes(dataset_root):
    train_loader, val_loader = make_loaders(small_config(dataset_root))
    batch = next(iter(train_loader))
    assert batch["input"].shape == (2, 1, 16, 16)
    assert batch["target"].shape == (2, 2, 16, 16)
    assert len(batch["fov"]) == 2
    assert len(train_loader) == 2
    val = list(val_loader)
    assert len(val) == 2 and val[0]["input"].shape == (1, 1, SIZE, SIZE)
    assert [b["fov"][0] for b in val] == ["fov_0000", "fov_0001"]
    assert train_loader.dataset.normaliser.target_channels == ["nuclei", "membrane"]
    assert val_loader.dataset.normaliser is train_loader.dataset.normaliser


def test_make_loaders_shards_by_rank(dataset_root):
    config = small_config(dataset_root, batch_size=1, crops_per_image=2)
    fovs = []
    for rank in range(2):
        train_loader, _ = make_loaders(config, rank=rank, world_size=2)
        set_loader_epoch(train_loader, 1)
        assert len(train_loader) == 4
        fovs += [tuple(batch["fov"]) for batch in train_loader]
    assert sorted(fovs) == sorted((f"fov_{i:04d}",) for i in range(4) for _ in range(2))


def test_an_epoch_is_the_same_whatever_the_workers(dataset_root):
    def first_batch(epoch, workers):
        train_loader, _ = make_loaders(small_config(dataset_root, num_workers=workers))
        set_loader_epoch(train_loader, epoch)
        return next(iter(train_loader))["input"]

    assert torch.equal(first_batch(1, 0), first_batch(1, 2))
    assert not torch.equal(first_batch(1, 0), first_batch(2, 0))


def test_make_loaders_without_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="pix2pixhd data synthetic"):
        make_loaders(small_config(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="dataset.json"):
        make_loaders(small_config(tmp_path / "empty"))


# --- check_dataset ---


def test_check_dataset_accepts_a_good_dataset(dataset_root):
    assert check_dataset(dataset_root, crop_size=32) == []


def _write_garbage(root: Path) -> Path:
    path = image_path(root, "train", "nuclei", "fov_0001")
    path.write_bytes(b"this is not a tiff")
    return path


def _write_3d(root: Path) -> Path:
    path = image_path(root, "val", "phase", "fov_0000")
    import tifffile

    tifffile.imwrite(path, np.zeros((3, SIZE, SIZE), np.float32), photometric="minisblack")
    return path


def _write_nan(root: Path) -> Path:
    path = image_path(root, "train", "phase", "fov_0003")
    image = np.zeros((SIZE, SIZE), np.float32)
    image[4, 4] = np.nan
    layout.write_image(path, image)
    return path


def _remove_channel(root: Path) -> Path:
    path = image_path(root, "train", "membrane", "fov_0002")
    path.unlink()
    return path


def _write_other_shape(root: Path) -> Path:
    path = image_path(root, "test", "nuclei", "fov_0001")
    layout.write_image(path, np.zeros((SIZE, SIZE - 4)))
    return path


def _write_float_mask(root: Path) -> Path:
    path = image_path(root, "test", layout.MASKS, "fov_0000")
    layout.write_image(path, np.zeros((SIZE, SIZE)))
    return path


def _write_small_mask(root: Path) -> Path:
    path = image_path(root, "test", layout.MASKS, "fov_0001")
    layout.write_mask(path, np.zeros((SIZE // 2, SIZE)))
    return path


def _empty_split(root: Path) -> Path:
    for path in (root / "val").rglob("*.tif"):
        path.unlink()
    return root / "val"


def _remove_dataset_json(root: Path) -> Path:
    path = root / "dataset.json"
    path.unlink()
    return path


@pytest.mark.parametrize(
    "damage",
    [
        _write_garbage,
        _write_3d,
        _write_nan,
        _remove_channel,
        _write_other_shape,
        _write_float_mask,
        _write_small_mask,
        _empty_split,
        _remove_dataset_json,
    ],
)
def test_check_dataset_reports_each_problem_once_by_name(dataset_root, damage):
    path = damage(dataset_root)
    problems = check_dataset(dataset_root)
    assert len(problems) == 1, problems
    assert str(path) in problems[0]


def test_check_dataset_reports_images_smaller_than_the_crop(dataset_root):
    problems = check_dataset(dataset_root, crop_size=SIZE + 1)
    assert len(problems) == 8  # every field of view of every split
    assert all("data.crop_size" in problem for problem in problems)
    assert str(image_path(dataset_root, "train", "phase", "fov_0000")) in problems[0]


def test_check_dataset_on_a_missing_folder_says_how_to_get_data(tmp_path):
    problems = check_dataset(tmp_path / "nowhere")
    assert len(problems) == 1
    assert "nowhere" in problems[0] and "pix2pixhd data synthetic" in problems[0]


def _write_pixels(kind: str):
    def damage(root: Path) -> Path:
        import tifffile

        path = image_path(root, "train", "phase", "fov_0001")
        image = np.ones((SIZE, SIZE), np.float32)
        if kind == "inf":
            image[3, 3] = np.inf
            tifffile.imwrite(path, image)
        elif kind == "complex":
            tifffile.imwrite(path, image.astype(np.complex64))
        elif kind == "bool":
            tifffile.imwrite(path, image > 0)
        elif kind == "truncated":
            tifffile.imwrite(path, image)
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path

    return damage


@pytest.mark.parametrize("kind, words", [
    ("inf", "NaN or infinite pixels"), ("complex", "pixel type complex64"),
    ("bool", "pixel type bool"), ("truncated", "not a readable TIFF"),
])
def test_training_start_and_data_check_find_the_same_bad_pixels(dataset_root, kind, words):
    path = _write_pixels(kind)(dataset_root)
    problems = check_dataset(dataset_root)
    assert len(problems) == 1 and str(path) in problems[0] and words in problems[0]
    with pytest.raises(DataError) as error:
        check_training_data(small_config(dataset_root).data)
    assert str(error.value) == problems[0]


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
