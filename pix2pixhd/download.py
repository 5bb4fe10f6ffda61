"""Fetch the real A549 images (VSCyto2D, CZ Biohub) from their OME-Zarr stores into the TIFF layout.

    download_dataset("data")    # data/{train,val,test}/{phase,nuclei,membrane,nuclei_masks}/*.tif
    download_viscy_model()      # checkpoints/VSCyto2D/epoch=399-step=23200.ckpt, VisCy's model

Both stores are HCS plates written by iohub: plate -> wells -> fields of view (FOVs), each FOV
an array whose axes (iohub names them "T", "C", "Z", "Y", "X") and channel names sit in the
OME-Zarr metadata. We walk that metadata rather than assume paths, pick the channels by name
(see the *_NAMES constants), and keep one plane per channel: time point 0 and the middle Z slice
(Z // 2), the plane the VisCy course uses. Only the chunks holding those planes are fetched.

A store is an http(s) URL, a `file://` URL or a plain path (a mirror or a local copy). When a
default URL answers "not found", VisCy's newer copy of the same store (`zarrv3/`) is tried.

An FOV's files are written only after all of its planes arrived, each file atomically, so a cut
connection leaves whole files behind and the next call skips the FOVs that are complete.
dataset.json is written last: a folder without it is an unfinished download.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
from tqdm.auto import tqdm

from pix2pixhd import layout
from pix2pixhd.checks import constant_image_message
from pix2pixhd.files import folder_lock
from pix2pixhd.memory import MemoryBudgetError, check_budget, plane_bytes
from pix2pixhd.normalisation import dataset_statistics

try:  # the `download` extra; the rest of the package works without it
    import aiohttp
    import zarr
    from zarr.storage import FsspecStore, LocalStore, WrapperStore
except ImportError as missing:
    _IMPORT_ERROR: ImportError | None = missing
else:
    _IMPORT_ERROR = None

log = logging.getLogger(__name__)

TRAIN_URL = (
    "https://public.czbiohub.org/comp.micro/viscy/VS_datasets/VSCyto2D/training/"
    "a549_hoechst_cellmask_train_val.zarr"
)
TEST_URL = (
    "https://public.czbiohub.org/comp.micro/viscy/VS_datasets/VSCyto2D/test/"
    "a549_hoechst_cellmask_test.zarr"
)
MIRRORS = {
    TRAIN_URL: TRAIN_URL.replace("/training/", "/training/zarrv3/"),
    TEST_URL: TEST_URL.replace("/test/", "/test/zarrv3/"),
}
"""Where VisCy's course setup fetches the same stores now (rewritten as OME-Zarr 0.5); tried
when a default URL answers "not found"."""
TRAIN_URL_ENV = "PIX2PIXHD_TRAIN_URL"
TEST_URL_ENV = "PIX2PIXHD_TEST_URL"
"""Environment variables that replace the default URLs (setup.sh --real reads them too)."""
SOURCE = "VSCyto2D A549 (CZ Biohub)"
VSCYTO2D_MODEL_URL = (
    "https://public.czbiohub.org/comp.micro/viscy/VS_models/VSCyto2D/VSCyto2D/"
    "epoch=399-step=23200.ckpt"
)
"""VisCy's published VSCyto2D model (a Lightning checkpoint; outputs nuclei, then membrane)."""
VSCYTO2D_MODEL_URL_ENV = "PIX2PIXHD_VSCYTO2D_URL"
"""Environment variable that replaces VSCYTO2D_MODEL_URL (a mirror)."""
VSCYTO2D_MODEL_DIR = "checkpoints/VSCyto2D"

# Substrings matched case-insensitively against the channel labels, best first. The VisCy
# course material names the A549 channels "Phase3D", "Nucl", "Mem" and "nuclei_segmentation".
PHASE_NAMES = ("phase",)
NUCLEI_NAMES = ("nuclei", "nucl", "hoechst", "dapi")
MEMBRANE_NAMES = ("membrane", "cellmask", "mem")
MASK_NAMES = ("mask", "label", "segment")
DYES_NAMED_MASK = ("cellmask",)
"""Stains whose name contains "mask" but that are images, not segmentations."""

OFFLINE_HINT = "offline? use the built-in dataset: python -m pix2pixhd data synthetic --out {out}"
MODEL_OFFLINE_HINT = (
    "the published VisCy model is optional (Part 4 compares with it); everything else works "
    "without it"
)


class DownloadError(RuntimeError):
    """The dataset could not be fetched; the message says why and what to do."""


class _NotFound(DownloadError):
    """The store's metadata is not there (HTTP 404, or no such folder)."""


@dataclass
class _Store:
    """One remote plate and what every FOV of it will give: the files to expect."""

    url: str
    plate: Any  # zarr.Group
    positions: list[str]  # "row/column/fov" paths inside the plate
    labels: list[str]  # channel names of its first FOV
    has_masks: bool

    def files(self) -> tuple[str, ...]:
        """Layout folders an FOV of this store fills, the phase image last (see _write_fov)."""
        masks = (layout.MASKS,) if self.has_masks else ()
        return masks + tuple(c for c in layout.CHANNELS if c != "phase") + ("phase",)


def download_dataset(
    out: str | Path,
    *,
    train_url: str | None = None,
    test_url: str | None = None,
    timeout: float = 10.0,
    val_fraction: float = 0.15,
    seed: int = 0,
    max_fovs: int | None = None,
) -> Path:
    """Download the A549 dataset into `out` (resumable) and return `out`.

    `train_url`, `test_url`: http(s) or file:// URLs or plain paths of the two plates; None
    takes $PIX2PIXHD_TRAIN_URL / $PIX2PIXHD_TEST_URL, else the published stores.
    The training store's FOVs are split into train/val by a shuffle seeded with `seed`
    (`val_fraction` of them to val); the test store's FOVs all go to test. `timeout` (seconds)
    bounds the reachability check and each wait for the server. `max_fovs` caps the FOVs taken
    from each store, keeping the split of each FOV the same as in a full download.
    """
    if _IMPORT_ERROR is not None:
        raise DownloadError(
            f"the download needs zarr, fsspec and aiohttp ({_IMPORT_ERROR}); "
            "install them with `pip install -e '.[download]'`"
        )
    if not 0.0 <= val_fraction < 1.0:
        raise DownloadError(f"val_fraction={val_fraction} must be in [0, 1)")
    if max_fovs is not None and max_fovs < 1:
        raise DownloadError(f"max_fovs={max_fovs} must be at least 1 (or None for all)")
    out = Path(out)
    train_url = train_url or os.environ.get(TRAIN_URL_ENV) or TRAIN_URL
    test_url = test_url or os.environ.get(TEST_URL_ENV) or TEST_URL
    _check_not_another_dataset(out)
    if _is_remote(train_url):
        _check_reachable(train_url, timeout, out)

    train_store = _open_store_or_mirror(train_url, timeout)
    test_store = _open_store_or_mirror(test_url, timeout)
    train_url, test_url = train_store.url, test_store.url
    splits = assign_splits(train_store.positions, val_fraction=val_fraction, seed=seed)
    if max_fovs is not None:
        splits = _limit_splits(splits, max_fovs, val_fraction)
    test_positions = test_store.positions[:max_fovs]
    plan = [(split, train_store, p) for split in ("train", "val") for p in sorted(splits[split])]
    plan += [("test", test_store, p) for p in test_positions]
    with folder_lock(out, f"pix2pixhd data download --out {out}"):
        _check_split_agrees(out, plan)
        if not test_store.has_masks:
            log.warning("%s has no nuclei mask channel among %s nor a labels group; "
                        "test/%s will be missing", test_url, test_store.labels, layout.MASKS)

        created_out = not out.exists()
        try:
            _fetch_all(out, plan)
        except BaseException:
            _remove_empty_folders(out, remove_out=created_out)
            raise
        layout.write_dataset_json(
            out,
            {
                "source": SOURCE,
                "urls": [train_url, test_url],
                "seed": seed,
                "val_fraction": val_fraction,
                "max_fovs": max_fovs,
                "plane": "time point 0, middle Z slice (Z // 2)",
                "positions": {
                    split: [_fov_name(position) for s, _, position in plan if s == split]
                    for split in layout.SPLITS
                },
                **dataset_statistics(out),
            },
        )
    log.info("wrote %s (%d fields of view)", out, len(plan))
    return out


def match_channels(labels: Sequence[str]) -> dict[str, int]:
    """Index of each layout channel (phase, nuclei, membrane; nuclei_masks if any) in `labels`.

    Matching is by substring, case-insensitive; a segmentation channel ("nuclei_segmentation")
    never counts as an image, a dye named CellMask never counts as a mask.
    """
    lowered = [label.lower() for label in labels]
    is_mask = [_is_mask(label) for label in lowered]
    images = [i for i, mask in enumerate(is_mask) if not mask]
    masks = [i for i, mask in enumerate(is_mask) if mask]
    found: dict[str, int] = {}
    for channel, names in (("phase", PHASE_NAMES), ("nuclei", NUCLEI_NAMES),
                           ("membrane", MEMBRANE_NAMES)):
        index = _best_match(lowered, images, names)
        if index is None:
            raise DownloadError(
                f"no {channel} channel among {list(labels)}: expected a name containing one of "
                f"{list(names)}; add the store's name to {channel.upper()}_NAMES in "
                "pix2pixhd/download.py"
            )
        found[channel] = index
    # a membrane segmentation is no nuclei mask; a lone unnamed mask is taken as nuclei
    nuclear = _best_match(lowered, masks, NUCLEI_NAMES)
    others = [i for i in masks if not any(n in lowered[i] for n in MEMBRANE_NAMES + ("cell",))]
    if nuclear is not None:
        found[layout.MASKS] = nuclear
    elif len(others) == 1:
        found[layout.MASKS] = others[0]
    return found


def assign_splits(
    positions: Sequence[str], *, val_fraction: float, seed: int
) -> dict[str, list[str]]:
    """Split positions into {"train": [...], "val": [...]}, each in its shuffled order.

    round(val_fraction * n) positions go to val, at least one when val_fraction > 0 and there
    are two or more positions. The shuffle depends only on (seed, the sorted positions).
    """
    ordered = sorted(positions)
    shuffled = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
    n_val = _n_val(len(shuffled), val_fraction)
    return {"train": shuffled[n_val:], "val": shuffled[:n_val]}


def _n_val(n: int, val_fraction: float) -> int:
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return n_val


def _limit_splits(
    splits: dict[str, list[str]], max_fovs: int, val_fraction: float
) -> dict[str, list[str]]:
    """The first FOVs of each split's shuffled order, so a FOV keeps its split whatever the cap."""
    n_val = min(_n_val(max_fovs, val_fraction), len(splits["val"]))
    return {"val": splits["val"][:n_val], "train": splits["train"][: max_fovs - n_val]}


def _is_mask(label: str) -> bool:
    for dye in DYES_NAMED_MASK:
        label = label.replace(dye, "")
    return any(name in label for name in MASK_NAMES)


def _best_match(labels: list[str], candidates: list[int], names: Sequence[str]) -> int | None:
    """The candidate matching the earliest of `names`; ties go to the first channel."""
    for name in names:
        for index in candidates:
            if name in labels[index]:
                return index
    return None


# --- reaching the server -------------------------------------------------------------------


def _check_reachable(url: str, timeout: float, out: Path, hint: str | None = None) -> None:
    """One HEAD request, answered within `timeout` seconds (DNS included) or DownloadError.

    Any HTTP answer, even an error status or a redirect (not followed), shows that the server
    is there.
    """
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            opener = urllib.request.build_opener(_NoRedirect)
            opener.open(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)
        except Exception as error:  # any failure to connect means "not reachable"
            outcome.append(error)

    # a thread, because urlopen's timeout does not cover name resolution
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    if outcome and outcome[0] is None:
        return
    reason = f"{getattr(outcome[0], 'reason', outcome[0])}" if outcome else (
        f"no answer within {timeout:g} s"
    )
    host = urlparse(url).netloc or url
    hint = hint if hint is not None else OFFLINE_HINT.format(out=out)
    raise DownloadError(f"cannot reach {host} ({reason}): {hint}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report a redirect as an answer: following it could fetch a whole directory listing."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@contextmanager
def _reading(what: str) -> Iterator[None]:
    """Turn zarr's and aiohttp's errors into one DownloadError line that names `what`."""
    try:
        yield
    except (KeyError, FileNotFoundError) as error:
        raise DownloadError(f"{what} is not there ({error!r}); is the URL right?") from error
    except MemoryBudgetError:  # a ValueError, but the store's claim is named already
        raise
    except ValueError as error:  # json's and zarr's parse errors: an HTML page, or garbage
        raise DownloadError(
            f"{what} answered with something that is not OME-Zarr metadata ({error}); the "
            "server may have sent an HTML page (a login, proxy or error page): open the URL in "
            "a browser, or set HTTPS_PROXY"
        ) from error
    except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as error:
        raise DownloadError(
            f"lost the connection while reading {what} ({type(error).__name__}: {error}); "
            "run the same command again to resume"
        ) from error


def _is_remote(url: str) -> bool:
    return urlparse(url).scheme in ("http", "https")


def _local_path(url: str) -> Path:
    """The folder of a file:// URL or a plain path."""
    parsed = urlparse(url)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(url)


def _is_chunk_key(key: str) -> bool:
    """Whether a store key names array data rather than metadata (.zarray, zarr.json...)."""
    return not key.rsplit("/", 1)[-1].startswith((".z", "zarr.json"))


def _recording_missing_chunks(store: Any) -> Any:
    """`store`, wrapped so that the chunk keys it has nothing for are recorded in `.missing`:
    zarr silently substitutes the fill value for them."""

    class RecordingStore(WrapperStore):
        missing: list[str]

        async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
            value = await super().get(key, prototype, byte_range)
            if value is None and _is_chunk_key(key):
                self.missing.append(key)
            return value

    wrapped = RecordingStore(store)
    wrapped.missing = []
    return wrapped


def _missing_chunks(group: Any) -> list[str]:
    """The chunk keys the store of `group` had nothing for so far (see above)."""
    return getattr(group.store, "missing", [])


def _zarr_store(url: str, timeout: float) -> Any:
    if not _is_remote(url):
        if urlparse(url).scheme not in ("", "file") and not Path(url).exists():
            raise DownloadError(f"{url}: only http(s):// and file:// URLs or paths are read")
        path = _local_path(url)
        if not path.is_dir():
            raise DownloadError(f"{path} is not a folder: expected an OME-Zarr plate (.zarr)")
        return LocalStore(path, read_only=True)
    # sock_read bounds each silence, not the whole transfer, so big chunks may take their time
    client = {"timeout": aiohttp.ClientTimeout(sock_connect=timeout, sock_read=timeout),
              "trust_env": True}
    return FsspecStore.from_url(url, storage_options={"client_kwargs": client}, read_only=True)


def _open_store_or_mirror(url: str, timeout: float) -> _Store:
    """`_open_store`, or for a published URL that is not found, VisCy's newer copy (MIRRORS)."""
    try:
        return _open_store(url, timeout)
    except _NotFound as error:
        mirror = MIRRORS.get(url)
        if mirror is None:
            raise DownloadError(str(error)) from error
        log.warning("%s is not there; trying VisCy's copy %s", url, mirror)
        try:
            store = _open_store(mirror, timeout)
        except _NotFound as second:
            raise DownloadError(f"{error}; nor is VisCy's copy {mirror}") from second
        log.warning("using %s", mirror)
        return store


def _open_store(url: str, timeout: float) -> _Store:
    """Open the plate and list its positions by walking plate -> wells -> images metadata."""
    try:
        with _reading(url):
            plate = zarr.open_group(_recording_missing_chunks(_zarr_store(url, timeout)),
                                    mode="r")
    except DownloadError as error:
        if isinstance(error.__cause__, (KeyError, FileNotFoundError)):
            raise _NotFound(str(error)) from error.__cause__
        raise
    with _reading(url):
        plate_meta = _ome(plate).get("plate")
        if not plate_meta or not plate_meta.get("wells"):
            raise DownloadError(f"{url} is not an HCS plate: no plate.wells in its metadata")
        positions = []
        for well in plate_meta["wells"]:
            well_path = _member_path(well.get("path"), url, "well")
            images = _ome(plate[well_path]).get("well", {}).get("images", [])
            positions += [f"{well_path}/{_member_path(image.get('path'), url, 'image')}"
                          for image in images]
    if not positions:
        raise DownloadError(f"{url} lists no fields of view in its wells' metadata")
    with _reading(f"{url}/{positions[0]}"):
        first = plate[positions[0]]
        labels = _channel_labels(first, url)
        has_masks = layout.MASKS in match_channels(labels) or _labels_name(first) is not None
    log.info("%s: %d fields of view, channels %s", url, len(positions), labels)
    return _Store(url=url, plate=plate, positions=positions, labels=labels, has_masks=has_masks)


def _member_path(path: object, url: str, what: str) -> str:
    """A well's ("row/column") or image's path from the plate metadata, refused unless each
    part is a plain name: '..' or '/x' would read (and name files) outside the plate."""
    parts = path.split("/") if isinstance(path, str) else [path]
    try:
        for part in parts:
            layout.plain_name(part, f"{what} path")
    except layout.DataError:
        raise DownloadError(f"{url}: the plate metadata names the {what} path {path!r}, which "
                            "is not a plain name (like '0/1'): the store is malformed; fix its "
                            "metadata or use another store") from None
    return path


# --- reading one field of view -------------------------------------------------------------


def _ome(group: Any) -> dict[str, Any]:
    """Group attributes; OME-Zarr 0.5 (zarr v3) nests them under "ome"."""
    attributes = dict(group.attrs)
    return attributes.get("ome", attributes)


def _channel_labels(position: Any, where: str) -> list[str]:
    channels = _ome(position).get("omero", {}).get("channels", [])
    if not channels:
        raise DownloadError(f"{where}: no omero.channels metadata, so no channel names")
    return [str(channel.get("label", "")) for channel in channels]


def _labels_name(position: Any) -> str | None:
    """Name of the nuclei image in an OME-Zarr labels group, if the position has one."""
    if "labels" not in position:
        return None
    names = [str(name) for name in _ome(position["labels"]).get("labels", [])]
    lowered = [name.lower() for name in names]
    index = _best_match(lowered, list(range(len(names))), NUCLEI_NAMES)
    return names[index] if index is not None else (names[0] if len(names) == 1 else None)


def plane_index(axes: Sequence[Any], shape: tuple[int, ...], channel: int,
                where: str) -> tuple[int | slice, ...]:
    """Index of the (Y, X) plane of `channel` at time 0 and middle Z, from NGFF `axes`.

    Axes are dicts {"name", "type"} (NGFF 0.4, 0.5) or bare names (0.3). A declared type
    ("time", "channel", "space") decides an axis's role; otherwise its name does, in any case
    ("T" as iohub writes it, or "t"). The last two space axes are Y and X; one before them is Z.
    """
    roles = []
    for axis in axes:
        name = str(axis.get("name", "") if isinstance(axis, dict) else axis)
        kind = str(axis.get("type", "") if isinstance(axis, dict) else "").lower()
        kind = kind or {"t": "time", "c": "channel", "z": "space", "y": "space",
                        "x": "space"}.get(name.lower(), "")
        if kind not in ("time", "channel", "space"):
            raise DownloadError(f"{where}: axis {name!r} is neither time, channel nor space "
                                f"(axes {_axis_names(axes)}); no plane can be chosen")
        roles.append(kind)
    space = [i for i, role in enumerate(roles) if role == "space"]
    if not 2 <= len(space) <= 3 or roles.count("time") > 1 or roles.count("channel") != 1:
        raise DownloadError(f"{where}: axes {_axis_names(axes)} are not one channel axis, at "
                            "most one time axis and 2 or 3 space axes")
    index: list[int | slice] = []
    for i, role in enumerate(roles):
        if role == "time":
            index.append(0)
        elif role == "channel":
            index.append(channel)
        elif len(space) == 3 and i == space[0]:
            index.append(shape[i] // 2)
        else:
            index.append(slice(None))
    return tuple(index)


def _axis_names(axes: Sequence[Any]) -> list[str]:
    return [str(a.get("name", "?") if isinstance(a, dict) else a) for a in axes]


def _read_plane(image_group: Any, channel: int, where: str, *, allow_missing: bool = False
                ) -> np.ndarray:
    """The (Y, X) plane at time 0, middle Z, of the highest resolution of a multiscale image.

    Indexing the zarr array with one time point, channel and Z slice fetches only the chunks
    that hold that plane. A plane larger than the memory budget is refused from its claimed
    shape, before a chunk is fetched. A chunk the store does not have is an error unless
    `allow_missing`: zarr would give the array's fill value in its place, and a phase or
    stain image of zeros is a broken download, not data; a label image may leave chunks
    without nuclei unwritten.
    """
    multiscales = _ome(image_group).get("multiscales", [{}])[0]
    datasets = multiscales.get("datasets", [{"path": "0"}])
    array = image_group[datasets[0]["path"]]
    axes = multiscales.get("axes") or ["t", "c", "z", "y", "x"][-array.ndim:]
    if len(axes) != array.ndim:
        raise DownloadError(f"{array.path}: axes {_axis_names(axes)} do not fit its shape "
                            f"{array.shape}")
    index = plane_index(axes, array.shape, channel, array.path)
    plane = tuple(n for n, i in zip(array.shape, index, strict=True) if isinstance(i, slice))
    side = "x".join(map(str, plane))
    check_budget(f"{where}/{array.basename}: its metadata claims planes of {side} pixels "
                 f"({array.dtype}), which", plane_bytes(plane, array.dtype),
                 "check the store's array shape; a real field of view is a few thousand "
                 "pixels a side")
    missing = _missing_chunks(image_group)
    before = len(missing)
    values = np.asarray(array[index])
    if len(missing) > before and not allow_missing:
        raise DownloadError(
            f"{where}/{array.basename}: {len(missing) - before} of the chunks of channel "
            f"{channel} are missing (the server had nothing at {missing[before]}), so zarr "
            f"would fill them with {array.fill_value}; run the same command again later, or "
            "check the store")
    return values


def _read_fov(store: _Store, position: str) -> dict[str, np.ndarray]:
    """All planes of one FOV, by layout folder (phase, nuclei, membrane, nuclei_masks)."""
    where = f"{store.url}/{position}"
    with _reading(where):
        group = store.plate[position]
        channels = match_channels(_channel_labels(group, where))
        planes = {name: _read_plane(group, index, where, allow_missing=name == layout.MASKS)
                  for name, index in channels.items()}
        name = _labels_name(group) if layout.MASKS not in planes else None
        if name is not None:
            planes[layout.MASKS] = _read_plane(group["labels"][name], 0, f"{where}/labels",
                                               allow_missing=True)
    if layout.MASKS in planes:
        planes[layout.MASKS] = _as_labels(planes[layout.MASKS], where)
    return planes


def _as_labels(mask: np.ndarray, where: str) -> np.ndarray:
    """Instance labels from a mask plane, which an all-channels float32 array stores as floats."""
    if np.issubdtype(mask.dtype, np.integer):
        return mask
    if not np.all(np.isfinite(mask)) or np.any(mask != np.round(mask)) or mask.min() < 0:
        raise DownloadError(f"{where}: the mask channel holds non-integer or negative values")
    return mask.astype(np.int64)


# --- writing -------------------------------------------------------------------------------


def _fov_name(position: str) -> str:
    return position.replace("/", "_")


def _is_complete(out: Path, split: str, store: _Store, position: str) -> bool:
    fov = _fov_name(position)
    return all(layout.image_path(out, split, c, fov).is_file() for c in store.files())


def _write_fov(out: Path, split: str, store: _Store, position: str,
               planes: dict[str, np.ndarray]) -> None:
    # phase goes last: list_fovs looks at phase, so it only ever lists whole FOVs
    fov = _fov_name(position)
    for channel in store.files():
        if channel not in planes:
            raise DownloadError(f"{store.url}/{position} has no {channel} plane; "
                                "its channels differ from the plate's first field of view")
        path = layout.image_path(out, split, channel, fov)
        if channel == layout.MASKS:
            layout.write_mask(path, planes[channel])
        else:
            layout.write_image(path, planes[channel])


def _fetch_all(out: Path, plan: list[tuple[str, _Store, str]]) -> None:
    done = [item for item in plan if _is_complete(out, *item)]
    if done:
        log.info("%d of %d fields of view already complete in %s; skipping them",
                 len(done), len(plan), out)
    for split, store, position in tqdm(plan, desc="fields of view", unit="fov"):
        if _is_complete(out, split, store, position):
            continue
        planes = _read_fov(store, position)
        for channel, plane in planes.items():
            message = channel != layout.MASKS and constant_image_message(
                f"{store.url}/{position} ({channel})", plane)
            if message:
                log.warning(message)
        _write_fov(out, split, store, position, planes)


def _check_not_another_dataset(out: Path) -> None:
    path = layout.dataset_json_path(out)
    if not path.is_file():
        return
    try:
        source = layout.read_dataset_json(out).get("source")
    except layout.DataError:
        source = "unreadable dataset.json"
    if source != SOURCE:
        raise DownloadError(
            f"{out} already holds another dataset ({source}); choose an empty --out folder"
        )


def _check_split_agrees(out: Path, plan: list[tuple[str, _Store, str]]) -> None:
    """Refuse to mix splits: an FOV already on disk in another split came from other settings."""
    others = {"train": "val", "val": "train"}
    for split, _, position in plan:
        if split not in others:
            continue
        fov = _fov_name(position)
        for channel in (*layout.CHANNELS, layout.MASKS):
            path = layout.image_path(out, others[split], channel, fov)
            if path.is_file():
                raise DownloadError(
                    f"{path} exists but this download puts {fov} in {split}: {out} was written "
                    "with another --seed or --val-fraction; use those again or a new --out folder"
                )


def _remove_empty_folders(out: Path, *, remove_out: bool) -> None:
    """Undo the folders a failed call made, keeping every complete file for the next call."""
    for split in layout.SPLITS:
        for channel in (*layout.CHANNELS, layout.MASKS):
            _rmdir_if_empty(out / split / channel)
        _rmdir_if_empty(out / split)
    if remove_out:
        _rmdir_if_empty(out)


def _rmdir_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


# --- single files: the published VisCy model ------------------------------------------------


def download_viscy_model(
    out_dir: str | Path | None = None, *, url: str | None = None, timeout: float = 10.0,
) -> Path:
    """Fetch VisCy's published VSCyto2D checkpoint into `out_dir` (default
    checkpoints/VSCyto2D; resumable) and return its path. `url` defaults to
    $PIX2PIXHD_VSCYTO2D_URL, else VSCYTO2D_MODEL_URL."""
    out_dir = VSCYTO2D_MODEL_DIR if out_dir is None else out_dir
    url = url or os.environ.get(VSCYTO2D_MODEL_URL_ENV) or VSCYTO2D_MODEL_URL
    name = unquote(urlparse(url).path.rsplit("/", 1)[-1])
    if not name:
        raise DownloadError(f"{url} names no file to download")
    return download_file(url, Path(out_dir) / name, timeout=timeout)


def download_file(url: str, path: str | Path, *, timeout: float = 10.0,
                  chunk_size: int = 1 << 20) -> Path:
    """Fetch `url` into `path`; a cut transfer resumes where it stopped on the next call.

    Bytes arrive in `path` + ".part"; a later call asks the server for the rest (an HTTP Range
    request) and the finished file is renamed into place, so `path` is only ever whole.
    """
    path = Path(path)
    if path.is_file():
        log.info("%s is already there", path)
        return path
    _check_reachable(url, timeout, path, hint=MODEL_OFFLINE_HINT)
    partial = path.with_name(path.name + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    done = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if done and response.status != 206:  # the server ignored the range: start over
                done = 0
            total = done + int(response.headers.get("Content-Length") or 0) or None
            _stream(response, partial, done, total, chunk_size, path.name)
    except urllib.error.HTTPError as error:
        if error.code == 416 and done:  # nothing left to send: the part file is whole
            total = done
        else:
            raise DownloadError(f"{url} answered HTTP {error.code} ({error.reason})") from error
    except (OSError, http.client.HTTPException) as error:  # timeouts, resets, short bodies
        raise DownloadError(
            f"lost the connection while fetching {url} ({type(error).__name__}: {error}); "
            "run the same command again to resume"
        ) from error
    size = partial.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{url} sent {size} of {total} bytes; run the same command again "
                            "to resume")
    partial.replace(path)
    log.info("wrote %s (%.1f MB)", path, size / 1e6)
    return path


def _stream(response: Any, partial: Path, done: int, total: int | None, chunk_size: int,
            name: str) -> None:
    """Append the response body to `partial` (or rewrite it when `done` is 0), with progress."""
    with open(partial, "ab" if done else "wb") as file, tqdm(
        total=total, initial=done, unit="B", unit_scale=True, desc=name
    ) as bar:
        while chunk := response.read(chunk_size):
            file.write(chunk)
            bar.update(len(chunk))
