"""The model kinds (`model.kind`): one entry each, the only place a kind is spelled out.

    generator = make_generator(config)            # freshly initialised, from config.model
    discriminator = make_discriminator(config)    # None for kinds trained without one
    kind = model_kind(config.model.kind)          # builders, loss terms, logged tags
    objective = Objective(config, to_stain_units, vgg)  # what D and G minimise, by tag

An entry says how to build the kind's generator and (for a GAN) its discriminator, which loss
terms its generator minimises (TensorBoard tags as keys, weighted as summed), which tags its
training logs, which options shape its weights (what a resumed checkpoint must match), which
options it ignores, and the checks its options must pass (crop multiples, network sizes).
Adding a kind is one entry in `KINDS`. `config.validate` runs each entry's checks through
`config.use_model_kinds`, which this module calls on import; the package's `__init__` imports
it, so no config is checked without them. The table sits above `config` (it builds networks),
and imports torch and the network and loss modules only where it builds and computes, so that
importing the package (the `data` commands, `--help`) does not load torch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from pix2pixhd import logs, sizes
from pix2pixhd.config import (
    Config,
    ConfigError,
    ModelConfig,
    from_dict,
    shown,
    use_model_kinds,
)

if TYPE_CHECKING:
    from torch import Tensor, nn

    from pix2pixhd.losses import DiscriminatorLoss, Predictions

MAX_PARAMETERS = 1_000_000_000
"""Most parameters one network may have: 4 GB of float32 weights, 16 GB with their gradients
and Adam's two moments. The course's generator has 182 M."""
MAX_ACTIVATION_BYTES = 64 * 2**30
"""Most memory the estimated activations of one training step may take (`sizes.py`); the
`course` preset's come to about 4 GB, the largest course GPUs hold 80 GB."""

StainUnits = Callable[["Tensor"], "Tensor"]
"""Normalised stain -> the stain's own units, in steps of the linear map's half-range."""
GeneratorTerms = Callable[..., dict[str, "Tensor"]]
"""(fake, target, config, real_features, fake_features, to_stain_units) -> {tag: weighted loss
term}. The features are D's (per scale and layer) for kinds with a discriminator, else None;
to_stain_units (`StainUnits`, or None without a dataset) serves loss.l1_units=stain."""


class SizeMultiple(NamedTuple):
    """What every crop side must be a multiple of, for the generator to halve it and double it
    back: the number, how it comes from the options, and the option that lowers it."""

    multiple: int
    source: str
    option: str


class StepSize(NamedTuple):
    """A training step's activations per sample (float elements) and the options that set them."""

    elements: int
    options: tuple[str, ...]


@dataclass(frozen=True)
class ModelKind:
    """What one `model.kind` is: its networks, its generator's loss, its logs."""

    build_generator: Callable[[ModelConfig, int, int], nn.Module]
    """(model options, input channels, output channels) -> the generator."""
    build_discriminator: Callable[[ModelConfig, int], nn.Module] | None
    """(model options, channels of a phase-and-stain pair) -> D; None: no adversary."""
    generator_terms: GeneratorTerms
    tags: tuple[str, ...]
    """The scalar tags its training writes besides lr, throughput and val/psnr, val/ssim."""
    architecture_options: tuple[str, ...]
    """ModelConfig fields that change the shapes or names of its weights."""
    unused_options: tuple[str, ...]
    """`section.option` names it ignores: a value set for one gets a warning, not an error."""
    size_multiple: Callable[[ModelConfig], SizeMultiple]
    step_size: Callable[[Config], StepSize]
    """Refuses networks beyond MAX_PARAMETERS; else what one training step holds."""
    check_options: Callable[[ModelConfig], None] | None = None
    """Its own checks of options that must agree with each other, or None."""
    check_crop: Callable[[int, str, ModelConfig], None] | None = None
    """(side, option name, model options): a rule for each crop side beyond the multiple."""

    def check_config(self, config: Config) -> None:
        """ConfigError naming the option, for a config this kind cannot build or train: its own
        option checks, its networks' sizes, then the crops (`config.validate` calls it)."""
        if self.check_options is not None:
            self.check_options(config.model)
        check_step_memory(config, self.step_size(config))
        multiple, source, option = self.size_multiple(config.model)
        for name in ("crop_size", "val_crop_size"):
            side = getattr(config.data, name)
            if side % multiple:  # 0, the whole image, is checked when the images are read
                nearest = sorted({max(multiple, side // multiple * multiple), side // multiple
                                  * multiple + multiple})
                raise ConfigError(
                    f"data.{name}={side} is not a multiple of {multiple} ({source}), which the "
                    f"generator needs to halve and double it back; use data.{name}="
                    f"{' or '.join(map(str, nearest))}, or a smaller {option}")
            if self.check_crop is not None and side:
                self.check_crop(side, f"data.{name}", config.model)


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


PIX2PIXHD_GENERATOR_OPTIONS = _model_options(GENERATOR_SHAPE_OPTIONS) + (
    "model.dropout_p", "model.lowpass_output")
"""Every option of the Pix2PixHD generator."""
DISCRIMINATOR_OPTIONS = _model_options(DISCRIMINATOR_SHAPE_OPTIONS) + (
    "loss.gan_mode", "loss.lambda_feat", "loss.lambda_l1", "loss.l1_blur_sigma", "loss.l1_units",
    "train.lr_D_ratio", "train.init_discriminator")
"""Every option of the discriminator, of its training and of the GAN's generator loss (the
regression baseline is trained with plain L1)."""
VISCY_OPTIONS = _model_options(VISCY_SHAPE_OPTIONS)
"""Every option of VisCy's network."""


def pix2pixhd_size_multiple(model: ModelConfig) -> SizeMultiple:
    """G1 halves a crop n_downsample_global times, each local enhancer once more."""
    if model.netG == "local":
        return SizeMultiple(2 ** (model.n_downsample_global + model.n_local_enhancers),
                            "2**(model.n_downsample_global + model.n_local_enhancers)",
                            "model.n_downsample_global")
    return SizeMultiple(2**model.n_downsample_global, "2**model.n_downsample_global",
                        "model.n_downsample_global")


def viscy_size_multiple(model: ModelConfig) -> SizeMultiple:
    """VisCy's stem strides by its kernel, then each later stage halves."""
    return SizeMultiple(model.stem_kernel_size[-1] * 2 ** (len(model.dims) - 1),
                        "model.stem_kernel_size[-1] * 2**(stages in model.dims - 1)",
                        "model.dims")


def check_viscy_stages(model: ModelConfig) -> None:
    """VisCy's encoder has one entry of dims and of encoder_blocks per stage."""
    if not model.dims or len(model.dims) != len(model.encoder_blocks):
        raise ConfigError(
            f"model.dims has {len(model.dims)} entries and model.encoder_blocks "
            f"{len(model.encoder_blocks)}: give one entry per encoder stage in each")
    if len(model.stem_kernel_size) != 3:
        raise ConfigError(f"model.stem_kernel_size={shown(model.stem_kernel_size)} must "
                          "have 3 entries: (Z, Y, X)")


def check_discriminator_scales(side: int, name: str, model: ModelConfig) -> None:
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


def pix2pixhd_generator_step(config: Config) -> StepSize:
    """The Pix2PixHD generator's parameters (bounded) and activations."""
    model, data = config.model, config.data
    options = ("ngf", "n_downsample_global", "n_blocks_global")
    options += ("n_local_enhancers", "n_blocks_local") if model.netG == "local" else ()
    parameters = sizes.generator_parameters(
        input_nc=1, output_nc=len(data.target_channels), ngf=model.ngf, netG=model.netG,
        n_downsample_global=model.n_downsample_global,
        n_blocks_global=model.n_blocks_global, n_local_enhancers=model.n_local_enhancers,
        n_blocks_local=model.n_blocks_local, norm=model.norm, stop_at=MAX_PARAMETERS)
    refuse_parameters("the generator", parameters, model, options)
    elements = sizes.generator_activations(
        crop_size=data.crop_size, ngf=model.ngf, netG=model.netG,
        n_downsample_global=model.n_downsample_global,
        n_blocks_global=model.n_blocks_global, n_local_enhancers=model.n_local_enhancers,
        n_blocks_local=model.n_blocks_local)
    return StepSize(elements, options)


def gan_step(config: Config) -> StepSize:
    """The generator's step and the discriminator's: a real and a fake pass."""
    model, data = config.model, config.data
    generator = pix2pixhd_generator_step(config)
    parameters = sizes.discriminator_parameters(
        input_nc=1 + len(data.target_channels), ndf=model.ndf, n_layers_D=model.n_layers_D,
        num_D=model.num_D, norm=model.norm, stop_at=MAX_PARAMETERS)
    refuse_parameters("the discriminator", parameters, model, ("ndf", "n_layers_D", "num_D"))
    elements = 2 * sizes.discriminator_activations(
        crop_size=data.crop_size, ndf=model.ndf, n_layers_D=model.n_layers_D, num_D=model.num_D)
    return StepSize(generator.elements + elements, generator.options)


def viscy_step(config: Config) -> StepSize:
    """VisCy's encoder parameters (bounded) and the network's activations."""
    model = config.model
    options = ("encoder_blocks", "dims")
    parameters = sizes.viscy_encoder_parameters(
        encoder_blocks=model.encoder_blocks, dims=model.dims, stop_at=MAX_PARAMETERS)
    refuse_parameters("the VisCy network", parameters, model, options)
    elements = sizes.viscy_activations(
        crop_size=config.data.crop_size, encoder_blocks=model.encoder_blocks, dims=model.dims,
        stem_stride=model.stem_kernel_size[-1])
    return StepSize(elements, options)


def training_activations(config: Config, crop_size: int) -> StepSize:
    """What one training crop of `crop_size` keeps for the backward pass in this kind's
    networks (`sizes.py`), and the options that set it: the benchmark's memory check."""
    sized = copy.deepcopy(config)
    sized.data.crop_size = crop_size
    return model_kind(config.model.kind).step_size(sized)


def refuse_parameters(network: str, parameters: int, model: ModelConfig,
                      options: tuple[str, ...]) -> None:
    """ConfigError naming `options` when `network` has more than MAX_PARAMETERS parameters."""
    if parameters > MAX_PARAMETERS:
        values = ", ".join(f"model.{option}={shown(getattr(model, option))}"
                           for option in options)
        raise ConfigError(
            f"{values} give {network} at least {parameters:.2g} parameters, beyond the bound "
            f"of {MAX_PARAMETERS:.0e}; lower one of them")


def check_step_memory(config: Config, step: StepSize) -> None:
    """Refuse a training step beyond MAX_ACTIVATION_BYTES before anything is allocated."""
    data = config.data
    step_bytes = step.elements * data.batch_size * sizes.FLOAT_BYTES
    if step_bytes > MAX_ACTIVATION_BYTES:
        raise ConfigError(
            f"data.crop_size={data.crop_size} and data.batch_size={data.batch_size} make "
            f"about {step_bytes / 2**30:.3g} GB of activations in one training step with "
            f"these networks, beyond the bound of {MAX_ACTIVATION_BYTES / 2**30:.0f} GB; "
            f"lower data.crop_size or data.batch_size, or the networks' "
            f"{', '.join('model.' + option for option in step.options)}")


def pix2pixhd_generator(model: ModelConfig, input_nc: int, output_nc: int) -> nn.Module:
    """Pix2PixHD's coarse-to-fine generator (G1, optionally inside local enhancers G2)."""
    from pix2pixhd.networks import build_generator

    return build_generator(
        input_nc=input_nc, output_nc=output_nc, ngf=model.ngf, netG=model.netG,
        n_downsample_global=model.n_downsample_global, n_blocks_global=model.n_blocks_global,
        n_local_enhancers=model.n_local_enhancers, n_blocks_local=model.n_blocks_local,
        norm=model.norm, use_dropout=model.use_dropout, dropout_p=model.dropout_p,
        upsample=model.upsample, lowpass_output=model.lowpass_output,
    )


def pix2pixhd_discriminator(model: ModelConfig, input_nc: int) -> nn.Module:
    """The multi-scale PatchGAN; it sees the phase image and a stain side by side."""
    from pix2pixhd.networks import build_discriminator

    return build_discriminator(input_nc=input_nc, ndf=model.ndf, n_layers_D=model.n_layers_D,
                               num_D=model.num_D, norm=model.norm)


def gan_terms(fake: Tensor, target: Tensor, config: Config, real_features: Predictions,
              fake_features: Predictions, to_stain_units: StainUnits | None = None
              ) -> dict[str, Tensor]:
    """Fool D, match D's features of the real pair and, when weighted, L1 on blurred stains
    (in the stain's units, through `to_stain_units`, when loss.l1_units is 'stain')."""
    from pix2pixhd.losses import feature_matching_loss, gan_loss, l1_loss

    loss = config.loss
    terms = {
        logs.G_GAN: gan_loss(fake_features, True, loss.gan_mode),
        logs.G_GAN_FEAT: loss.lambda_feat * feature_matching_loss(
            real_features, fake_features,
            n_layers_D=config.model.n_layers_D, num_D=config.model.num_D),
    }
    if loss.lambda_l1 > 0:
        if loss.l1_units == "stain":
            if to_stain_units is None:
                raise ValueError("loss.l1_units=stain needs the stain's normalisation")
            fake, target = to_stain_units(fake), to_stain_units(target)
        terms[logs.G_L1] = loss.lambda_l1 * l1_loss(fake, target, loss.l1_blur_sigma)
    return terms


def regression_terms(fake: Tensor, target: Tensor, config: Config, *_: object
                     ) -> dict[str, Tensor]:
    """The regression baseline: pixel-wise L1 alone (the GAN's L1 options do not apply)."""
    from pix2pixhd.losses import l1_loss

    return {logs.G_L1: l1_loss(fake, target)}


def viscy_terms(fake: Tensor, target: Tensor, config: Config, *_: object) -> dict[str, Tensor]:
    """VisCy's own mixed loss, 0.5 L1 + 0.5 MS-DSSIM."""
    from pix2pixhd.vscyto import viscy_mixed_loss

    return {logs.G_L1_MSDSSIM: viscy_mixed_loss(fake, target)}


def viscy_generator(model: ModelConfig, input_nc: int, output_nc: int) -> nn.Module:
    """VisCy's 2-D UNeXt2, as VSCyto2D (`vscyto.py`)."""
    from pix2pixhd.vscyto import build_viscy_generator

    return build_viscy_generator(model, input_nc, output_nc)


KINDS: dict[str, ModelKind] = {
    "gan": ModelKind(
        build_generator=pix2pixhd_generator,
        build_discriminator=pix2pixhd_discriminator,
        generator_terms=gan_terms,
        tags=(logs.G_GAN, logs.G_GAN_FEAT, logs.G_L1, logs.G_VGG, *logs.DISCRIMINATOR_TAGS,
              *logs.D_OUT_TRAIN_TAGS, *logs.D_OUT_VAL_TAGS),
        architecture_options=GENERATOR_SHAPE_OPTIONS + DISCRIMINATOR_SHAPE_OPTIONS,
        unused_options=VISCY_OPTIONS,
        size_multiple=pix2pixhd_size_multiple,
        step_size=gan_step,
        check_crop=check_discriminator_scales,
    ),
    "regression": ModelKind(
        build_generator=pix2pixhd_generator,
        build_discriminator=None,
        generator_terms=regression_terms,
        tags=(logs.G_L1, logs.G_VGG),
        architecture_options=GENERATOR_SHAPE_OPTIONS,
        unused_options=DISCRIMINATOR_OPTIONS + VISCY_OPTIONS,
        size_multiple=pix2pixhd_size_multiple,
        step_size=pix2pixhd_generator_step,
    ),
    "viscy": ModelKind(
        build_generator=viscy_generator,
        build_discriminator=None,
        generator_terms=viscy_terms,
        tags=(logs.G_L1_MSDSSIM, logs.G_VGG),
        architecture_options=VISCY_SHAPE_OPTIONS,
        unused_options=PIX2PIXHD_GENERATOR_OPTIONS + DISCRIMINATOR_OPTIONS,
        size_multiple=viscy_size_multiple,
        step_size=viscy_step,
        check_options=check_viscy_stages,
    ),
}
"""Every model kind by its `model.kind` name."""
use_model_kinds(KINDS)


def model_kind(name: str) -> ModelKind:
    """The table entry of `model.kind` = name."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"model.kind={name!r} is not one of {', '.join(KINDS)}") from None


def channel_counts(config: Config) -> tuple[int, int]:
    """(input channels, output channels): one phase image in, one map per target stain out."""
    return 1, len(config.data.target_channels)


def make_generator(config: Config) -> nn.Module:
    """The generator of `config.model.kind`, freshly initialised. It keeps the side of its
    training crops, `training_crop_size`: prediction tiles larger images to that side
    (`predict.default_tile_size`), the size its instance norms learnt their statistics on."""
    input_nc, output_nc = channel_counts(config)
    generator = model_kind(config.model.kind).build_generator(config.model, input_nc, output_nc)
    generator.training_crop_size = config.data.crop_size
    return generator


def shape_differences(weights: dict[str, Tensor], built: dict[str, Tensor]) -> list[str]:
    """Each tensor whose shape differs between saved `weights` and a `built` network's state
    (or that only one of them has), as 'name: file shape, config shape'."""
    return [
        f"{name}: {tuple(weights[name].shape) if name in weights else 'missing'} in the file, "
        f"{tuple(built[name].shape) if name in built else 'none'} from the config"
        for name in sorted(set(weights) | set(built))
        if name not in weights or name not in built or weights[name].shape != built[name].shape]


def check_weights_fit(weights: dict[str, Tensor], config: Config, path: object) -> None:
    """CheckpointError naming `path` when saved generator weights do not fit `config`.

    The generator is built on the meta device (shapes only, no memory), so a checkpoint whose
    channels or options disagree with its weights is named here, not by a RuntimeError of
    load_state_dict."""
    import torch

    from pix2pixhd.checkpoint import CheckpointError

    with torch.device("meta"):
        differences = shape_differences(weights, make_generator(config).state_dict())
    if differences:
        raise CheckpointError(
            f"{path}: 'generator' does not fit the checkpoint's own config (model options, "
            f"data.target_channels): {'; '.join(differences[:3])}; it is not a checkpoint as "
            "`pix2pixhd train` writes them, or it was damaged")


def generator_from_checkpoint(state: dict, path: object) -> tuple[nn.Module, Config]:
    """The generator a checkpoint's `state` holds (on the CPU, in train mode) and its config."""
    config = from_dict(state["config"])
    check_weights_fit(state["generator"], config, path)
    generator = make_generator(config)
    generator.load_state_dict(state["generator"])
    return generator, config


def make_discriminator(config: Config) -> nn.Module | None:
    """The discriminator of `config.model.kind` (input: phase and stains), or None."""
    build = model_kind(config.model.kind).build_discriminator
    if build is None:
        return None
    input_nc, output_nc = channel_counts(config)
    return build(config.model, input_nc + output_nc)


class Objective:
    """What training minimises under one configuration, computed in one place: D's loss, and
    G's weighted terms by tag (its kind's terms, plus the perceptual term when a VGG network is
    given). The Trainer, the exercise's checks and their reference step all call it, so what
    TensorBoard shows, what G learns from and what a student's answer is held to cannot part.
    """

    def __init__(self, config: Config, to_stain_units: StainUnits | None = None,
                 vgg: nn.Module | None = None) -> None:
        self.config = config
        self.to_stain_units = to_stain_units
        """For loss.l1_units=stain: normalised stain -> the stain's own units."""
        self.vgg = vgg
        """The perceptual network (`losses.VGGLoss`), or None: no G_VGG term."""

    def discriminator_loss(self, real_features: Predictions, fake_features: Predictions
                           ) -> DiscriminatorLoss:
        """(0.5 * (real + fake), real, fake) under loss.gan_mode; `fake_features` must be D's
        features of the detached fake, so that this loss trains D alone."""
        from pix2pixhd.losses import discriminator_loss

        return discriminator_loss(real_features, fake_features, self.config.loss.gan_mode)

    def generator_terms(self, fake: Tensor, target: Tensor,
                        real_features: Predictions | None = None,
                        fake_features: Predictions | None = None) -> dict[str, Tensor]:
        """G's terms by tag, each times its weight: G minimises their sum. The features are
        D's of the real pair (kept from D's step) and of (phase, fake); None without a D."""
        terms = model_kind(self.config.model.kind).generator_terms(
            fake, target, self.config, real_features, fake_features, self.to_stain_units)
        if self.vgg is not None:
            terms[logs.G_VGG] = self.config.loss.lambda_vgg * self.vgg(fake.float(),
                                                                        target.float())
        return terms
