"""HCS plates written by iohub, as the real VSCyto2D stores are, and a loopback file server.

Shared by the download tests and the end-to-end test of `setup.sh --real`.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

TRAIN_LABELS = ["Phase3D", "Nucl", "Mem"]
TEST_LABELS = ["Phase3D", "Nucl", "Mem", "nuclei_segmentation"]
"""The channel names of the real stores; the test store adds the nuclei masks as a channel."""

NGFF_VERSIONS = {2: "0.4", 3: "0.5"}
"""zarr format -> the OME-Zarr version iohub writes in it."""


def write_iohub_plate(
    path: Path,
    wells: dict[str, int],
    labels: list[str],
    *,
    zarr_format: int = 2,
    seed: int = 0,
    size: int = 32,
    depth: int = 3,
    planes: Callable[[np.random.Generator, str], dict[str, np.ndarray]] | None = None,
    chunks: tuple[int, ...] | None = None,
    time_points: int = 1,
) -> dict[str, np.ndarray]:
    """An HCS plate of (time_points, C, depth, size, size) float32 FOVs written by iohub;
    returns position ("row/column/fov") -> its (C, Z, Y, X) values at time point 0 (later time
    points hold those values plus 10000 each).

    `wells` maps "row/column" to a number of FOVs. By default every plane is noise whose level
    grows with Z (so the middle plane is recognisable) and a segmentation channel holds integer
    labels stored as float32, as the real test store has them. `planes(rng, position)` may give
    {label: (Y, X) image} instead, repeated over Z. `chunks` defaults to iohub's (one chunk per
    time point and channel).
    """
    from iohub.ngff import open_ome_zarr

    rng = np.random.default_rng(seed)
    written = {}
    with open_ome_zarr(path, layout="hcs", mode="w", channel_names=list(labels),
                       version=NGFF_VERSIONS[zarr_format]) as plate:
        for well, n_fovs in wells.items():
            row, column = well.split("/")
            for fov in range(n_fovs):
                position = f"{well}/{fov}"
                if planes is None:
                    values = fov_values(rng, labels, size, depth)
                else:
                    given = planes(rng, position)
                    values = np.stack([np.repeat(given[label][None], depth, axis=0)
                                       for label in labels]).astype(np.float32)
                node = plate.create_position(row, column, str(fov))
                series = np.stack([values + 10000 * t for t in range(time_points)])
                node.create_image("0", series, chunks=chunks)
                written[position] = values
    return written


def fov_values(rng: np.random.Generator, labels: list[str], size: int, depth: int) -> np.ndarray:
    """(C, Z, Y, X) float32 noise, each plane offset; a *segment* channel holds integer labels."""
    values = rng.normal(100.0, 20.0, size=(len(labels), depth, size, size)).astype(np.float32)
    values += np.arange(depth, dtype=np.float32)[None, :, None, None] * 1000  # planes differ
    for index, label in enumerate(labels):
        if "segment" in label:
            masks = np.zeros((depth, size, size), np.float32)
            for value in range(1, 4):
                y, x = rng.integers(0, size - 8, size=2)
                masks[:, y:y + 8, x:x + 8] = value
            values[index] = masks
    return values


def is_chunk(path: str) -> bool:
    """Whether a request is for array data rather than zarr metadata (.zattrs, zarr.json...)."""
    return not path.rsplit("/", 1)[-1].startswith((".z", "zarr.json"))


class Server:
    """A threaded static file server on 127.0.0.1 that records each request and the bytes it
    sent, and can cut chosen responses short or answer 404 to them."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        self.sent: dict[str, int] = {}
        self.cut: Callable[[str], bool] = lambda path: False
        self.missing: Callable[[str], bool] = lambda path: False  # answered 404
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                if server.missing(self.path):
                    return self.send_error(404)
                file = Path(self.translate_path(self.path))
                if file.is_file():
                    server.sent[self.path] = file.stat().st_size
                if not (server.cut(self.path) and file.is_file()):
                    return super().do_GET()
                body = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])  # then hang up mid-response
                self.close_connection = True

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/{name}"

    def chunk_requests(self, store: str, position: str) -> list[str]:
        """Requests for the image chunks of one position (not its metadata)."""
        prefix = f"/{store}/{position}/0/"
        return [p for p in self.requests if p.startswith(prefix) and is_chunk(p)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
