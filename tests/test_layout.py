"""The dataset on disk: atomic writes with the umask's mode, safe names and output folders."""

import json
import os
import stat

import numpy as np
import pytest

from pix2pixhd import layout
from pix2pixhd.checkpoint import save_checkpoint
from pix2pixhd.layout import DataError


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_tiffs_and_checkpoints_take_the_umask_mode(tmp_path, umask_022):
    layout.write_image(tmp_path / "image.tif", np.zeros((4, 4)))
    save_checkpoint(tmp_path / "latest.pt", {"epoch": 1})
    assert mode(tmp_path / "image.tif") == 0o644
    assert mode(tmp_path / "latest.pt") == 0o644
    os.umask(0o077)
    layout.write_image(tmp_path / "private.tif", np.zeros((4, 4)))
    assert mode(tmp_path / "private.tif") == 0o600


def test_leftovers_of_a_killed_save_go_at_the_next_save(tmp_path):
    leftover = tmp_path / ".latest.pt.abc123.part"
    other = tmp_path / ".epoch_001.pt.xyz.part"
    leftover.write_bytes(b"half a checkpoint")
    other.write_bytes(b"half another")
    save_checkpoint(tmp_path / "latest.pt", {"epoch": 2})
    assert not leftover.exists() and other.exists()  # only the leftovers of the file saved
    assert sorted(p.name for p in tmp_path.iterdir()) == [".epoch_001.pt.xyz.part", "latest.pt"]


@pytest.mark.parametrize("name", ["", ".", "..", "../escape", "/abs/path", "a/b", "a\\b"])
def test_names_that_are_not_one_plain_component_are_refused(name):
    with pytest.raises(DataError, match="not a plain name"):
        layout.plain_name(name, "run name")


def test_plain_names_pass():
    assert layout.plain_name("pix2pixhd_nuclei.v2", "run name") == "pix2pixhd_nuclei.v2"


def test_outputs_inside_an_input_or_a_dataset_are_refused(tmp_path):
    data = tmp_path / "data"
    (data / "test" / "phase").mkdir(parents=True)
    (data / "dataset.json").write_text("{}")
    images = tmp_path / "images"
    images.mkdir()
    (images / "cell.tif").write_bytes(b"")
    for out, inputs, words in [
        (data / "test", [data / "test"], "inside the input"),
        (images / "pred", [images], "inside the input"),
        (images, [images / "cell.tif"], "inside the input"),
        (data / "predictions", [images], "inside the dataset"),
    ]:
        with pytest.raises(DataError, match=words):
            layout.check_output_folder(out, inputs)
    assert layout.check_output_folder(images / "pred", [images / "cell.tif"]) == images / "pred"
    assert layout.check_output_folder(tmp_path / "pred", [data / "test"]) == tmp_path / "pred"


@pytest.mark.parametrize(
    "content, words",
    [
        ([1, 2, 3], "holds a list, not the mapping"),
        ({"normalisation": [1]}, "'normalisation' holds a list, not a mapping of channels"),
        ({"normalisation": {"../x": {}}}, "channel '../x' is not a plain name"),
    ],
)
def test_a_dataset_json_of_the_wrong_shape_is_named(tmp_path, content, words):
    (tmp_path / "dataset.json").write_text(json.dumps(content))
    with pytest.raises(DataError, match=words):
        layout.read_dataset_json(tmp_path)


def test_provenance_records_source_counts_and_input_statistics(tiny_dataset):
    provenance = layout.data_provenance(tiny_dataset)
    assert provenance["source"] == "synthetic" and provenance["details"]["seed"] == 0
    assert provenance["counts"] == {"train": 6, "val": 2, "test": 2}
    values = np.concatenate([layout.read_image(p).ravel()
                             for p in sorted((tiny_dataset / "train" / "phase").glob("*.tif"))])
    expected = np.percentile(values, [1, 50, 99])  # 64x64 images are not subsampled
    stats = provenance["input_statistics"]
    np.testing.assert_allclose([stats["p1"], stats["median"], stats["p99"]], expected, rtol=1e-6)
    q25, q75 = np.percentile(values, [25, 75])
    assert stats["iqr"] == pytest.approx(q75 - q25)
