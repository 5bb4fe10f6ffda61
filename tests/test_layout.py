"""The dataset on disk: atomic writes with the umask's mode, safe names and output folders."""

import json
import os
import re
import stat

import numpy as np
import pytest

from pix2pixhd import files, layout
from pix2pixhd.checkpoint import save_checkpoint
from pix2pixhd.layout import DataError

from .tiny_data import MALFORMED


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


@pytest.mark.parametrize("case", MALFORMED)
def test_every_reader_refuses_a_malformed_dataset_json_in_one_line(dataset_root, case):
    damage, words = MALFORMED[case]
    damage(dataset_root)
    with pytest.raises(DataError) as error:
        layout.read_dataset_json(dataset_root)
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(dataset_root / "dataset.json"))
    assert words in message


@pytest.mark.parametrize(
    "change, words",
    [
        ({"source": 3}, "'source' is 3, not a name"),
        ({"normalisation": {"phase": 1.5}}, "normalisation.phase holds a float"),
        ({"normalisation": {"phase": {"median": 0.0, "iqr": 1.0}}},
         "normalisation.phase has no p_low, p_high"),
        ({"normalisation": {"phase": {"median": 0.0, "iqr": -1.0, "p_low": 0, "p_high": 1}}},
         "no image has a negative spread"),
        ({"normalisation": {"phase": {"median": True, "iqr": 1, "p_low": 0, "p_high": 1}}},
         "normalisation.phase.median is true, not a finite number"),
        ({"normalisation": {"phase": {"median": 10**400, "iqr": 1, "p_low": 0, "p_high": 1}}},
         "normalisation.phase.median is 1000000000000000000000000000000000000..."),
        ({"normalisation": {"phase": {"median": 0, "iqr": 1, "p_low": 0, "p_high": 1,
                                      "std": float("nan")}}}, "normalisation.phase.std is NaN"),
    ],
)
def test_the_schema_names_the_field(tmp_path, change, words):
    (tmp_path / "dataset.json").write_text(json.dumps({"source": "test"} | change))
    with pytest.raises(DataError, match=re.escape(words)):
        layout.read_dataset_json(tmp_path)


def test_what_the_reader_refuses_is_never_written(tmp_path):
    with pytest.raises(DataError, match="refusing to write .*normalisation.phase.iqr is null"):
        layout.write_dataset_json(tmp_path, {"normalisation": {"phase": {
            "median": 0.0, "iqr": None, "p_low": 0.0, "p_high": 1.0}}})
    assert not (tmp_path / "dataset.json").exists()


def test_a_folder_named_like_a_tiff_is_called_a_folder(tmp_path):
    (tmp_path / "x.tif").mkdir()
    with pytest.raises(DataError, match=r"x.tif is a folder, not a TIFF file"):
        layout.read_image(tmp_path / "x.tif")
    with pytest.raises(DataError, match=r"y.tif does not exist"):
        layout.read_image(tmp_path / "y.tif")


def test_mask_labels_beyond_int32_name_the_file(tmp_path):
    import tifffile

    path = tmp_path / "fov_0000.tif"
    tifffile.imwrite(path, np.array([[0, 2**31], [1, 2]], np.uint32))
    with pytest.raises(DataError, match=r"fov_0000.tif has label 2147483648.*renumber"):
        layout.read_mask(path)
    tifffile.imwrite(path, np.array([[0, 2**31 - 1]], np.uint32))
    assert layout.read_mask(path).max() == 2**31 - 1


def test_a_linked_subfolder_of_an_output_is_refused_and_a_linked_file_replaced(tmp_path):
    truth = tmp_path / "truth"
    layout.write_image(truth / "fov_0000.tif", np.ones((4, 4)))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "nuclei").symlink_to(truth)
    with pytest.raises(DataError, match=r"out/nuclei is a symbolic link .*remove the link"):
        files.output_path(tmp_path / "out", "nuclei", "fov_0000.tif")
    (tmp_path / "out" / "table.csv").symlink_to(truth / "fov_0000.tif")
    files.write_json(files.output_path(tmp_path / "out", "table.csv"), {"a": 1})
    assert layout.read_image(truth / "fov_0000.tif").sum() == 16
    assert not (tmp_path / "out" / "table.csv").is_symlink()
    linked_out = tmp_path / "linked"  # the folder given may itself be a link
    linked_out.symlink_to(tmp_path / "out")
    assert files.output_path(linked_out, "mean", "a.tif") == linked_out / "mean" / "a.tif"


def test_a_dangling_output_link_is_named_as_one(tmp_path):
    (tmp_path / "out").symlink_to(tmp_path / "gone")
    with pytest.raises(DataError, match=r"out is a symbolic link to .*gone, which does not "
                                        "exist; make that folder"):
        layout.check_output_folder(tmp_path / "out", [])
