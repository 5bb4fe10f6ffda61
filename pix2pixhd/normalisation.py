"""Normalisation: the train split's statistics, and the two ways of scaling images with them.

Networks train best on inputs of a known scale. Two strategies share one interface:

    DatasetNormaliser   the models trained here: phase by the train split's median and IQR,
                        each stain onto the generator's [-1, 1] by a stain map (STAIN_MAPS)
                        built on its train-split percentiles
    PerImageNormaliser  VisCy's published models: each phase image by its own median and IQR,
                        stains in median/IQR units of the train split

    normaliser = DatasetNormaliser.from_dataset("data", "phase", ["nuclei"], stain_map="asinh")
    x = normaliser.normalise_input(phase)                    # median 0, IQR 1
    stain = normaliser.denormalise_target(prediction)        # back to the stain's own units
    normaliser = Normaliser.from_dict(checkpoint["normaliser"])   # whichever it recorded

The statistics are measured once, when a dataset is written (`dataset_statistics`), and kept
in its dataset.json; never hard-coded constants, never test images. Images may be numpy arrays
or torch tensors. torch is not imported here, so that `data check` and `--help` start fast.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from tqdm.auto import tqdm

from pix2pixhd.files import folder_lock
from pix2pixhd.layout import (
    CHANNELS,
    DataError,
    dataset_json_path,
    image_path,
    is_finite_number,
    list_fovs,
    read_dataset_json,
    read_image,
    write_dataset_json,
)

Array = TypeVar("Array", "np.ndarray", "torch.Tensor")  # noqa: F821 (named, not imported)

STAIN_MAPS = ("linear", "asinh")
"""How a stain maps onto the generator's [-1, 1] (`stain_map` below; `data.stain_map`)."""

PERCENTILES = (0.5, 99.5)
"""The percentiles p_low and p_high of each channel: the stain range that maps onto [-1, 1].
Robust: the darkest and brightest 0.5 % of pixels (hot pixels, debris) do not set the scale."""

STAIN_DISPLAY_PERCENTILES = (1.0, 99.9)
"""Where a stain is shown, its colour scale runs between these percentiles of the real stain,
linearly in stain units (figures, TensorBoard panels): high enough that whole bright nuclei keep
their brightness, so a prediction that is too dim or too bright shows, whatever the stain map."""

TOP_PERCENTILE = 99.999
"""The percentile p_top of each channel: the train split's brightest stain short of a few hot
pixels (the top 0.001 %), which the asinh stain map places at TOP_LEVEL."""

TOP_LEVEL = 0.8
"""Where the asinh map puts p_top in the generator's output units: below tanh's bound of +1, so
the brightest train nuclei are drawn without saturating the tanh (tanh(x) = 0.8 at x = 1.1, 0.99
needs 2.6), and test stain somewhat brighter than any in train still fits underneath."""

ASINH_SOFTNESS = 0.25
"""The asinh map's scale s as a share of p_high - p_low: linear for stain up to about s above
p_low (background, dim nuclei), logarithmic beyond (`docs/stain-range.md`)."""

MAX_PIXELS_PER_IMAGE = 65536
"""Statistics pool a strided subsample of at most this many pixels of each image: plenty for
percentiles, and a dataset of hundreds of large images is measured in seconds."""

NORMALISE = ("dataset", "image")
"""How `predict` and `sample` scale a new phase image: with the statistics the model was
trained with, or with the image's own median and IQR (for images in other units)."""


# --- statistics ------------------------------------------------------------------------------


def median_and_iqr(values: Any) -> tuple[float, float]:
    """Median and interquartile range (75th - 25th percentile) of any array, in float64."""
    q25, median, q75 = np.percentile(np.asarray(values, np.float64), [25, 50, 75])
    return float(median), float(q75 - q25)


def channel_statistics(
    root: str | Path, split: str = "train", channels: Sequence[str] = CHANNELS
) -> dict[str, dict[str, float]]:
    """Robust intensity statistics of each channel over one split, from a strided subsample.

    For each channel with images: median, iqr, p_low and p_high (the PERCENTILES), p_top (the
    TOP_PERCENTILE), mean, std. These, written to dataset.json, are all that normalisation ever
    scales by. p_top comes from the same subsample: on the built-in data it differs from the
    percentile of every pixel by 0.3 %, and the asinh map depends on its logarithm.
    """
    stats: dict[str, dict[str, float]] = {}
    for channel in channels:
        paths = [image_path(root, split, channel, fov) for fov in list_fovs(root, split, channel)]
        if not paths:
            continue
        values = np.concatenate([
            _subsample(read_image(path))
            for path in tqdm(paths, desc=f"statistics of {channel}", unit="fov", leave=False)
        ]).astype(np.float64)
        median, iqr = median_and_iqr(values)
        low, high, top = np.percentile(values, [*PERCENTILES, TOP_PERCENTILE])
        stats[channel] = {"median": median, "iqr": iqr, "p_low": float(low),
                          "p_high": float(high), "p_top": float(top),
                          "mean": float(values.mean()), "std": float(values.std())}
    if not stats:
        raise DataError(f"{Path(root) / split} has no images to compute statistics from")
    return stats


def dataset_statistics(root: str | Path) -> dict[str, Any]:
    """The entries of ROOT/dataset.json that normalisation reads, measured on ROOT's train split:
    {"normalisation": {channel: statistics}, "percentiles": what p_low and p_high are,
    "top_percentile": what p_top is}. `python -m pix2pixhd data statistics ROOT` rewrites them."""
    return {"normalisation": channel_statistics(root, "train"), "percentiles": list(PERCENTILES),
            "top_percentile": TOP_PERCENTILE}


def refresh_dataset_statistics(root: str | Path) -> Path:
    """Measure ROOT's train split again and write `dataset_statistics` into ROOT/dataset.json,
    keeping its other entries (source, seed, URLs): for a file written before a statistic
    existed (p_top), or after the train images changed. Returns the file's path. Holds the
    folder's lock, so it never measures a dataset that `data synthetic` is rewriting."""
    with folder_lock(root, f"pix2pixhd data statistics {root}"):
        info = read_dataset_json(root)
        write_dataset_json(root, info | dataset_statistics(root))
    return dataset_json_path(root)


def _subsample(image: np.ndarray) -> np.ndarray:
    """Every k-th pixel in both directions, so that at most MAX_PIXELS_PER_IMAGE remain."""
    step = max(1, int(np.ceil(np.sqrt(image.size / MAX_PIXELS_PER_IMAGE))))
    return image[::step, ::step].ravel()


# --- the two strategies ----------------------------------------------------------------------


@dataclass
class Normaliser(ABC):
    """Scales a model's phase input and stain targets; one subclass per strategy.

    `stats` are the train split's statistics per channel, as dataset.json holds them (median,
    iqr, p_low, p_high, p_top); each strategy says in `required` which of them it scales by
    (the asinh stain map also needs p_top). Stored in checkpoints with `to_dict()`, so
    prediction needs no dataset; `Normaliser.from_dict` gives back the strategy that was
    recorded.
    """

    input_channel: str
    target_channels: list[str]
    stats: dict[str, dict[str, float]] = field(repr=False)

    strategy: ClassVar[str]
    """The name a checkpoint records (`to_dict()["strategy"]`)."""
    options: ClassVar[dict[str, Any]] = {}
    """The strategy's own fields that a checkpoint records, each with the value that a record
    without it means (checkpoints written before the field existed)."""

    def __post_init__(self) -> None:
        self.target_channels = list(self.target_channels)
        if not self.target_channels:
            raise ValueError("a normaliser needs at least one target channel")
        if not isinstance(self.stats, dict):
            raise DataError(f"normalisation statistics are a {type(self.stats).__name__}, not a "
                            "mapping of channels to their statistics")
        for channel, keys in self.required(self.input_channel, self.target_channels).items():
            _check_channel_statistics(self.stats, channel, keys)

    @staticmethod
    @abstractmethod
    def required(input_channel: str, target_channels: list[str]) -> dict[str, tuple[str, ...]]:
        """The statistics this strategy scales by: {channel: names}."""

    @abstractmethod
    def normalise_input(self, x: Array) -> Array:
        """Phase image(s) of any shape -> the network's input scale."""

    @abstractmethod
    def normalise_target(self, y: Array) -> Array:
        """Stain images (C, H, W) or (B, C, H, W) -> the network's output scale, per channel."""

    @abstractmethod
    def denormalise_target(self, y: Array) -> Array:
        """Inverse of `normalise_target`: back to the stain's own intensity units."""

    @abstractmethod
    def for_image(self, image: np.ndarray) -> Normaliser:
        """The normaliser that scales the phase image `image` by its own median and IQR."""

    @classmethod
    def from_dataset(
        cls, root: str | Path, input_channel: str, target_channels: Sequence[str],
        **options: Any,
    ) -> Normaliser:
        """This strategy with the statistics stored in ROOT/dataset.json (its train split's);
        `options`: the strategy's own fields (DatasetNormaliser: stain_map)."""
        path = dataset_json_path(root)
        stats = read_dataset_json(root).get("normalisation", {})
        needed = cls.required(input_channel, list(target_channels))
        missing = [channel for channel in needed if channel not in stats]
        if missing:
            raise DataError(
                f"{path} has no normalisation statistics for {', '.join(map(repr, missing))} "
                f"(it has {sorted(stats) or 'none'}); does {Path(root) / 'train'} have images "
                "of that channel? Choose other channels (data.input_channel, "
                "data.target_channels) or rebuild the dataset"
            )
        try:
            return cls(input_channel, list(target_channels), {c: dict(stats[c]) for c in needed},
                       **options)
        except DataError as error:
            raise DataError(f"{path}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (str, list, float): safe for `torch.load(weights_only=True)`."""
        return {
            "strategy": self.strategy,
            "input_channel": self.input_channel,
            "target_channels": list(self.target_channels),
            "stats": {c: {k: float(v) for k, v in s.items()} for c, s in self.stats.items()},
            **{name: getattr(self, name) for name in self.options},
        }

    @staticmethod
    def from_dict(values: dict[str, Any]) -> Normaliser:
        """The strategy `to_dict()` recorded; checkpoints that record none (written before
        there were two) were all trained with the dataset strategy, and those that record no
        stain map with the linear one."""
        strategies = {kind.strategy: kind for kind in (DatasetNormaliser, PerImageNormaliser)}
        name = values.get("strategy", DatasetNormaliser.strategy)
        if not isinstance(name, str) or name not in strategies:
            raise DataError(f"normalisation strategy {name!r:.40} is not one of "
                            f"{', '.join(strategies)}")
        kind = strategies[name]
        return kind(values["input_channel"], list(values["target_channels"]), values["stats"],
                    **{key: values.get(key, old) for key, old in kind.options.items()})

    def _target_values(self, y: Array, name: str) -> Any:
        """Statistic `name` of each target channel, shaped to broadcast over y's channels."""
        return _per_channel([self.stats[c][name] for c in self.target_channels], y)


@dataclass
class DatasetNormaliser(Normaliser):
    """The train split's statistics for every image, as this package's models are trained.

    Input (phase): (x - median) / iqr, so the typical pixel is near 0 and the spread near 1.
    Targets (stains): onto the range of the generator's final tanh by `stain_map`:

        linear  p_low -> -1, p_high -> +1. The map clips nothing, but a tanh output cannot
                exceed p_high, and the brightest 0.5 % of the stain (whole bright nuclei)
                lies above it.
        asinh   y = -1 + 2 asinh((x - p_low) / s) / a, with s = (p_high - p_low) / 4 and `a`
                chosen so that p_top (the 99.999th percentile) lands at +0.8: linear near the
                background, logarithmic above, so nuclei ten times brighter than a typical one
                fit under the tanh's bound; on the built-in data a typical nucleus keeps two
                thirds of the units the linear map gives it (`docs/stain-range.md`).

    `tanh_ceiling()` is the brightest stain a generator ending in tanh can draw.
    """

    stain_map: str = "linear"
    """One of STAIN_MAPS; linear is what checkpoints that record none were trained with."""

    strategy: ClassVar[str] = "dataset"
    options: ClassVar[dict[str, Any]] = {"stain_map": "linear"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stain_map not in STAIN_MAPS:
            raise DataError(f"stain map {self.stain_map!r:.40} is not one of "
                            f"{', '.join(STAIN_MAPS)}")
        if self.stain_map == "asinh":
            for channel in self.target_channels:
                _check_top(self.stats[channel], channel)

    @classmethod
    def from_dataset(
        cls, root: str | Path, input_channel: str, target_channels: Sequence[str],
        stain_map: str = "linear",
    ) -> DatasetNormaliser:
        """The statistics of ROOT/dataset.json with `stain_map`; a dataset.json written before
        p_top existed is named, with the command that adds it."""
        if stain_map == "asinh":
            stats = read_dataset_json(root).get("normalisation", {})
            lacking = [c for c in target_channels if c in stats and "p_top" not in stats[c]]
            if lacking:
                raise DataError(
                    f"{dataset_json_path(root)} has no p_top for {', '.join(map(repr, lacking))}"
                    f", which data.stain_map=asinh needs (the file predates it): add it with "
                    f"`python -m pix2pixhd data statistics {root}`, or set data.stain_map=linear")
        return super().from_dataset(root, input_channel, target_channels, stain_map=stain_map)

    @staticmethod
    def required(input_channel: str, target_channels: list[str]) -> dict[str, tuple[str, ...]]:
        needed = {input_channel: ("median", "iqr")}
        return needed | {channel: ("p_low", "p_high") for channel in target_channels}

    def normalise_input(self, x: Array) -> Array:
        stats = self.stats[self.input_channel]
        return _standardise(_as_float(x), stats["median"], stats["iqr"])

    def normalise_target(self, y: Array) -> Array:
        y = _as_float(y)
        low = self._target_values(y, "p_low")
        if self.stain_map == "asinh":
            softness, scale = self._asinh_constants(y)
            return 2 * _asinh((y - low) / softness) / scale - 1
        return 2 * (y - low) / (self._target_values(y, "p_high") - low) - 1

    def denormalise_target(self, y: Array) -> Array:
        y = _as_float(y)
        low = self._target_values(y, "p_low")
        if self.stain_map == "asinh":
            softness, scale = self._asinh_constants(y)
            return softness * _sinh((y + 1) / 2 * scale) + low
        return (y + 1) / 2 * (self._target_values(y, "p_high") - low) + low

    def in_linear_units(self, y: Array) -> Array:
        """A normalised stain re-expressed in the linear map's units: the stain's own units,
        p_low at -1 and p_high at +1, without a ceiling. The identity under the linear map."""
        low = self._target_values(y, "p_low")
        half_range = (self._target_values(y, "p_high") - low) / 2
        return (self.denormalise_target(y) - low) / half_range - 1

    def tanh_ceiling(self) -> dict[str, float]:
        """{channel: the brightest stain (a.u.) a generator ending in tanh can output}, the
        stain that +1 maps back to; nothing brighter can be predicted."""
        ones = np.ones((len(self.target_channels), 1, 1))
        return dict(zip(self.target_channels, self.denormalise_target(ones).ravel().tolist(),
                        strict=True))

    def _asinh_constants(self, y: Any) -> tuple[Any, Any]:
        """The asinh map's s and a of each target channel, shaped to broadcast over y."""
        constants = [asinh_constants(self.stats[c]) for c in self.target_channels]
        return (_per_channel([softness for softness, _ in constants], y),
                _per_channel([scale for _, scale in constants], y))

    def for_image(self, image: np.ndarray) -> DatasetNormaliser:
        """A copy whose input statistics are `image`'s own (the targets' are unchanged).

        For phase images in other units or offsets than the training data: the model then
        sees the same typical value and spread as in training, whatever the units.
        """
        median, iqr = _own_median_and_iqr(image)
        stats = {channel: dict(values) for channel, values in self.stats.items()}
        stats[self.input_channel] |= {"median": median, "iqr": iqr}
        return replace(self, stats=stats)


def asinh_constants(stats: dict[str, float]) -> tuple[float, float]:
    """The asinh map's scale s (a.u.) and compression a for one stain's statistics (p_low,
    p_high, p_top): s = ASINH_SOFTNESS (p_high - p_low), and a such that p_top lands at
    TOP_LEVEL, from -1 + 2 asinh((p_top - p_low) / s) / a = TOP_LEVEL."""
    softness = ASINH_SOFTNESS * (stats["p_high"] - stats["p_low"])
    scale = 2 * float(np.arcsinh((stats["p_top"] - stats["p_low"]) / softness)) / (1 + TOP_LEVEL)
    return softness, scale


@dataclass
class PerImageNormaliser(Normaliser):
    """VisCy's recipe: each phase image by its own median and IQR; stains in median/IQR units
    of the train split (a published VSCyto2D model predicts in those units)."""

    strategy: ClassVar[str] = "per_image"

    @staticmethod
    def required(input_channel: str, target_channels: list[str]) -> dict[str, tuple[str, ...]]:
        return {channel: ("median", "iqr") for channel in target_channels}

    def normalise_input(self, x: Array) -> Array:
        """One phase image (H, W) -> its own median 0, interquartile range 1."""
        return _standardise(_as_float(x), *_own_median_and_iqr(_to_numpy(x)))

    def normalise_target(self, y: Array) -> Array:
        y = _as_float(y)
        return _standardise(y, self._target_values(y, "median"), self._target_values(y, "iqr"))

    def denormalise_target(self, y: Array) -> Array:
        y = _as_float(y)
        return _unstandardise(y, self._target_values(y, "median"), self._target_values(y, "iqr"))

    def for_image(self, image: np.ndarray) -> PerImageNormaliser:
        return self  # every image is scaled by its own statistics already


# --- arithmetic shared by the strategies -----------------------------------------------------


def _standardise(x: Array, median: Any, iqr: Any) -> Array:
    """The robust z-score: median 0 and interquartile range 1."""
    return (x - median) / iqr


def _unstandardise(x: Array, median: Any, iqr: Any) -> Array:
    return x * iqr + median


def _own_median_and_iqr(image: Any) -> tuple[float, float]:
    """`median_and_iqr` of one image, refusing a (nearly) constant one, which has no scale."""
    median, iqr = median_and_iqr(image)
    if not iqr > 0:
        raise DataError(f"the image has an interquartile range of {iqr}: it is (nearly) "
                        "constant, so it cannot be scaled by its own statistics")
    return median, iqr


def _check_channel_statistics(
    stats: dict[str, dict[str, Any]], channel: str, keys: tuple[str, ...]
) -> None:
    """Refuse statistics that are missing, not finite numbers, or without spread."""
    values = stats.get(channel)
    if not isinstance(values, dict) or any(key not in values for key in keys):
        raise DataError(
            f"no normalisation statistics ({', '.join(keys)}) for channel {channel!r}; known "
            f"channels: {sorted(stats) or 'none'}. The statistics come from the train split's "
            "images of that channel (dataset.json, 'normalisation')"
        )
    for key in keys:
        if not is_finite_number(values[key]):
            raise DataError(f"normalisation.{channel}.{key} is {values[key]!r:.40}, not a "
                            "finite number")
    if "iqr" in keys and not values["iqr"] > 0:
        raise DataError(f"channel {channel!r} has an interquartile range of {values['iqr']}: "
                        "its train images are (nearly) constant")
    if "p_low" in keys and not values["p_high"] > values["p_low"]:
        raise DataError(f"channel {channel!r} has p_high {values['p_high']} <= p_low "
                        f"{values['p_low']}: its train images are (nearly) constant")


def _check_top(values: dict[str, Any], channel: str) -> None:
    """p_top, which the asinh map needs, is a finite number at or above p_high."""
    if "p_top" not in values:
        raise DataError(f"no p_top for channel {channel!r}: the asinh stain map needs the train "
                        f"split's {TOP_PERCENTILE}th percentile (dataset.json, 'normalisation')")
    if not is_finite_number(values["p_top"]) or not values["p_top"] >= values["p_high"]:
        raise DataError(f"normalisation.{channel}.p_top is {values['p_top']!r:.40}, not a finite "
                        f"number at or above p_high {values['p_high']}")


def _asinh(x: Any) -> Any:
    return np.arcsinh(x) if _is_numpy(x) else x.asinh()


def _sinh(x: Any) -> Any:
    return np.sinh(x) if _is_numpy(x) else x.sinh()


def _is_numpy(x: Any) -> bool:
    """numpy arrays and anything array-like; torch tensors are the only other kind used."""
    return isinstance(x, np.ndarray) or not hasattr(x, "is_floating_point")


def _as_float(x: Any) -> Any:
    """Tensors stay tensors and arrays stay arrays; integer pixels become float32."""
    if _is_numpy(x):
        x = np.asarray(x)
        return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)
    return x if x.is_floating_point() else x.float()


def _to_numpy(x: Any) -> np.ndarray:
    return np.asarray(x) if _is_numpy(x) else x.detach().cpu().numpy()


def _per_channel(values: list[float], y: Any) -> Any:
    """One value per channel shaped to broadcast over y's channel axis (-3; 0 for (C, N)),
    in y's own type, dtype and device; a plain number when there is one channel."""
    if len(values) == 1:
        return values[0]
    axis = -3 if y.ndim >= 3 else 0
    if y.ndim < 2 or y.shape[axis] != len(values):
        raise ValueError(
            f"stain array of shape {tuple(y.shape)} does not have {len(values)} channels on "
            f"axis {axis}; expected (C, H, W) or (B, C, H, W)"
        )
    shape = (len(values),) + (1,) * (-axis - 1 if axis < 0 else y.ndim - 1)
    if _is_numpy(y):
        return np.asarray(values, y.dtype).reshape(shape)
    return y.new_tensor(values).reshape(shape)
