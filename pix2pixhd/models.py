"""The model kinds (`model.kind`): one entry each, the only place a kind is spelled out.

    generator = make_generator(config)            # freshly initialised, from config.model
    discriminator = make_discriminator(config)    # None for kinds trained without one
    kind = model_kind(config.model.kind)          # builders, loss terms, logged tags
    objective = Objective(config, to_stain_units, vgg)  # what D and G minimise, by tag

An entry says how to build the kind's generator and (for a GAN) its discriminator, which loss
terms its generator minimises (TensorBoard tags as keys, weighted as summed), which tags its
training logs, and which options shape its weights (what a resumed checkpoint must match).
Adding a kind is one entry in `KINDS`, and its name in `config.MODEL_KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pix2pixhd import logs
from pix2pixhd.checkpoint import CheckpointError
from pix2pixhd.config import (
    DISCRIMINATOR_SHAPE_OPTIONS,
    GENERATOR_SHAPE_OPTIONS,
    VISCY_SHAPE_OPTIONS,
    Config,
    ConfigError,
    ModelConfig,
    from_dict,
)
from pix2pixhd.losses import (
    DiscriminatorLoss,
    Predictions,
    discriminator_loss,
    feature_matching_loss,
    gan_loss,
    l1_loss,
)
from pix2pixhd.networks import build_discriminator, build_generator
from pix2pixhd.vscyto import build_viscy_generator, viscy_mixed_loss

StainUnits = Callable[[Tensor], Tensor]
"""Normalised stain -> the stain's own units, in steps of the linear map's half-range."""
GeneratorTerms = Callable[..., dict[str, Tensor]]
"""(fake, target, config, real_features, fake_features, to_stain_units) -> {tag: weighted loss
term}. The features are D's (per scale and layer) for kinds with a discriminator, else None;
to_stain_units (`StainUnits`, or None without a dataset) serves loss.l1_units=stain."""


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


def pix2pixhd_generator(model: ModelConfig, input_nc: int, output_nc: int) -> nn.Module:
    """Pix2PixHD's coarse-to-fine generator (G1, optionally inside local enhancers G2)."""
    return build_generator(
        input_nc=input_nc, output_nc=output_nc, ngf=model.ngf, netG=model.netG,
        n_downsample_global=model.n_downsample_global, n_blocks_global=model.n_blocks_global,
        n_local_enhancers=model.n_local_enhancers, n_blocks_local=model.n_blocks_local,
        norm=model.norm, use_dropout=model.use_dropout, dropout_p=model.dropout_p,
        upsample=model.upsample, lowpass_output=model.lowpass_output,
    )


def pix2pixhd_discriminator(model: ModelConfig, input_nc: int) -> nn.Module:
    """The multi-scale PatchGAN; it sees the phase image and a stain side by side."""
    return build_discriminator(input_nc=input_nc, ndf=model.ndf, n_layers_D=model.n_layers_D,
                               num_D=model.num_D, norm=model.norm)


def gan_terms(fake: Tensor, target: Tensor, config: Config, real_features: Predictions,
              fake_features: Predictions, to_stain_units: StainUnits | None = None
              ) -> dict[str, Tensor]:
    """Fool D, match D's features of the real pair and, when weighted, L1 on blurred stains
    (in the stain's units, through `to_stain_units`, when loss.l1_units is 'stain')."""
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
    return {logs.G_L1: l1_loss(fake, target)}


def viscy_terms(fake: Tensor, target: Tensor, config: Config, *_: object) -> dict[str, Tensor]:
    """VisCy's own mixed loss, 0.5 L1 + 0.5 MS-DSSIM."""
    return {logs.G_L1_MSDSSIM: viscy_mixed_loss(fake, target)}


KINDS: dict[str, ModelKind] = {
    "gan": ModelKind(
        build_generator=pix2pixhd_generator,
        build_discriminator=pix2pixhd_discriminator,
        generator_terms=gan_terms,
        tags=(logs.G_GAN, logs.G_GAN_FEAT, logs.G_L1, logs.G_VGG, *logs.DISCRIMINATOR_TAGS,
              *logs.D_OUT_TRAIN_TAGS, *logs.D_OUT_VAL_TAGS),
        architecture_options=GENERATOR_SHAPE_OPTIONS + DISCRIMINATOR_SHAPE_OPTIONS,
    ),
    "regression": ModelKind(
        build_generator=pix2pixhd_generator,
        build_discriminator=None,
        generator_terms=regression_terms,
        tags=(logs.G_L1, logs.G_VGG),
        architecture_options=GENERATOR_SHAPE_OPTIONS,
    ),
    "viscy": ModelKind(
        build_generator=build_viscy_generator,
        build_discriminator=None,
        generator_terms=viscy_terms,
        tags=(logs.G_L1_MSDSSIM, logs.G_VGG),
        architecture_options=VISCY_SHAPE_OPTIONS,
    ),
}
"""Every model kind by its `model.kind` name."""


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
    """The generator of `config.model.kind`, freshly initialised."""
    input_nc, output_nc = channel_counts(config)
    return model_kind(config.model.kind).build_generator(config.model, input_nc, output_nc)


def check_weights_fit(weights: dict[str, Tensor], config: Config, path: object) -> None:
    """CheckpointError naming `path` when saved generator weights do not fit `config`.

    The generator is built on the meta device (shapes only, no memory), so a checkpoint whose
    channels or options disagree with its weights is named here, not by a RuntimeError of
    load_state_dict."""
    with torch.device("meta"):
        built = make_generator(config).state_dict()
    differences = [
        f"{name}: {tuple(weights[name].shape) if name in weights else 'missing'} in the file, "
        f"{tuple(built[name].shape) if name in built else 'none'} from the config"
        for name in sorted(set(weights) | set(built))
        if name not in weights or name not in built or weights[name].shape != built[name].shape]
    if differences:
        raise CheckpointError(
            f"{path}: 'generator' does not fit the checkpoint's own config (model options, "
            f"data.target_channels): {'; '.join(differences[:3])}; it is not a checkpoint as "
            "`pix2pixhd train` writes them, or it was damaged")


def average_or_raw(state: dict) -> dict[str, Tensor]:
    """The generator weights a checkpoint predicts with: the average of G's weights when the
    run kept one (train.ema_decay), else G's own."""
    average = state.get("generator_ema")
    return average if average is not None else state["generator"]


def generator_from_checkpoint(state: dict, path: object) -> tuple[nn.Module, Config]:
    """The generator a checkpoint's `state` predicts with (on the CPU, in train mode: see
    `average_or_raw`) and its config."""
    config = from_dict(state["config"])
    weights = average_or_raw(state)
    check_weights_fit(weights, config, path)
    generator = make_generator(config)
    generator.load_state_dict(weights)
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
