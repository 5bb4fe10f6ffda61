"""download.py against small OME-Zarr HCS plates served on 127.0.0.1.

The plates are written by iohub, as the real stores are (upper-case axis names, OME-Zarr 0.4 in
zarr v2 and 0.5 in zarr v3, the real channel names). Metadata is written by hand only for what
iohub does not write (a labels group) and for broken stores.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
pytest.importorskip("aiohttp")

from pix2pixhd import download, layout, memory  # noqa: E402
from pix2pixhd.download import (  # noqa: E402
    DownloadError,
    assign_splits,
    download_dataset,
    download_viscy_model,
    match_channels,
    plane_index,
)
from tests.plates import (  # noqa: E402
    TEST_LABELS,
    TRAIN_LABELS,
    Server,
    fov_values,
    is_chunk,
    write_iohub_plate,
)

SIZE = 32
DEPTH = 3  # the download must take plane DEPTH // 2
TRAIN_WELLS = {"0/0": 3, "0/1": 1}  # well path -> number of FOVs: 4 positions
TEST_WELLS = {"0/0": 2}
VAL_FRACTION = 0.25  # one of the four training positions
AXES = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"},
        {"name": "z", "type": "space"}, {"name": "y", "type": "space"},
        {"name": "x", "type": "space"}]


# --- writing and serving small plates ------------------------------------------------------


def _ome_attributes(group, attributes: dict, zarr_format: int) -> None:
    """OME-Zarr 0.4 puts metadata at the top of the attributes, 0.5 (zarr v3) under "ome"."""
    group.attrs.update(attributes if zarr_format == 2 else {"ome": attributes})


def _array_kwargs(zarr_format: int) -> dict:
    # iohub writes v2 plates with "/" chunk keys, as OME-Zarr 0.4 asks
    return {"chunk_key_encoding": {"name": "v2", "separator": "/"}} if zarr_format == 2 else {}


def write_plate(
    path: Path,
    wells: dict[str, int],
    labels: list[str],
    *,
    zarr_format: int = 2,
    seed: int = 0,
    labels_group: bool = False,
) -> dict[str, np.ndarray]:
    """An HCS plate with hand-written metadata (lower-case axis names), for what iohub does
    not write: with `labels_group` the nuclei masks are an OME-Zarr labels image, appended to
    the returned values as the last channel. Returns position path -> (C, Z, Y, X) values."""
    rng = np.random.default_rng(seed)
    plate = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    _ome_attributes(plate, {"plate": {
        "version": "0.4",
        "wells": [{"path": well} for well in wells],
    }}, zarr_format)
    written = {}
    for well_path, n_fovs in wells.items():
        well = plate.create_group(well_path)
        _ome_attributes(well, {"well": {"images": [{"path": str(i)} for i in range(n_fovs)]}},
                        zarr_format)
        for fov in range(n_fovs):
            position = well.create_group(str(fov))
            multiscales = [{"version": "0.4", "axes": AXES, "datasets": [{"path": "0"}]}]
            _ome_attributes(position, {
                "multiscales": multiscales,
                "omero": {"channels": [{"label": name} for name in labels]},
            }, zarr_format)
            values = fov_values(rng, labels, SIZE, DEPTH)
            array = position.create_array(
                "0", shape=(1, len(labels), DEPTH, SIZE, SIZE), chunks=(1, 1, 1, SIZE, SIZE),
                dtype="float32", **_array_kwargs(zarr_format))
            array[0] = values
            if labels_group:
                masks = fov_values(rng, ["nuclei_segmentation"], SIZE, DEPTH)
                group = position.create_group("labels")
                _ome_attributes(group, {"labels": ["nuclei"]}, zarr_format)
                nuclei = group.create_group("nuclei")
                _ome_attributes(nuclei, {"multiscales": multiscales}, zarr_format)
                label_array = nuclei.create_array(
                    "0", shape=(1, 1, DEPTH, SIZE, SIZE), chunks=(1, 1, 1, SIZE, SIZE),
                    dtype="uint16", **_array_kwargs(zarr_format))
                label_array[0] = masks.astype(np.uint16)
                values = np.concatenate([values, masks])
            written[f"{well_path}/{fov}"] = values
    return written


@pytest.fixture(scope="module")
def stores_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stores")


@pytest.fixture(scope="module")
def stores(stores_root) -> dict[str, dict[str, np.ndarray]]:
    """Plates on disk, by file name: iohub's OME-Zarr 0.4 (zarr v2) and 0.5 (zarr v3), a plate
    chunked by Z plane, and masks as a labels group (written by hand: iohub writes none)."""
    pytest.importorskip("iohub")  # the `viscy` extra brings it
    root = stores_root
    written = {}
    for zarr_format in (2, 3):
        written[f"train_v{zarr_format}.zarr"] = write_iohub_plate(
            root / f"train_v{zarr_format}.zarr", TRAIN_WELLS, TRAIN_LABELS,
            zarr_format=zarr_format, seed=1, size=SIZE, depth=DEPTH)
        written[f"test_v{zarr_format}.zarr"] = write_iohub_plate(
            root / f"test_v{zarr_format}.zarr", TEST_WELLS, TEST_LABELS,
            zarr_format=zarr_format, seed=2, size=SIZE, depth=DEPTH)
    written["test_planes.zarr"] = write_iohub_plate(
        root / "test_planes.zarr", TEST_WELLS, TEST_LABELS, seed=4, size=SIZE, depth=DEPTH,
        chunks=(1, 1, 1, SIZE, SIZE), time_points=2)
    written["test_labels.zarr"] = write_plate(
        root / "test_labels.zarr", TEST_WELLS, TRAIN_LABELS, seed=3, labels_group=True)
    return written


@pytest.fixture
def server(stores_root, stores) -> Iterator[Server]:
    running = Server(stores_root)
    yield running
    running.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _download(server: Server, out: Path, zarr_format: int = 2, **kwargs) -> Path:
    kwargs.setdefault("train_url", server.url(f"train_v{zarr_format}.zarr"))
    kwargs.setdefault("test_url", server.url(f"test_v{zarr_format}.zarr"))
    return download_dataset(out, timeout=5.0, val_fraction=VAL_FRACTION, **kwargs)


def _expected_files(train: dict, test: dict) -> dict[tuple[str, str, str], np.ndarray]:
    """(split, channel folder, fov) -> plane at time 0, middle Z, for every FOV written."""
    splits = assign_splits(list(train), val_fraction=VAL_FRACTION, seed=0)
    by_split = {"train": splits["train"], "val": splits["val"], "test": list(test)}
    expected = {}
    for split, positions in by_split.items():
        for position in positions:
            values = (test if split == "test" else train)[position]
            fov = position.replace("/", "_")
            for index, channel in enumerate((*layout.CHANNELS, layout.MASKS)[: len(values)]):
                expected[split, channel, fov] = values[index, DEPTH // 2]
    return expected


def _files_on_disk(out: Path) -> set[tuple[str, str, str]]:
    return {(p.parts[-3], p.parts[-2], p.stem) for p in out.glob("*/*/*.tif")}


def _assert_layout_matches(out: Path, expected: dict) -> None:
    assert _files_on_disk(out) == set(expected)
    for (split, channel, fov), plane in expected.items():
        path = layout.image_path(out, split, channel, fov)
        if channel == layout.MASKS:
            np.testing.assert_array_equal(layout.read_mask(path), plane.astype(np.int32))
        else:
            np.testing.assert_array_equal(layout.read_image(path), plane)


# --- channel matching and splitting --------------------------------------------------------


def test_match_channels_finds_the_vscyto2d_names():
    assert match_channels(["Phase3D", "Nucl", "Mem", "nuclei_segmentation"]) == {
        "phase": 0, "nuclei": 1, "membrane": 2, "nuclei_masks": 3}


def test_match_channels_takes_cellmask_for_a_stain_not_a_mask():
    found = match_channels(["Hoechst 33342", "CellMask Deep Red", "phase"])
    assert found == {"phase": 2, "nuclei": 0, "membrane": 1}


def test_match_channels_ignores_a_membrane_segmentation_as_nuclei_mask():
    found = match_channels(["DAPI", "Membrane", "Phase", "membrane_segmentation"])
    assert "nuclei_masks" not in found


def test_missing_channel_error_lists_the_names_found():
    with pytest.raises(DownloadError, match=r"no nuclei channel among \['Phase3D', 'Mem'\]"):
        match_channels(["Phase3D", "Mem"])


def test_assign_splits_is_complete_disjoint_and_seeded():
    positions = [f"0/{w}/{f}" for w in range(4) for f in range(5)]
    splits = assign_splits(positions, val_fraction=0.15, seed=7)
    assert set(splits["train"]) | set(splits["val"]) == set(positions)
    assert not set(splits["train"]) & set(splits["val"])
    assert len(splits["val"]) == 3  # round(0.15 * 20)
    assert splits == assign_splits(positions[::-1], val_fraction=0.15, seed=7)
    assert splits != assign_splits(positions, val_fraction=0.15, seed=8)


# --- downloading ---------------------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_download_writes_the_middle_planes_into_the_layout(tmp_path, server, stores, zarr_format):
    out = _download(server, tmp_path / "data", zarr_format)
    expected = _expected_files(stores[f"train_v{zarr_format}.zarr"],
                               stores[f"test_v{zarr_format}.zarr"])
    _assert_layout_matches(out, expected)
    info = layout.read_dataset_json(out)
    assert info["source"] == "VSCyto2D A549 (CZ Biohub)"
    assert info["urls"] == [server.url(f"train_v{zarr_format}.zarr"),
                            server.url(f"test_v{zarr_format}.zarr")]
    assert info["counts"] == {"train": 3, "val": 1, "test": 2}
    assert set(info["normalisation"]) == {"phase", "nuclei", "membrane"}


def test_train_and_val_split_the_training_store_completely(tmp_path, server, stores):
    out = _download(server, tmp_path / "data")
    train, val = set(layout.list_fovs(out, "train")), set(layout.list_fovs(out, "val"))
    assert not train & val
    assert train | val == {p.replace("/", "_") for p in stores["train_v2.zarr"]}
    assert len(val) == 1


def test_masks_are_read_from_a_labels_group(tmp_path, server, stores):
    out = _download(server, tmp_path / "data", test_url=server.url("test_labels.zarr"))
    expected = _expected_files(stores["train_v2.zarr"], stores["test_labels.zarr"])
    _assert_layout_matches(out, expected)
    assert layout.list_fovs(out, "test", layout.MASKS) == ["0_0_0", "0_0_1"]


def test_max_fovs_keeps_each_fov_in_the_split_of_a_full_download(tmp_path, server):
    small = _download(server, tmp_path / "small", max_fovs=2)
    full = _download(server, tmp_path / "full")
    for split in layout.SPLITS:
        assert set(layout.list_fovs(small, split)) <= set(layout.list_fovs(full, split))
    assert [len(layout.list_fovs(small, s)) for s in layout.SPLITS] == [1, 1, 2]


def test_axes_are_read_as_ngff_defines_them():
    upper = [{"name": n, "type": t} for n, t in zip("TCZYX", ["time", "channel", "space",
                                                             "space", "space"], strict=True)]
    assert plane_index(upper, (2, 4, 5, 8, 8), 3, "p") == (0, 3, 2, slice(None), slice(None))
    assert plane_index(["t", "c", "z", "y", "x"], (1, 2, 3, 8, 8), 1, "p")[:3] == (0, 1, 1)
    # the type decides, whatever the name: a channel axis named "ch", no time axis, no Z
    typed = [{"name": "ch", "type": "channel"}, {"name": "row", "type": "space"},
             {"name": "col", "type": "space"}]
    assert plane_index(typed, (3, 8, 8), 2, "p") == (2, slice(None), slice(None))
    with pytest.raises(DownloadError, match=r"p: axis 'angle' is neither"):
        plane_index([{"name": "angle"}, *upper[1:]], (1, 1, 1, 8, 8), 0, "p")
    with pytest.raises(DownloadError, match="one channel axis"):
        plane_index(upper[2:], (1, 8, 8), 0, "p")


def test_only_the_chunks_of_the_kept_planes_are_fetched(tmp_path, server, stores):
    """Chunked by plane, one FOV costs one chunk per kept channel: t 0, middle Z only, of a
    plate with 2 time points and 3 Z planes."""
    out = _download(server, tmp_path / "data", test_url=server.url("test_planes.zarr"))
    _assert_layout_matches(out, _expected_files(stores["train_v2.zarr"],
                                                stores["test_planes.zarr"]))
    chunks = server.chunk_requests("test_planes.zarr", "0/0/0")
    # zarr v2 keys t/c/z/y/x: channels 0-3 (phase, nuclei, membrane, masks), z = DEPTH // 2
    assert sorted(chunks) == [f"/test_planes.zarr/0/0/0/0/0/{c}/{DEPTH // 2}/0/0"
                              for c in range(4)]


def test_bytes_fetched_per_fov_are_the_kept_channels_stacks(tmp_path, server, stores):
    """iohub's default chunk is a time point's Z stack of one channel: no more is fetched."""
    _download(server, tmp_path / "data", zarr_format=3)
    position = "0/0/0"
    fetched = sum(server.sent[p] for p in server.chunk_requests("train_v3.zarr", position))
    folder = stores_root_of(server) / "train_v3.zarr" / position / "0"
    stored = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and is_chunk(f.name))
    n_channels = len(TRAIN_LABELS)
    assert len(server.chunk_requests("train_v3.zarr", position)) == n_channels
    assert fetched == stored  # t = 0 and 3 channels are the whole array here
    assert fetched < 1.1 * n_channels * DEPTH * SIZE * SIZE * 4


def stores_root_of(server: Server) -> Path:
    return Path(server.httpd.RequestHandlerClass.keywords["directory"])


@pytest.mark.parametrize("form", ["path", "file_url"])
def test_a_local_copy_downloads_from_a_path_or_a_file_url(tmp_path, stores_root, stores, form):
    def source(name: str) -> str:
        path = stores_root / name
        return str(path) if form == "path" else path.as_uri()

    out = download_dataset(tmp_path / "data", train_url=source("train_v3.zarr"),
                           test_url=source("test_v3.zarr"), val_fraction=VAL_FRACTION)
    _assert_layout_matches(out, _expected_files(stores["train_v3.zarr"], stores["test_v3.zarr"]))
    with pytest.raises(DownloadError, match="not a folder"):
        download_dataset(tmp_path / "other", train_url=str(tmp_path / "none.zarr"),
                         test_url=source("test_v3.zarr"))


def test_urls_come_from_the_environment_when_not_given(tmp_path, server, stores, monkeypatch):
    monkeypatch.setenv("PIX2PIXHD_TRAIN_URL", server.url("train_v2.zarr"))
    monkeypatch.setenv("PIX2PIXHD_TEST_URL", server.url("test_v2.zarr"))
    out = download_dataset(tmp_path / "data", timeout=5.0, val_fraction=VAL_FRACTION)
    assert layout.read_dataset_json(out)["urls"] == [server.url("train_v2.zarr"),
                                                     server.url("test_v2.zarr")]


def test_a_missing_default_store_falls_back_to_viscys_copy_and_says_so(
    tmp_path, server, stores, monkeypatch, caplog
):
    gone = server.url("moved/train.zarr")
    monkeypatch.setattr(download, "MIRRORS", {gone: server.url("train_v3.zarr")})
    out = _download(server, tmp_path / "data", zarr_format=3, train_url=gone)
    assert f"using {server.url('train_v3.zarr')}" in caplog.text
    assert layout.read_dataset_json(out)["urls"][0] == server.url("train_v3.zarr")
    with pytest.raises(DownloadError, match="nor is VisCy's copy"):
        monkeypatch.setattr(download, "MIRRORS", {gone: server.url("moved/too.zarr")})
        _download(server, tmp_path / "other", train_url=gone)


def test_a_missing_store_of_ones_own_is_not_replaced(tmp_path, server):
    with pytest.raises(DownloadError, match="is not there"):
        download_dataset(tmp_path / "data", train_url=server.url("nothere.zarr"),
                         test_url=server.url("test_v2.zarr"), timeout=5.0)


def test_the_mirrors_are_viscys_zarrv3_copies():
    assert download.MIRRORS[download.TRAIN_URL] == (
        "https://public.czbiohub.org/comp.micro/viscy/VS_datasets/VSCyto2D/training/zarrv3/"
        "a549_hoechst_cellmask_train_val.zarr")
    assert download.MIRRORS[download.TEST_URL].endswith(
        "VSCyto2D/test/zarrv3/a549_hoechst_cellmask_test.zarr")


def test_unreachable_server_fails_fast_and_creates_nothing(tmp_path):
    out = tmp_path / "data"
    closed = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"cannot reach 127\.0\.0\.1:\d+ .*data synthetic"):
        download_dataset(out, train_url=f"{closed}/train.zarr", test_url=f"{closed}/test.zarr",
                         timeout=2.0)
    assert time.monotonic() - start < 2.0
    assert not out.exists()


def test_silent_server_fails_within_the_timeout(tmp_path):
    out = tmp_path / "data"
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/train.zarr"
        start = time.monotonic()
        with pytest.raises(DownloadError, match="cannot reach"):
            download_dataset(out, train_url=url, test_url=url, timeout=0.5)
        assert time.monotonic() - start < 2.0
    assert not out.exists()


def test_cut_connection_keeps_whole_files_and_resume_fetches_only_the_rest(
    tmp_path, server, stores
):
    out = tmp_path / "data"
    train = sorted(assign_splits(list(stores["train_v2.zarr"]), val_fraction=VAL_FRACTION,
                                 seed=0)["train"])
    broken = train[2]  # the third FOV fetched
    server.cut = lambda path: path.startswith(f"/train_v2.zarr/{broken}/0/0/")
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        _download(server, out)

    assert not list(out.rglob("*.part")) and not layout.dataset_json_path(out).exists()
    for path in out.rglob("*.tif"):  # every file left is whole
        reader = layout.read_mask if path.parent.name == layout.MASKS else layout.read_image
        assert reader(path).shape == (SIZE, SIZE)
    complete = {fov for split in layout.SPLITS for fov in layout.list_fovs(out, split)}
    assert complete == {train[0].replace("/", "_"), train[1].replace("/", "_")}

    server.cut = lambda path: False
    server.requests.clear()
    _download(server, out)
    assert server.chunk_requests("train_v2.zarr", train[0]) == []
    assert server.chunk_requests("train_v2.zarr", train[1]) == []
    assert server.chunk_requests("train_v2.zarr", broken) != []
    _assert_layout_matches(out, _expected_files(stores["train_v2.zarr"], stores["test_v2.zarr"]))


def test_cut_at_the_first_fov_leaves_no_folder(tmp_path, server):
    out = tmp_path / "data"
    server.cut = lambda path: path.startswith("/train_v2.zarr/") and is_chunk(path)
    with pytest.raises(DownloadError, match="lost the connection"):
        _download(server, out)
    assert not out.exists()


def test_failed_write_leaves_no_empty_folders(tmp_path, server, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(layout.tifffile, "imwrite", disk_full)
    out = tmp_path / "data"
    with pytest.raises(OSError, match="No space left"):
        _download(server, out)
    assert not out.exists()


def test_refuses_a_folder_that_holds_another_dataset(tmp_path, server):
    out = tmp_path / "data"
    out.mkdir()
    layout.dataset_json_path(out).write_text(json.dumps({"source": "synthetic"}))
    with pytest.raises(DownloadError, match=r"another dataset \(synthetic\)"):
        _download(server, out)
    assert server.requests == []


def test_test_store_without_masks_warns_and_writes_no_masks(tmp_path, server, caplog):
    out = _download(server, tmp_path / "data", test_url=server.url("train_v2.zarr"))
    assert "has no nuclei mask channel among ['Phase3D', 'Nucl', 'Mem']" in caplog.text
    assert layout.list_fovs(out, "test", layout.MASKS) == []
    assert len(layout.list_fovs(out, "test")) == 4


def test_an_html_answer_is_named_as_not_zarr_metadata(server, stores_root, tmp_path):
    page = stores_root / "login_page.zarr"
    page.mkdir(exist_ok=True)
    (page / "zarr.json").write_text("<html><body>Please log in</body></html>")
    with pytest.raises(DownloadError, match="not OME-Zarr metadata.*HTML page"):
        download_dataset(tmp_path / "data", train_url=server.url("login_page.zarr"),
                         test_url=server.url("login_page.zarr"), timeout=5.0)


# --- single files: the published VisCy model ------------------------------------------------


class RangeServer:
    """Serves one file's bytes, honouring `Range: bytes=N-`; can hang up after `cut_after`."""

    def __init__(self, body: bytes) -> None:
        self.body, self.cut_after, self.ranges = body, None, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                self.send_response(200)
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802
                asked = self.headers.get("Range")
                server.ranges.append(asked)
                start = int(asked.removeprefix("bytes=").rstrip("-")) if asked else 0
                body = server.body[start:]
                self.send_response(206 if asked else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: server.cut_after] if server.cut_after else body)
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/models/epoch%3D399-step%3D1.ckpt"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def test_viscy_model_download_resumes_a_cut_transfer(tmp_path):
    body = np.random.default_rng(0).bytes(300_000)
    server = RangeServer(body)
    try:
        server.cut_after = 100_000
        with pytest.raises(DownloadError, match="again to resume"):
            download_viscy_model(tmp_path / "models", url=server.url, timeout=5.0)
        path = tmp_path / "models" / "epoch=399-step=1.ckpt"
        assert not path.exists()
        server.cut_after = None
        assert download_viscy_model(tmp_path / "models", url=server.url, timeout=5.0) == path
        assert path.read_bytes() == body
        assert server.ranges == [None, "bytes=100000-"]
        download_viscy_model(tmp_path / "models", url=server.url, timeout=5.0)
        assert len(server.ranges) == 2  # a whole file is not fetched again
    finally:
        server.close()


def test_viscy_model_download_offline_fails_in_one_line_naming_the_host(tmp_path):
    closed = f"http://127.0.0.1:{_closed_port()}/model.ckpt"
    with pytest.raises(DownloadError, match=r"cannot reach 127\.0\.0\.1:\d+ .*optional"):
        download_viscy_model(tmp_path / "models", url=closed, timeout=2.0)
    assert not (tmp_path / "models").exists()


def test_the_command_line_takes_a_path_and_a_file_url(tmp_path, stores_root, stores):
    from pix2pixhd.cli import main

    out = tmp_path / "data"
    assert main(["data", "download", "--out", str(out), "--val-fraction", str(VAL_FRACTION),
                 "--train-url", str(stores_root / "train_v2.zarr"),
                 "--test-url", (stores_root / "test_v2.zarr").as_uri()]) == 0
    _assert_layout_matches(out, _expected_files(stores["train_v2.zarr"], stores["test_v2.zarr"]))


def test_a_download_into_a_folder_in_use_stops_before_writing(tmp_path, server, stores):
    from pix2pixhd.files import FolderBusyError, folder_lock

    out = tmp_path / "data"
    with folder_lock(out, "another download"):
        with pytest.raises(FolderBusyError, match="another download"):
            _download(server, out)
    assert not out.exists()
    assert layout.read_dataset_json(_download(server, out))["source"]


# --- stores that lie: missing chunks, claimed shapes, names ---------------------------------


def test_chunks_the_server_does_not_have_are_an_error_not_zeros(tmp_path, server):
    server.missing = lambda path: is_chunk(path) and "/train_v2.zarr/" in path
    with pytest.raises(DownloadError, match=r"chunks of channel \d are missing .* fill them "
                                            r"with 0.*run the same command again"):
        _download(server, tmp_path / "data")
    assert not list(tmp_path.rglob("*.tif")) and not list(tmp_path.rglob("dataset.json"))


def test_a_claimed_plane_beyond_the_memory_budget_is_refused_before_a_chunk(
        tmp_path, server, stores_root):
    from iohub.ngff import open_ome_zarr

    with open_ome_zarr(stores_root / "huge.zarr", layout="hcs", mode="w",
                       channel_names=TRAIN_LABELS, version="0.5") as plate:
        # iohub writes the array's metadata only: no chunk exists, as in a store that lies
        plate.create_position("0", "0", "0").create_zeros(
            "0", shape=(1, 3, 1, 100000, 100000), dtype="float32", chunks=(1, 1, 1, 4096, 4096))
    with pytest.raises(memory.MemoryBudgetError,
                       match=r"claims planes of 100000x100000 pixels \(float32\), which would "
                             r"take about \d+\.\d GiB"):
        _download(server, tmp_path / "data", train_url=server.url("huge.zarr"))
    assert not any(is_chunk(path) for path in server.requests)


def test_a_well_path_that_leaves_the_plate_is_refused_by_name(tmp_path, server, stores_root):
    plate = zarr.open_group(stores_root / "escape.zarr", mode="w", zarr_format=2)
    wells = [{"path": "../train_v2.zarr/0/0"}]
    _ome_attributes(plate, {"plate": {"version": "0.4", "wells": wells}}, 2)
    with pytest.raises(DownloadError) as error:
        _download(server, tmp_path / "data", train_url=server.url("escape.zarr"))
    message = str(error.value)
    assert "well path '../train_v2.zarr/0/0', which is not a plain name" in message
    assert "HTML" not in message


def test_a_constant_image_is_reported_by_the_download_and_by_data_check(
        tmp_path, server, stores_root, caplog):
    from pix2pixhd.checks import check_fov

    write_iohub_plate(stores_root / "flat.zarr", {"0/0": 2}, TEST_LABELS, seed=5, size=SIZE,
                      depth=DEPTH, planes=lambda rng, position: {
                          "Phase3D": rng.normal(0, 1, (SIZE, SIZE)),
                          "Nucl": np.full((SIZE, SIZE), 7.0) if position == "0/0/1"
                          else rng.normal(100, 5, (SIZE, SIZE)),
                          "Mem": rng.normal(100, 5, (SIZE, SIZE)),
                          "nuclei_segmentation": np.zeros((SIZE, SIZE))})
    with caplog.at_level("WARNING"):
        out = _download(server, tmp_path / "data", test_url=server.url("flat.zarr"))
    assert "flat.zarr/0/0/1 (nuclei) is constant (every pixel is 7)" in caplog.text
    assert "0/0/0 (nuclei) is constant" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        check_fov(out, "test", "0_0_1", ["phase", "nuclei"])
    assert "test/nuclei/0_0_1.tif is constant (every pixel is 7)" in caplog.text
