"""Configuration as data: dataclasses with defaults, presets by name, YAML in and out.

A run is one `Config` of four parts (data, model, loss, train); presets (`presets.py`) are
starting points and `--set section.key=value` changes single values (`config_files.py` reads
both forms):

    config = load_config("quick")
    config = apply_overrides(config, ["train.niter=5", "model.ngf=32"])
    save_config(config, "run.yaml")

Model options follow the original Pix2PixHD's names (`ngf`, `ndf`, `num_D`, ...); those of
`kind: viscy` VisCy's own (`encoder_blocks`, `dims`, ...). Every field carries its allowed
values beside it (`fields.py`), and one `validate(config)` checks them all, then the options
that must agree, then the model kind's own checks (its entry in `models.KINDS`), before anything
is built; presets, files, `--set` and the Trainer each call it. The names an option may take
(NORMS, GAN_MODES, ...) live here, beside their fields; the builders import them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, get_type_hints

from pix2pixhd.config_files import (
    ConfigError,
    parse_yaml,
    read_config_file,
    shown,
    split_override,
    write_config_file,
)
from pix2pixhd.fields import bounded as _bounded
from pix2pixhd.fields import (
    check_counts,  # noqa: F401 (the network builders import it here)
    check_value,
)
from pix2pixhd.fields import choice as _choice
from pix2pixhd.fields import folder_name as _folder_name
from pix2pixhd.normalisation import STAIN_MAPS
from pix2pixhd.presets import PRESET_VALUES

GENERATORS = ("global", "local")
NORMS = ("instance", "batch")
UPSAMPLINGS = ("transpose", "resize")
GAN_MODES = ("lsgan", "vanilla")
L1_UNITS = ("model", "stain")
AMP_MODES = ("auto", "bf16", "fp16", "none")

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """Where the images are and how they are cut and fed to the model."""

    root: str = "data"
    """Dataset folder with train/, val/, test/ and dataset.json."""
    input_channel: str = _folder_name("phase")
    target_channels: list[str] = _folder_name(["nuclei"])
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

    kind: str = "gan"
    """A name in `models.KINDS`: 'gan' (Pix2PixHD), 'regression' (the same generator trained
    with L1 only) or 'viscy' (VisCy's 2-D UNeXt2, as VSCyto2D, with VisCy's L1 + MS-DSSIM)."""
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

    name: str = _folder_name("pix2pixhd_nuclei")
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
    init_generator: str = ""
    """A checkpoint whose generator weights start G (same architecture and stain map), e.g.
    the regression model's: the GAN then only has to add what the L1 loss averaged away."""
    init_discriminator: str = ""
    """A checkpoint whose discriminator weights start D (same architecture and stain map), e.g.
    a trained GAN's exported with --keep-discriminator: a critic that already knows the real
    stain's texture, so that a short run's G is pushed towards it from the first step."""
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


def _preset(name: str) -> Callable[[], Config]:
    def make() -> Config:
        return _from_mapping(PRESET_VALUES[name])

    make.__doc__ = f"A new Config of the {name!r} preset (`presets.py`), not yet validated."
    return make


PRESETS: dict[str, Callable[[], Config]] = {name: _preset(name) for name in PRESET_VALUES}
"""Every preset by name: a function that makes a new Config of it."""


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
        raise ConfigError(f"config {shown(str(name_or_path))} is neither a preset "
                          f"({', '.join(PRESETS)}) nor an existing YAML file")
    values = read_config_file(path)
    try:
        config = from_dict(values)
    except ConfigError as error:
        raise ConfigError(f"config {path}: {error}") from error
    _warn_unused(config, [Config()] + [preset() for preset in PRESETS.values()])
    return config


def save_config(config: Config, path: str | Path) -> None:
    """Written atomically; a `path` that is a symbolic link is replaced, not written through."""
    write_config_file(to_dict(config), path)


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply `section.key=value` strings; values are parsed as YAML (so 1e-4, true, [a, b]).

    The result is validated as a whole, so one override may be fixed by the next."""
    result = _from_mapping(to_dict(config))
    for item in overrides:
        section, key, raw = split_override(item)
        if section not in _sections():
            raise ConfigError(f"unknown config section {shown(section)} in {shown(item)}")
        _set_value(result, section, key, parse_yaml(raw, f"the value of {section}.{key}"))
    validate(result)
    _warn_unused(result, [config])
    return result


def validate(config: Config) -> Config:
    """Check a whole config before anything is built from it; ConfigError naming the option.

    Every field against its type, choices and bounds (so a config changed by assignment is
    checked too), then the options that must agree with each other, then the model kind's own
    checks (`models.ModelKind.check_config`: crops, networks' sizes). Returns the config, so
    that calls chain."""
    for section in _sections():
        part = getattr(config, section)
        hints = get_type_hints(type(part))
        for option in dataclasses.fields(part):
            name = f"{section}.{option.name}"
            check_value(getattr(part, option.name), option, hints[option.name], name)
    _check_stains(config.data)
    _model_kind(config.model.kind).check_config(config)
    if config.loss.lambda_vgg > 0 and not config.loss.vgg_weights:
        raise ConfigError(f"loss.lambda_vgg={config.loss.lambda_vgg} needs the VGG19 weights: "
                          "set loss.vgg_weights to their file, or loss.lambda_vgg=0")
    return config


REMOVED_OPTIONS = {("train", "ema_decay"): 0.0, ("loss", "r1_gamma"): 0.0}
"""Options the package no longer has, each with the value that left training unchanged: a
saved run that holds one at that value loads as if it did not (`docs/recipe.md` says what
each did and why it went); at any other value the run cannot be rebuilt."""


def _sections() -> dict[str, type]:
    return {f.name: f.type for f in dataclasses.fields(Config)}


def _from_mapping(values: Any) -> Config:
    """The Config that `values` describe, each value checked alone (not yet `validate`d)."""
    if not isinstance(values, dict):
        raise ConfigError(f"a config is a mapping of sections (data, model, loss, train), not a "
                          f"{type(values).__name__}")
    config = Config()
    for section, entries in values.items():
        if section not in _sections():
            raise ConfigError(
                f"unknown config section {shown(section)}; known: {sorted(_sections())}")
        if not isinstance(entries, dict | None):
            raise ConfigError(f"config section {section!r} holds {shown(entries)}, not a "
                              "mapping")
        for key, value in (entries or {}).items():
            if _removed_and_off(section, key, value):
                continue
            _set_value(config, section, key, value)
    return config


def _removed_and_off(section: str, key: Any, value: Any) -> bool:
    """True for a removed option at its off value; ConfigError for one at any other value."""
    if (section, key) not in REMOVED_OPTIONS:
        return False
    if value == REMOVED_OPTIONS[section, key]:
        return True
    raise ConfigError(f"{section}.{key} = {shown(value)}: the option was removed from the "
                      f"package (docs/recipe.md); only runs with {section}.{key} = "
                      f"{REMOVED_OPTIONS[section, key]} load")


def _set_value(config: Config, section: str, key: str, value: Any) -> None:
    part = getattr(config, section)
    hints = get_type_hints(type(part))
    short = isinstance(key, str) and len(key) <= 60
    name = f"{section}.{key if short else shown(key)}"
    if key not in hints:
        raise ConfigError(f"unknown option {name}; known: {', '.join(sorted(hints))}")
    setattr(part, key, check_value(value, _fields(part)[key], hints[key], name))


def _fields(part: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(part)}


def _check_stains(data: DataConfig) -> None:
    """The stains are the model's outputs: at least one, none twice, and not the input."""
    targets = data.target_channels
    if not targets:
        raise ConfigError("data.target_channels is empty; name the stains to predict, e.g. "
                          "data.target_channels=nuclei")
    if data.input_channel in targets:
        raise ConfigError(
            f"data.target_channels={shown(targets)} includes the input channel "
            f"{data.input_channel!r}: the model would learn to copy its input; list stains only "
            "(nuclei, membrane)")
    repeated = sorted(name for name, count in Counter(targets).items() if count > 1)
    if repeated:
        raise ConfigError(
            f"data.target_channels={shown(targets)} names {', '.join(repeated)} more than "
            "once; list each stain once, e.g. data.target_channels=nuclei,membrane")


class ModelKindChecks(Protocol):
    """What `validate` needs of a model kind's entry in `models.KINDS`."""

    unused_options: tuple[str, ...]

    def check_config(self, config: Config) -> None: ...


_model_kinds: Mapping[str, ModelKindChecks] = {}


def use_model_kinds(kinds: Mapping[str, ModelKindChecks]) -> None:
    """Hand `validate` the table of model kinds. `models` calls it when it is imported (the
    table builds networks, so it sits above this module), and the package's `__init__` imports
    `models`, so the table is in place before any config is checked."""
    global _model_kinds
    _model_kinds = kinds


def _model_kind(name: str) -> ModelKindChecks:
    if name not in _model_kinds:
        raise ConfigError(f"model.kind={shown(name)} is not one of {', '.join(_model_kinds)}")
    return _model_kinds[name]


def _warn_unused(config: Config, references: list[Config]) -> None:
    """One warning line listing the options that `config`'s model.kind ignores and whose values
    differ from every reference (the config they were applied to, or the defaults and presets):
    a value someone chose, which would otherwise be dropped without a word."""
    ignored = [name for name in _model_kind(config.model.kind).unused_options
               if all(_value(config, name) != _value(reference, name) for reference in references)]
    if ignored:
        log.warning("model.kind=%s does not use %s; these values are ignored",
                    config.model.kind,
                    ", ".join(f"{name}={shown(_value(config, name))}" for name in ignored))


def _value(config: Config, name: str) -> Any:
    section, key = name.split(".")
    return getattr(getattr(config, section), key)
