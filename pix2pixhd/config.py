"""Configuration as data: dataclasses with defaults, presets by name, YAML in and out.

A run is described by one `Config` with four parts (data, model, loss, train). Presets give
sensible starting points; `--set section.key=value` on the command line changes single values:

    config = load_config("quick")
    config = apply_overrides(config, ["train.niter=5", "model.ngf=32"])
    save_config(config, "run.yaml")

Model option names follow the original Pix2PixHD (`ngf`, `n_downsample_global`, `ndf`, `num_D`,
...) so that they read the same as in the paper and its code; the options of `kind: viscy` follow
VisCy's own names (`encoder_blocks`, `dims`, ...).

Every field carries its allowed values beside it (`choices`, or bounds such as `at_least`), and
one `validate(config)` checks them all, then the options that must agree with each other (a
crop the generator can halve, stains named once), then the networks' sizes (`sizes.py`), all
before anything is built. Presets, files, `--set` and the Trainer each call it.

The allowed values of the options that take a name (NORMS, GAN_MODES, ...) live here, beside
their fields, and nowhere else: the network and loss builders import them to check their own
arguments. Of the package it imports only `layout`'s check of plain names and `sizes` (neither
imports anything of the package), so every layer can depend on it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import reprlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from pix2pixhd import sizes
from pix2pixhd.files import write_atomically
from pix2pixhd.layout import DataError, plain_name

MODEL_KINDS = ("gan", "regression", "viscy")
GENERATORS = ("global", "local")
NORMS = ("instance", "batch")
UPSAMPLINGS = ("transpose", "resize")
GAN_MODES = ("lsgan", "vanilla")
L1_UNITS = ("model", "stain")
STAIN_MAPS = ("linear", "asinh")
AMP_MODES = ("auto", "bf16", "fp16", "none")

MAX_PARAMETERS = 1_000_000_000
"""Most parameters one network may have: 4 GB of float32 weights, 16 GB with their gradients
and Adam's two moments. The course's generator has 182 M."""
MAX_ACTIVATION_BYTES = 64 * 2**30
"""Most memory the estimated activations of one training step may take (`sizes.py`); the
`course` preset's come to about 4 GB, the largest course GPUs hold 80 GB."""
MAX_YAML_ALIASES = 16
"""YAML aliases (`*name`) one file or value may use: each can repeat a whole earlier value, so
a few hundred bytes of aliases to aliases describe billions of items."""
MAX_YAML_DEPTH = 16
"""Nesting a config may have (it needs 3: section, option, list); deeper is refused before
Python's recursion limit turns it into a traceback."""

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration value or key that cannot be used."""


def _choice(default: str, allowed: tuple[str, ...]) -> Any:
    """A field that takes one of `allowed`; `validate` refuses anything else."""
    return field(default=default, metadata={"choices": allowed})


def _bounded(default: Any, **bounds: float) -> Any:
    """A number, or a list of numbers, within `bounds`: at_least, above, below, at_most.

    A list default is given as a list and copied for every instance."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=bounds)
    return field(default=default, metadata=bounds)


def check_counts(*, allow_zero: bool = False, **counts: int) -> None:
    """ValueError naming the first of `counts` that is not an integer >= 1 (>= 0 if allow_zero).

    For sizes and counts passed as arguments (ngf, num_D, samples per batch, ...): a bool or a
    float is refused, though Python would let both through as numbers.
    """
    low = 0 if allow_zero else 1
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r} must be an integer >= {low}")


@dataclass
class DataConfig:
    """Where the images are and how they are cut and fed to the model."""

    root: str = "data"
    """Dataset folder with train/, val/, test/ and dataset.json."""
    input_channel: str = "phase"
    target_channels: list[str] = field(default_factory=lambda: ["nuclei"])
    """One or more of nuclei, membrane: one output channel each."""
    crop_size: int = _bounded(256, at_least=0)
    """Side of the random square crops used for training, in pixels."""
    val_crop_size: int = _bounded(512, at_least=0)
    """Side of the centre crop used for validation; 0 keeps the whole image."""
    batch_size: int = _bounded(4, at_least=1)
    num_workers: int = _bounded(2, at_least=0)
    augment: bool = True
    """Random flips and 90-degree rotations of the training crops."""
    crops_per_image: int = _bounded(1, at_least=1)
    """Random crops drawn from every training image in one epoch."""
    stain_map: str = _choice("linear", STAIN_MAPS)
    """How stains map onto the generator's [-1, 1] (`normalisation.DatasetNormaliser`):
    'linear' (p_low -> -1, p_high -> +1; a tanh output cannot exceed p_high) or 'asinh'
    (logarithmic above the background; the train split's p_top lands at +0.8, so the brightest
    nuclei stay within reach)."""


@dataclass
class ModelConfig:
    """The generator and discriminator, with the original Pix2PixHD option names."""

    kind: str = _choice("gan", MODEL_KINDS)
    """'gan' (Pix2PixHD), 'regression' (the same generator trained with L1 only) or 'viscy'
    (VisCy's 2-D UNeXt2 network, as VSCyto2D, trained with VisCy's L1 + MS-DSSIM loss)."""
    netG: str = _choice("global", GENERATORS)
    """'global' (G1 alone) or 'local' (G1 inside local enhancers G2)."""
    ngf: int = _bounded(64, at_least=1)
    n_downsample_global: int = _bounded(4, at_least=0)
    n_blocks_global: int = _bounded(9, at_least=0)
    n_local_enhancers: int = _bounded(1, at_least=1)
    n_blocks_local: int = _bounded(3, at_least=0)
    norm: str = _choice("instance", NORMS)
    use_dropout: bool = True
    """Dropout in the residual blocks: a regulariser, and what MC-dropout samples from."""
    dropout_p: float = _bounded(0.2, at_least=0, below=1)
    upsample: str = _choice("transpose", UPSAMPLINGS)
    """Decoder upsampling: 'transpose' (the original's transposed convolutions, whose state dicts
    load) or 'resize' (nearest x2 then a 3x3 convolution, free of checkerboard artefacts)."""
    lowpass_output: bool = False
    """End the generator with a fixed [1, 2, 1] / 4 filter that no stripe two pixels apart passes
    (`networks.BinomialLowPass`). Off for the original and for checkpoints saved before it."""
    ndf: int = _bounded(64, at_least=1)
    n_layers_D: int = _bounded(3, at_least=1)
    num_D: int = _bounded(3, at_least=1)
    # kind=viscy: VisCy's FullyConvolutionalMAE options under VisCy's names; defaults are VSCyto2D's
    encoder_blocks: list[int] = _bounded([3, 3, 9, 3], at_least=0)
    """ConvNeXt V2 blocks in each of the four encoder stages."""
    dims: list[int] = _bounded([96, 192, 384, 768], at_least=1)
    """Channels of the four encoder stages (the decoder mirrors them)."""
    decoder_conv_blocks: int = _bounded(2, at_least=1)
    stem_kernel_size: list[int] = _bounded([1, 2, 2], at_least=1)
    """(Z, Y, X) kernel and stride of the stem: the first 2x downsampling in Y and X."""
    in_stack_depth: int = _bounded(1, at_least=1)
    """Z slices per input; 1 for 2-D images (the only depth our data has)."""


@dataclass
class LossConfig:
    """The terms of the objective and their weights."""

    gan_mode: str = _choice("lsgan", GAN_MODES)
    """'lsgan' (least squares, as Pix2PixHD) or 'vanilla' (binary cross-entropy)."""
    lambda_feat: float = _bounded(10.0, at_least=0)
    """Weight of the discriminator feature-matching loss."""
    lambda_l1: float = _bounded(0.0, at_least=0)
    """Weight of an L1 term for the GAN; the regression model always uses L1 alone."""
    l1_blur_sigma: float = _bounded(0.0, at_least=0)
    """Gaussian sigma (pixels) of a blur applied to both images before the GAN's L1 term: 0 is
    pixel-wise; a few pixels keep the nuclei's places and brightness but free their texture."""
    l1_units: str = _choice("model", L1_UNITS)
    """Units of the GAN's L1 term: 'model' (the normalised stain the generator outputs) or
    'stain' (both stains mapped back to the stain's own units first, in steps of the linear map's
    half-range (p_high - p_low) / 2). Under a compressive stain map 'stain' makes an error on a
    bright nucleus cost what it costs the metrics."""
    lambda_vgg: float = _bounded(0.0, at_least=0)
    """Weight of the VGG perceptual loss; needs `vgg_weights` on disk."""
    vgg_weights: str = ""


@dataclass
class TrainConfig:
    """How long, how fast, and where to save."""

    name: str = "pix2pixhd_nuclei"
    checkpoints_dir: str = "checkpoints"
    niter: int = _bounded(100, at_least=0)
    """Epochs at the initial learning rate."""
    niter_decay: int = _bounded(100, at_least=0)
    """Epochs over which the learning rate then falls linearly to zero."""
    lr: float = _bounded(2e-4, above=0)
    lr_D_ratio: float = _bounded(1.0, above=0)
    """The discriminator's learning rate as a multiple of lr (1 as the original)."""
    beta1: float = _bounded(0.5, at_least=0, below=1)
    beta2: float = _bounded(0.999, at_least=0, below=1)
    seed: int = _bounded(0, at_least=0, at_most=2**32 - 1)
    """Seeds the initial weights, crops, augmentation and dropout: the same seed, the same run."""
    save_every: int = _bounded(10, at_least=1)
    """Keep an `epoch_NNN.pt` checkpoint every this many epochs (latest.pt is always written)."""
    log_every: int = _bounded(10, at_least=1)
    """Write scalar logs every this many steps."""
    device: str = "auto"
    """'auto' (CUDA if present, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    amp: str = _choice("auto", AMP_MODES)
    """Mixed precision on CUDA: 'auto' (bf16 where supported, else fp16), 'bf16', 'fp16', 'none'."""
    channels_last: bool = True
    """Memory layout that tensor cores prefer; used on CUDA only."""
    compile: bool = False
    """Wrap the generator and discriminator in torch.compile (CUDA)."""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def epochs(self) -> int:
        return self.train.niter + self.train.niter_decay


def _recipe(config: Config) -> Config:
    """What the recipe ablation kept (`experiments/ablation.py`): resize-convolutions in the
    decoder (no checkerboard), a light feature-matching weight, which lets the adversarial term
    put back the texture that feature matching averages away, and an L1 term on blurred
    stains that keeps the nuclei where the real stain has them (the GAN with lambda_feat 1
    alone swung between epochs, down to F1 0.24 on validation) without pulling their texture
    towards the blurry median, as pixel-wise L1 does. Stains are mapped by asinh, under which no
    real test pixel of the built-in data lies above what the tanh can draw (0.56 % did under the
    linear map: whole bright nuclei; `docs/stain-range.md`). The L1 term compares the stains in
    their own units, in the linear map's steps, so it weighs what it weighed when it was chosen
    and a bright nucleus drawn too bright costs what it costs the metrics; a fixed low-pass ends
    the generator, which then cannot draw stripes two pixels apart (`docs/recipe.md`)."""
    config.data.stain_map = "asinh"
    config.model.upsample = "resize"
    config.model.lowpass_output = True
    config.loss.lambda_feat = 1.0
    config.loss.lambda_l1 = 20.0
    config.loss.l1_blur_sigma = 3.0
    config.loss.l1_units = "stain"
    return config


def _quick() -> Config:
    """Small enough to learn visible nuclei on a laptop CPU in a few minutes."""
    config = _recipe(Config())
    config.data.crop_size = 128
    config.data.val_crop_size = 256
    config.data.batch_size = 4
    config.model.ngf = 16
    config.model.n_downsample_global = 3
    config.model.n_blocks_global = 6
    config.model.ndf = 16
    config.model.dims = [32, 64, 128, 256]  # kind=viscy: about 3.6 M parameters, not 31 M
    config.train.niter = 4
    config.train.niter_decay = 2
    config.train.save_every = 2
    return config


def _pretrained() -> Config:
    """The quick model's architecture trained longer: the models shipped in git. Over 60 epochs
    a finer blur for the GAN's L1 term than 3 px drew the metaphase plates (the brightest
    nuclei, a few pixels wide) less swollen and the nuclei more faithfully: at 1 px the chosen
    epoch's F1 on validation was 0.920 (1.5 px: 0.903, 3 px: 0.907), with realistic spectra
    (`docs/results.md`). That is seed 0's run: with seeds 1 and 2 the brightest nuclei grew too
    bright late in training. The regression and VisCy models have no such term."""
    config = _quick()
    config.data.num_workers = 1
    config.loss.l1_blur_sigma = 1.0
    config.train.niter = 30
    config.train.niter_decay = 30
    config.train.save_every = 2
    return config


def _course() -> Config:
    """The course's GPU configuration: the full-size global generator on 512 crops."""
    config = _recipe(Config())
    config.data.crop_size = 512
    config.data.batch_size = 4
    config.data.num_workers = 8
    config.model.ngf = 64
    config.model.n_downsample_global = 4
    config.model.n_blocks_global = 9
    config.model.ndf = 32
    config.model.num_D = 3
    config.model.encoder_blocks = [3, 3, 9, 3]  # kind=viscy: VSCyto2D's sizes, about 31 M
    config.model.dims = [96, 192, 384, 768]
    config.train.niter = 50
    config.train.niter_decay = 50
    return config


PRESETS = {"quick": _quick, "pretrained": _pretrained, "course": _course}


def to_dict(config: Config) -> dict[str, Any]:
    """Plain nested dict (only str, int, float, bool, list): safe for YAML and checkpoints."""
    return dataclasses.asdict(config)


def from_dict(values: dict[str, Any]) -> Config:
    """Build a Config from a nested dict, refusing unknown sections and keys; validated."""
    return validate(_from_mapping(values))


def saved_config(values: Any, source: str | Path) -> Config:
    """The config stored in a file (a checkpoint's `config` entry), validated, sizes included,
    before any network is built from it; every error names the file."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source} holds a config that is a {type(values).__name__}, not a "
                          "mapping of sections (data, model, loss, train); it was not written "
                          "by `train`")
    try:
        return from_dict(values)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from error


def load_config(name_or_path: str | Path) -> Config:
    """A preset by name (quick, pretrained, course) or a YAML file written by `save_config`."""
    if str(name_or_path) in PRESETS:
        return validate(PRESETS[str(name_or_path)]())
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(
            f"config {_shown(str(name_or_path))} is neither a preset ({', '.join(PRESETS)}) "
            "nor an existing YAML file"
        )
    try:
        values = _parse_yaml(path.read_text(), f"config {path}") or {}
    except UnicodeDecodeError as error:
        raise ConfigError(f"config {path} is not readable YAML ({error})") from error
    if not isinstance(values, dict):
        raise ConfigError(f"config {path} holds a {type(values).__name__}, not a mapping of "
                          "sections (data, model, loss, train); write one with `save_config`")
    try:
        config = from_dict(values)
    except ConfigError as error:
        raise ConfigError(f"config {path}: {error}") from error
    _warn_unused(config, [Config()] + [preset() for preset in PRESETS.values()])
    return config


def save_config(config: Config, path: str | Path) -> None:
    """Written atomically; a `path` that is a symbolic link is replaced, not written through."""
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    write_atomically(path, lambda temporary: Path(temporary).write_text(text))


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply `section.key=value` strings; values are parsed as YAML (so 1e-4, true, [a, b]).

    The result is validated as a whole, so one override may be fixed by the next."""
    result = _from_mapping(to_dict(config))
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {_shown(item)} is not of the form section.key=value")
        dotted, raw = item.split("=", 1)
        section, key = dotted.split(".", 1)
        if section not in _sections():
            raise ConfigError(f"unknown config section {_shown(section)} in {_shown(item)}")
        _set_value(result, section, key, _parse_yaml(raw, f"the value of {dotted}"))
    validate(result)
    _warn_unused(result, [config])
    return result


def validate(config: Config) -> Config:
    """Check a whole config before anything is built from it; ConfigError naming the option.

    Every field against its type, choices and bounds (so a config changed by assignment is
    checked too), then the options that must agree with each other, then the networks' sizes.
    Returns the config, so that calls chain."""
    for section in _sections():
        part = getattr(config, section)
        hints = get_type_hints(type(part))
        for option in dataclasses.fields(part):
            name = f"{section}.{option.name}"
            _check_field(getattr(part, option.name), option, hints[option.name], name)
    _check_stains(config.data)
    _check_viscy_stages(config.model)
    check_network_size(config)
    _check_crops(config)
    if config.loss.lambda_vgg > 0 and not config.loss.vgg_weights:
        raise ConfigError(f"loss.lambda_vgg={config.loss.lambda_vgg} needs the VGG19 weights: "
                          "set loss.vgg_weights to their file, or loss.lambda_vgg=0")
    return config


def _sections() -> dict[str, type]:
    return {f.name: f.type for f in dataclasses.fields(Config)}


NAMES = ("train.name", "data.input_channel", "data.target_channels")
"""Options that become folder names, so must each be one plain path component."""
MAX_NAME_BYTES = 255
"""Longest file or folder name most file systems allow."""


def _from_mapping(values: Any) -> Config:
    """The Config that `values` describe, each value checked alone (not yet `validate`d)."""
    if not isinstance(values, dict):
        raise ConfigError(f"a config is a mapping of sections (data, model, loss, train), not a "
                          f"{type(values).__name__}")
    config = Config()
    for section, entries in values.items():
        if section not in _sections():
            raise ConfigError(
                f"unknown config section {_shown(section)}; known: {sorted(_sections())}")
        if not isinstance(entries, dict | None):
            raise ConfigError(f"config section {section!r} holds {_shown(entries)}, not a "
                              "mapping")
        for key, value in (entries or {}).items():
            _set_value(config, section, key, value)
    return config


def _set_value(config: Config, section: str, key: str, value: Any) -> None:
    part = getattr(config, section)
    hints = get_type_hints(type(part))
    short = isinstance(key, str) and len(key) <= 60
    name = f"{section}.{key if short else _shown(key)}"
    if key not in hints:
        raise ConfigError(f"unknown option {name}; known: {', '.join(sorted(hints))}")
    setattr(part, key, _check_field(value, _fields(part)[key], hints[key], name))


def _fields(part: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(part)}


def _check_field(value: Any, option: dataclasses.Field, expected: Any, name: str) -> Any:
    """`value` as the field's type, within its choices or bounds; ConfigError otherwise."""
    value = _coerce(value, expected, name)
    allowed = option.metadata.get("choices")
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{name}={_shown(value)} is not one of {', '.join(allowed)}")
    for number in value if isinstance(value, list) else [value]:
        if isinstance(number, int | float):
            _check_bounds(number, option.metadata, name if number is value else f"{name} entry")
    if name in NAMES:
        for text in value if isinstance(value, list) else [value]:
            if len(text.encode()) > MAX_NAME_BYTES:
                raise ConfigError(f"{name}={_shown(text)} is {len(text.encode())} bytes long; "
                                  f"a folder name has at most {MAX_NAME_BYTES}")
            _check_plain_name(text, name)
    return value


_BOUNDS = {
    "at_least": (lambda value, bound: value >= bound, "at least"),
    "above": (lambda value, bound: value > bound, "above"),
    "below": (lambda value, bound: value < bound, "below"),
    "at_most": (lambda value, bound: value <= bound, "at most"),
}


def _check_bounds(number: float, bounds: dict[str, Any], name: str) -> None:
    if isinstance(number, float) and not math.isfinite(number):
        raise ConfigError(f"{name}={number} must be a finite number")
    wanted = [(key, bound) for key, bound in bounds.items() if key in _BOUNDS]
    if not all(_BOUNDS[key][0](number, bound) for key, bound in wanted):
        allowed = " and ".join(f"{_BOUNDS[key][1]} {bound}" for key, bound in wanted)
        raise ConfigError(f"{name}={_shown(number)} must be {allowed}")


def _check_plain_name(text: str, name: str) -> None:
    try:
        plain_name(text, name)
    except DataError as error:
        raise ConfigError(str(error)) from error


def _coerce(value: Any, expected: Any, name: str) -> Any:
    """Check a value against the field's type; numbers are accepted where floats are expected."""
    if expected is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)  # YAML reads 1e-4 (no dot) as a string
        except (ValueError, OverflowError):
            pass
    if get_origin(expected) is list:
        (item_type,) = get_args(expected)
        if isinstance(value, str):  # "nuclei,membrane" or "32,64,128,256"
            value = [_parse_yaml(v.strip(), f"the value of {name}") if item_type is int
                     else v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)) and all(
            isinstance(v, item_type) and not isinstance(v, bool) for v in value
        ):
            return list(value)
    elif isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    raise ConfigError(
        f"{name} expects {getattr(expected, '__name__', expected)}, got {_shown(value)}")


def _check_stains(data: DataConfig) -> None:
    """The stains are the model's outputs: at least one, none twice, and not the input."""
    targets = data.target_channels
    if not targets:
        raise ConfigError("data.target_channels is empty; name the stains to predict, e.g. "
                          "data.target_channels=nuclei")
    if data.input_channel in targets:
        raise ConfigError(
            f"data.target_channels={_shown(targets)} includes the input channel "
            f"{data.input_channel!r}: the model would learn to copy its input; list stains only "
            "(nuclei, membrane)")
    repeated = sorted(name for name, count in Counter(targets).items() if count > 1)
    if repeated:
        raise ConfigError(
            f"data.target_channels={_shown(targets)} names {', '.join(repeated)} more than "
            "once; list each stain once, e.g. data.target_channels=nuclei,membrane")


def _check_viscy_stages(model: ModelConfig) -> None:
    """VisCy's encoder has one entry of dims and of encoder_blocks per stage."""
    if not model.dims or len(model.dims) != len(model.encoder_blocks):
        raise ConfigError(
            f"model.dims has {len(model.dims)} entries and model.encoder_blocks "
            f"{len(model.encoder_blocks)}: give one entry per encoder stage in each")
    if len(model.stem_kernel_size) != 3:
        raise ConfigError(f"model.stem_kernel_size={_shown(model.stem_kernel_size)} must "
                          "have 3 entries: (Z, Y, X)")


def _check_crops(config: Config) -> None:
    """Crops the generator can halve and double back, and large enough for every scale of D."""
    model = config.model
    if model.kind == "viscy":
        multiple = model.stem_kernel_size[-1] * 2 ** (len(model.dims) - 1)
        source = "model.stem_kernel_size[-1] * 2**(stages in model.dims - 1)"
        option = "model.dims"
    elif model.netG == "local":
        multiple = 2 ** (model.n_downsample_global + model.n_local_enhancers)
        source = "2**(model.n_downsample_global + model.n_local_enhancers)"
        option = "model.n_downsample_global"
    else:
        multiple = 2**model.n_downsample_global
        source = "2**model.n_downsample_global"
        option = "model.n_downsample_global"
    for name in ("crop_size", "val_crop_size"):
        side = getattr(config.data, name)
        if side % multiple:  # 0, the whole image, is checked when the images are read
            nearest = sorted({max(multiple, side // multiple * multiple), side // multiple
                              * multiple + multiple})
            raise ConfigError(
                f"data.{name}={side} is not a multiple of {multiple} ({source}), which the "
                f"generator needs to halve and double it back; use data.{name}="
                f"{' or '.join(map(str, nearest))}, or a smaller {option}")
        if model.kind == "gan" and side:
            _check_discriminator_scales(side, f"data.{name}", model)


def _check_discriminator_scales(side: int, name: str, model: ModelConfig) -> None:
    """D's coarsest scale sees the crop halved num_D - 1 times; its n_layers_D stride-2 layers
    then halve that down to one pixel, no further (beyond it they see only padding)."""
    coarsest = side
    for _ in range(model.num_D - 1):
        if coarsest == 1:
            break
        coarsest = (coarsest + 1) // 2  # the average pooling rounds up
    if coarsest.bit_length() <= model.n_layers_D:  # coarsest < 2**n_layers_D
        raise ConfigError(
            f"{name}={side} leaves {coarsest} pixels to the coarsest of model.num_D="
            f"{model.num_D} discriminator scales, fewer than the {2 ** min(model.n_layers_D, 64)} "
            "(2**model.n_layers_D) its stride-2 layers need to halve down to one pixel; use a "
            f"larger {name}, a smaller model.num_D or a smaller model.n_layers_D")


def check_network_size(config: Config) -> None:
    """Refuse networks beyond MAX_PARAMETERS or a training step beyond MAX_ACTIVATION_BYTES,
    naming the options that set their size, before anything is allocated.

    `validate` calls it after checking each field; a loader with a config read from a file
    calls `saved_config` or `validate`, which include it."""
    data = config.data
    elements, options = training_activations(config, data.crop_size, check_parameters=True)
    step_bytes = elements * data.batch_size * sizes.FLOAT_BYTES
    if step_bytes > MAX_ACTIVATION_BYTES:
        raise ConfigError(
            f"data.crop_size={data.crop_size} and data.batch_size={data.batch_size} make "
            f"about {step_bytes / 2**30:.3g} GB of activations in one training step with "
            f"these networks, beyond the bound of {MAX_ACTIVATION_BYTES / 2**30:.0f} GB; "
            f"lower data.crop_size or data.batch_size, or the networks' "
            f"{', '.join('model.' + option for option in options)}")


def training_activations(config: Config, crop_size: int, *, check_parameters: bool = False
                         ) -> tuple[float, tuple[str, ...]]:
    """Elements of activations one training crop of `crop_size` keeps for the backward pass
    in these networks (`sizes.py`), and the model options that set them. With
    `check_parameters`, networks beyond MAX_PARAMETERS are refused on the way."""
    refuse = _refuse_parameters if check_parameters else lambda *_: None
    model = config.model
    outputs = len(config.data.target_channels)
    if model.kind == "viscy":
        options = ("encoder_blocks", "dims")
        parameters = sizes.viscy_encoder_parameters(
            encoder_blocks=model.encoder_blocks, dims=model.dims, stop_at=MAX_PARAMETERS)
        refuse("the VisCy network", parameters, model, options)
        elements = sizes.viscy_activations(
            crop_size=crop_size, encoder_blocks=model.encoder_blocks, dims=model.dims,
            stem_stride=model.stem_kernel_size[-1])
    else:
        options = ("ngf", "n_downsample_global", "n_blocks_global")
        options += ("n_local_enhancers", "n_blocks_local") if model.netG == "local" else ()
        parameters = sizes.generator_parameters(
            input_nc=1, output_nc=outputs, ngf=model.ngf, netG=model.netG,
            n_downsample_global=model.n_downsample_global,
            n_blocks_global=model.n_blocks_global, n_local_enhancers=model.n_local_enhancers,
            n_blocks_local=model.n_blocks_local, norm=model.norm, stop_at=MAX_PARAMETERS)
        refuse("the generator", parameters, model, options)
        elements = sizes.generator_activations(
            crop_size=crop_size, ngf=model.ngf, netG=model.netG,
            n_downsample_global=model.n_downsample_global,
            n_blocks_global=model.n_blocks_global, n_local_enhancers=model.n_local_enhancers,
            n_blocks_local=model.n_blocks_local)
        if model.kind == "gan":
            parameters = sizes.discriminator_parameters(
                input_nc=1 + outputs, ndf=model.ndf, n_layers_D=model.n_layers_D,
                num_D=model.num_D, norm=model.norm, stop_at=MAX_PARAMETERS)
            refuse("the discriminator", parameters, model, ("ndf", "n_layers_D", "num_D"))
            elements += 2 * sizes.discriminator_activations(  # a real and a fake pass
                crop_size=crop_size, ndf=model.ndf, n_layers_D=model.n_layers_D,
                num_D=model.num_D)
    return elements, options


def _refuse_parameters(network: str, parameters: int, model: ModelConfig,
                       options: tuple[str, ...]) -> None:
    if parameters > MAX_PARAMETERS:
        values = ", ".join(f"model.{option}={_shown(getattr(model, option))}"
                           for option in options)
        raise ConfigError(
            f"{values} give {network} at least {parameters:.2g} parameters, beyond the bound "
            f"of {MAX_PARAMETERS:.0e}; lower one of them")


GENERATOR_SHAPE_OPTIONS = ("netG", "ngf", "n_downsample_global", "n_blocks_global",
                           "n_local_enhancers", "n_blocks_local", "norm", "use_dropout",
                           "upsample")
"""Pix2PixHD generator options that change the shapes or names of its weights."""
DISCRIMINATOR_SHAPE_OPTIONS = ("ndf", "n_layers_D", "num_D")
"""The same for the multi-scale discriminator."""
VISCY_SHAPE_OPTIONS = ("encoder_blocks", "dims", "decoder_conv_blocks", "stem_kernel_size",
                       "in_stack_depth")
"""The same for VisCy's UNeXt2 (model.kind=viscy)."""


def _model_options(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"model.{name}" for name in names)


_PIX2PIXHD_GENERATOR = _model_options(GENERATOR_SHAPE_OPTIONS) + ("model.dropout_p",
                                                                  "model.lowpass_output")
_DISCRIMINATOR = _model_options(DISCRIMINATOR_SHAPE_OPTIONS) + (
    "loss.gan_mode", "loss.lambda_feat", "loss.lambda_l1", "loss.l1_blur_sigma", "loss.l1_units")
_VISCY = _model_options(VISCY_SHAPE_OPTIONS)
UNUSED_BY_KIND = {
    "gan": _VISCY,
    "regression": _DISCRIMINATOR + _VISCY,
    "viscy": _PIX2PIXHD_GENERATOR + _DISCRIMINATOR,
}
"""Options each model.kind ignores: the GAN's discriminator and its loss terms (the regression
baseline is trained with plain L1), the other family's network options."""


def _warn_unused(config: Config, references: list[Config]) -> None:
    """One warning line listing the options that `config`'s model.kind ignores and whose values
    differ from every reference (the config they were applied to, or the defaults and presets):
    a value someone chose, which would otherwise be dropped without a word."""
    ignored = [name for name in UNUSED_BY_KIND[config.model.kind]
               if all(_value(config, name) != _value(reference, name) for reference in references)]
    if ignored:
        log.warning("model.kind=%s does not use %s; these values are ignored",
                    config.model.kind,
                    ", ".join(f"{name}={_shown(_value(config, name))}" for name in ignored))


def _value(config: Config, name: str) -> Any:
    section, key = name.split(".")
    return getattr(getattr(config, section), key)


class _LimitedLoader(yaml.SafeLoader):
    """YAML's safe loader with at most MAX_YAML_ALIASES aliases and MAX_YAML_DEPTH levels."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise ConfigError(f"uses more than {MAX_YAML_ALIASES} YAML aliases (*name)")
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise ConfigError(f"nests values more than {MAX_YAML_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _parse_yaml(text: str, source: str) -> Any:
    """YAML text as Python values, refusing alias bombs and deep nesting, in one line."""
    loader = _LimitedLoader(text)
    try:
        return loader.get_single_data()
    except ConfigError as error:
        raise ConfigError(f"{source} {error}; a config needs neither") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source} is not readable YAML ({_shown(str(error))})") from None
    finally:
        loader.dispose()


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6
_SHORT.maxlevel = 2


def _shown(value: Any, length: int = 80) -> str:
    """`repr(value)` cut short: a value read from a file may be huge, or an alias bomb whose
    whole repr would take minutes and gigabytes."""
    text = _SHORT.repr(value)
    return text if len(text) <= length else text[: length - 3] + "..."
