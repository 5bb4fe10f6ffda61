"""Configuration as data: dataclasses with defaults, presets by name, YAML in and out.

A run is described by one `Config` with four parts (data, model, loss, train). Presets give
sensible starting points; `--set section.key=value` on the command line changes single values:

    config = load_config("quick")
    config = apply_overrides(config, ["train.niter=5", "model.ngf=32"])
    save_config(config, "run.yaml")

Model option names follow the original Pix2PixHD (`ngf`, `n_downsample_global`, `ndf`, `num_D`,
...) so that they read the same as in the paper and its code; the options of `kind: viscy` follow
VisCy's own names (`encoder_blocks`, `dims`, ...).

The allowed values of the options that take a name (NORMS, GAN_MODES, ...) live here, beside
their fields, and nowhere else: the network and loss builders import them to check their own
arguments. Of the package it imports only `layout`'s check of plain names (which imports
nothing of the package), so every layer can depend on it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from pix2pixhd.layout import DataError, plain_name

MODEL_KINDS = ("gan", "regression", "viscy")
GENERATORS = ("global", "local")
NORMS = ("instance", "batch")
UPSAMPLINGS = ("transpose", "resize")
GAN_MODES = ("lsgan", "vanilla")
AMP_MODES = ("auto", "bf16", "fp16", "none")


class ConfigError(ValueError):
    """A configuration value or key that cannot be used."""


def _choice(default: str, allowed: tuple[str, ...]) -> Any:
    """A field that takes one of `allowed`; `_set_value` refuses anything else."""
    return field(default=default, metadata={"choices": allowed})


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
    crop_size: int = 256
    """Side of the random square crops used for training, in pixels."""
    val_crop_size: int = 512
    """Side of the centre crop used for validation; 0 keeps the whole image."""
    batch_size: int = 4
    num_workers: int = 2
    augment: bool = True
    """Random flips and 90-degree rotations of the training crops."""
    crops_per_image: int = 1
    """Random crops drawn from every training image in one epoch."""


@dataclass
class ModelConfig:
    """The generator and discriminator, with the original Pix2PixHD option names."""

    kind: str = _choice("gan", MODEL_KINDS)
    """'gan' (Pix2PixHD), 'regression' (the same generator trained with L1 only) or 'viscy'
    (VisCy's 2-D UNeXt2 network, as VSCyto2D, trained with VisCy's L1 + MS-DSSIM loss)."""
    netG: str = _choice("global", GENERATORS)
    """'global' (G1 alone) or 'local' (G1 inside local enhancers G2)."""
    ngf: int = 64
    n_downsample_global: int = 4
    n_blocks_global: int = 9
    n_local_enhancers: int = 1
    n_blocks_local: int = 3
    norm: str = _choice("instance", NORMS)
    use_dropout: bool = True
    """Dropout in the residual blocks: a regulariser, and what MC-dropout samples from."""
    dropout_p: float = 0.2
    upsample: str = _choice("transpose", UPSAMPLINGS)
    """Decoder upsampling: 'transpose' (the original's transposed convolutions, whose state dicts
    load) or 'resize' (nearest x2 then a 3x3 convolution, free of checkerboard artefacts)."""
    ndf: int = 32
    n_layers_D: int = 3
    num_D: int = 3
    # kind=viscy: VisCy's FullyConvolutionalMAE options under VisCy's names; defaults are VSCyto2D's
    encoder_blocks: list[int] = field(default_factory=lambda: [3, 3, 9, 3])
    """ConvNeXt V2 blocks in each of the four encoder stages."""
    dims: list[int] = field(default_factory=lambda: [96, 192, 384, 768])
    """Channels of the four encoder stages (the decoder mirrors them)."""
    decoder_conv_blocks: int = 2
    stem_kernel_size: list[int] = field(default_factory=lambda: [1, 2, 2])
    """(Z, Y, X) kernel and stride of the stem: the first 2x downsampling in Y and X."""
    in_stack_depth: int = 1
    """Z slices per input; 1 for 2-D images (the only depth our data has)."""


@dataclass
class LossConfig:
    """The terms of the objective and their weights."""

    gan_mode: str = _choice("lsgan", GAN_MODES)
    """'lsgan' (least squares, as Pix2PixHD) or 'vanilla' (binary cross-entropy)."""
    lambda_feat: float = 10.0
    """Weight of the discriminator feature-matching loss."""
    lambda_l1: float = 0.0
    """Weight of an L1 term for the GAN; the regression model always uses L1 alone."""
    l1_blur_sigma: float = 0.0
    """Gaussian sigma (pixels) of a blur applied to both images before the GAN's L1 term: 0 is
    pixel-wise; a few pixels keep the nuclei's places and brightness but free their texture."""
    lambda_vgg: float = 0.0
    """Weight of the VGG perceptual loss; needs `vgg_weights` on disk."""
    vgg_weights: str = ""


@dataclass
class TrainConfig:
    """How long, how fast, and where to save."""

    name: str = "pix2pixhd_nuclei"
    checkpoints_dir: str = "checkpoints"
    niter: int = 100
    """Epochs at the initial learning rate."""
    niter_decay: int = 100
    """Epochs over which the learning rate then falls linearly to zero."""
    lr: float = 2e-4
    lr_D_ratio: float = 1.0
    """The discriminator's learning rate as a multiple of lr (1 as the original)."""
    beta1: float = 0.5
    beta2: float = 0.999
    seed: int = 0
    save_every: int = 10
    """Keep an `epoch_NNN.pt` checkpoint every this many epochs (latest.pt is always written)."""
    log_every: int = 10
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
    """What the recipe ablation kept (README, `scripts/ablation.py`): resize-convolutions in the
    decoder (no checkerboard), a light feature-matching weight, which lets the adversarial term
    put back the texture that feature matching averages away, and an L1 term on blurred
    stains that keeps the nuclei where the real stain has them (the GAN with lambda_feat 1
    alone swung between epochs, down to F1 0.24 on validation) without pulling their texture
    towards the blurry median, as pixel-wise L1 does."""
    config.model.upsample = "resize"
    config.loss.lambda_feat = 1.0
    config.loss.lambda_l1 = 20.0
    config.loss.l1_blur_sigma = 2.0
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
    """The quick model's architecture trained longer: the models shipped in git."""
    config = _quick()
    config.data.num_workers = 1
    config.train.niter = 15
    config.train.niter_decay = 15
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
    """Build a Config from a nested dict, refusing unknown sections and keys."""
    config = Config()
    for section, entries in values.items():
        if section not in _sections():
            raise ConfigError(f"unknown config section {section!r}; known: {sorted(_sections())}")
        if not isinstance(entries, dict | None):
            raise ConfigError(f"config section {section!r} holds {entries!r}, not a mapping")
        for key, value in (entries or {}).items():
            _set_value(config, section, key, value)
    return config


def load_config(name_or_path: str | Path) -> Config:
    """A preset by name (quick, pretrained, course) or a YAML file written by `save_config`."""
    if str(name_or_path) in PRESETS:
        return PRESETS[str(name_or_path)]()
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(
            f"config {str(name_or_path)!r} is neither a preset ({', '.join(PRESETS)}) "
            "nor an existing YAML file"
        )
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"config {path} is not readable YAML ({error})") from error
    if not isinstance(values, dict):
        raise ConfigError(f"config {path} holds a {type(values).__name__}, not a mapping of "
                          "sections (data, model, loss, train); write one with `save_config`")
    return from_dict(values)


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply `section.key=value` strings; values are parsed as YAML (so 1e-4, true, [a, b])."""
    config = from_dict(to_dict(config))
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        dotted, raw = item.split("=", 1)
        section, key = dotted.split(".", 1)
        if section not in _sections():
            raise ConfigError(f"unknown config section {section!r} in {item!r}")
        _set_value(config, section, key, yaml.safe_load(raw))
    return config


def _sections() -> dict[str, type]:
    return {f.name: f.type for f in dataclasses.fields(Config)}


AT_LEAST = {
    "data.batch_size": 1, "data.crops_per_image": 1, "data.num_workers": 0,
    "data.crop_size": 0, "data.val_crop_size": 0, "model.ngf": 1, "model.ndf": 1,
    "model.n_downsample_global": 0, "model.n_blocks_global": 0, "model.n_local_enhancers": 0,
    "model.n_blocks_local": 0, "model.n_layers_D": 1, "model.num_D": 1,
    "train.niter": 0, "train.niter_decay": 0, "train.save_every": 1, "train.log_every": 1,
}
"""Smallest allowed value of the counts: a zero or negative count would fail late or do nothing."""

NAMES = ("train.name", "data.input_channel", "data.target_channels")
"""Options that become folder names, so must each be one plain path component."""


def _set_value(config: Config, section: str, key: str, value: Any) -> None:
    part = getattr(config, section)
    hints = get_type_hints(type(part))
    name = f"{section}.{key}"
    if key not in hints:
        raise ConfigError(f"unknown option {name}; known: {', '.join(sorted(hints))}")
    value = _coerce(value, hints[key], name)
    allowed = _fields(part)[key].metadata.get("choices")
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}")
    if name in AT_LEAST and value < AT_LEAST[name]:
        raise ConfigError(f"{name}={value} must be at least {AT_LEAST[name]}")
    if name in NAMES:
        for text in value if isinstance(value, list) else [value]:
            _check_plain_name(text, name)
    setattr(part, key, value)


def _fields(part: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(part)}


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
        except ValueError:
            pass
    if get_origin(expected) is list:
        (item_type,) = get_args(expected)
        if isinstance(value, str):  # "nuclei,membrane" or "32,64,128,256"
            value = [yaml.safe_load(v.strip()) if item_type is int else v.strip()
                     for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)) and all(
            isinstance(v, item_type) and not isinstance(v, bool) for v in value
        ):
            return list(value)
    elif isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{name} expects {getattr(expected, '__name__', expected)}, got {value!r}")
