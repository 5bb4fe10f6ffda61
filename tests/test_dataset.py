"""Tests for pix2pixhd.dataset: aligned crops and symmetries, sampling, loaders, provenance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pix2pixhd import layout
from pix2pixhd.dataset import (
    EpochSampler,
    PairedDataset,
    data_provenance,
    make_loaders,
    set_loader_epoch,
)
from pix2pixhd.layout import DataError, image_path
from pix2pixhd.normalisation import PERCENTILES, DatasetNormaliser

from .tiny_data import SIZE, nuclei_from_phase, small_config


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


# --- PairedDataset ---


def test_items_have_the_documented_shapes(dataset_root):
    normaliser = DatasetNormaliser.from_dataset(dataset_root, "phase", ["nuclei", "membrane"])
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
    normaliser = DatasetNormaliser.from_dataset(dataset_root, "phase", ["nuclei"])
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
    normaliser = DatasetNormaliser.from_dataset(dataset_root, "phase", ["nuclei"])
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
    normaliser = DatasetNormaliser.from_dataset(dataset_root, "phase", ["nuclei"])

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
    normaliser = DatasetNormaliser.from_dataset(dataset_root, "phase", ["nuclei"])
    with pytest.raises(DataError, match=r"fov_0002.*\(32, 32\).*\(32, 30\)"):
        PairedDataset(dataset_root, "train", normaliser, crop_size=8, augment=True)


def test_images_smaller_than_the_crop_are_refused_with_the_fix(dataset_root):
    normaliser = DatasetNormaliser.from_dataset(dataset_root, "phase", ["nuclei"])
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


# --- data_provenance ---


def test_provenance_records_source_counts_and_input_statistics(tiny_dataset):
    provenance = data_provenance(tiny_dataset)
    assert provenance["source"] == "synthetic" and provenance["details"]["seed"] == 0
    assert provenance["counts"] == {"train": 6, "val": 2, "test": 2}
    values = np.concatenate([layout.read_image(p).ravel()
                             for p in sorted((tiny_dataset / "train" / "phase").glob("*.tif"))])
    low, high = PERCENTILES
    expected = np.percentile(values, [low, 50, high])  # 64x64 images are not subsampled
    stats = provenance["input_statistics"]
    np.testing.assert_allclose([stats["p_low"], stats["median"], stats["p_high"]], expected,
                               rtol=1e-6)
    q25, q75 = np.percentile(values, [25, 75])
    assert stats["iqr"] == pytest.approx(q75 - q25)
    assert "normalisation" not in provenance["details"]
