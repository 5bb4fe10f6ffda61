"""VisCy's 2-D virtual-staining network (VSCyto2D's UNeXt2) inside this package's loop.

VisCy (mehta-lab) trains its virtual-staining models by regression: VSCyto2D is a fully
convolutional masked-autoencoder U-Net (ConvNeXt V2 encoder, pixel-shuffle decoder) fitted with
0.5 L1 + 0.5 MS-DSSIM. Here the `viscy` package's own classes are used, not a copy:

    generator = build_viscy_generator(config.model, input_nc=1, output_nc=1)  # kind=viscy
    loss = viscy_mixed_loss(prediction, target)                              # VisCy's MixedLoss
    generator, config, normaliser = load_viscy_predictor("VSCyto2D.ckpt", dataset_root="data")

Units. A model trained here (`model.kind=viscy`) sees the same normalised images as the GAN
and the regression baseline (phase: train-split median 0, IQR 1; stains: p_low -> -1, p_high
-> +1) so the three compare in the same units, but its output stays linear, as VisCy's head
is: no tanh, so stain brighter than p_high (mitotic nuclei) remains reachable and the loss has
no saturated gradients. A published VisCy checkpoint follows VisCy's own recipe instead: phase
normalised per field of view (its median and IQR), stains predicted in median/IQR units; its
outputs are mapped to stain units with the train split's stain median and IQR.

`viscy` imports Lightning and MONAI (seconds), so it is imported only when a VisCy model is
built or loaded.
"""

from __future__ import annotations

import functools
import inspect
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pix2pixhd.checkpoint import CheckpointError
from pix2pixhd.config import Config, ModelConfig
from pix2pixhd.normalisation import PerImageNormaliser

log = logging.getLogger(__name__)

VISCY_OUTPUT_CHANNELS = ("nuclei", "membrane")
"""VSCyto2D's output channels in order, as VisCy's prediction example reads them."""

SSIM_WINDOW = 11
"""In-plane window of VisCy's MS-SSIM: every scale must be at least this many pixels wide."""

VISCY_ARCHITECTURES = ("fcmae", "UNeXt2_2D")
"""VisCy's names for the FullyConvolutionalMAE network in a checkpoint's hyper-parameters."""


def _require_viscy() -> None:
    try:
        import viscy  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"model.kind=viscy needs the viscy package ({error}); install it with "
            "`pip install -e '.[viscy]'` (setup.sh does)"
        ) from error


# --- the network ---------------------------------------------------------------------------


class VisCyGenerator(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, H, W), through VisCy's FullyConvolutionalMAE.

    VisCy's network takes stacks (B, C, Z, H, W); a 2-D image is a stack of depth 1. The network
    sits in `self.model`, the attribute name VisCy's Lightning module uses, so a VisCy
    checkpoint's `model.`-prefixed weights load without renaming.
    """

    def __init__(self, network: nn.Module, size_multiple: int) -> None:
        super().__init__()
        self.model = network
        self.size_multiple = size_multiple
        """H and W must be multiples of this (predict pads to it)."""

    def to(self, *args: Any, **kwargs: Any) -> VisCyGenerator:
        """nn.Module.to without `memory_format`: channels_last is a 4-D layout, and the stem's
        3-D convolution has 5-D weights that cannot take it (the Trainer asks for it on CUDA)."""
        kwargs.pop("memory_format", None)
        return super().to(*args, **kwargs)

    def forward(self, phase: torch.Tensor) -> torch.Tensor:
        if phase.shape[-2] % self.size_multiple or phase.shape[-1] % self.size_multiple:
            raise ValueError(
                f"VisCy's network needs height and width divisible by {self.size_multiple}; "
                f"got {tuple(phase.shape[-2:])}: pad the image (predict does) or crop it"
            )
        return self.model(phase.unsqueeze(2)).squeeze(2)


def viscy_size_multiple(stem_kernel_size: list[int], dims: list[int]) -> int:
    """The stem strides by its kernel in Y and X, then each further stage halves the image."""
    return int(stem_kernel_size[-1]) * 2 ** (len(dims) - 1)


def viscy_network_options(model: ModelConfig, input_nc: int, output_nc: int) -> dict[str, Any]:
    """FullyConvolutionalMAE's keyword arguments (VisCy's `model_config`) from our ModelConfig."""
    if model.in_stack_depth != 1:
        raise ValueError(
            f"model.in_stack_depth={model.in_stack_depth}: the images here are 2-D, so the "
            "stack depth must be 1"
        )
    return {
        "in_channels": input_nc,
        "out_channels": output_nc,
        "encoder_blocks": list(model.encoder_blocks),
        "dims": list(model.dims),
        "decoder_conv_blocks": model.decoder_conv_blocks,
        "stem_kernel_size": list(model.stem_kernel_size),
        "in_stack_depth": model.in_stack_depth,
        "pretraining": False,  # supervised: forward returns the prediction, not (x, mask)
    }


def build_viscy_generator(model: ModelConfig, input_nc: int, output_nc: int) -> VisCyGenerator:
    """VisCy's UNeXt2 (FullyConvolutionalMAE) with our config's sizes, freshly initialised."""
    _require_viscy()
    from viscy.unet.networks.fcmae import FullyConvolutionalMAE

    options = viscy_network_options(model, input_nc, output_nc)
    if len(options["dims"]) != len(options["encoder_blocks"]):
        raise ValueError(
            f"model.dims {options['dims']} and model.encoder_blocks "
            f"{options['encoder_blocks']} must have one entry per encoder stage each"
        )
    network = FullyConvolutionalMAE(**options)
    # A stack of depth 1 goes through the stem's 2-D convolution; its 3-D one (for deeper
    # stacks) never runs here. As buffers its weights stay in the state dict (VisCy checkpoints
    # hold them) while the optimiser, backward and DDP see only weights that get gradients.
    hold_as_buffers(network.encoder.stem.conv3d)
    return VisCyGenerator(network, viscy_size_multiple(options["stem_kernel_size"],
                                                       options["dims"]))


def hold_as_buffers(module: nn.Module) -> None:
    """Turn a module's own parameters into buffers of the same names: loaded and saved, moved
    with the module, never trained."""
    for name, parameter in list(module.named_parameters(recurse=False)):
        delattr(module, name)
        module.register_buffer(name, parameter.detach())


# --- the loss ------------------------------------------------------------------------------


@functools.cache
def _mixed_loss(l1_alpha: float, ms_dssim_alpha: float) -> nn.Module:
    _require_viscy()
    from viscy.translation.engine import MixedLoss

    return MixedLoss(l1_alpha=l1_alpha, l2_alpha=0.0, ms_dssim_alpha=ms_dssim_alpha)


@functools.cache
def _ms_ssim() -> tuple[Any, tuple[float, ...]]:
    """VisCy's MS-SSIM function and its per-scale weights (exponents), as the package has them."""
    _require_viscy()
    from viscy.translation.evaluation_metrics import ms_ssim_25d

    return ms_ssim_25d, tuple(inspect.signature(ms_ssim_25d).parameters["betas"].default)


def ms_ssim_scales(height: int, width: int, scales: int = 5) -> int:
    """How many of MS-SSIM's scales (each half the last) still hold an 11-pixel window."""
    size, fitting = min(height, width), 0
    while fitting < scales and size >= SSIM_WINDOW:
        fitting, size = fitting + 1, size // 2
    return fitting


def viscy_mixed_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    l1_alpha: float = 0.5,
    ms_dssim_alpha: float = 0.5,
) -> torch.Tensor:
    """VSCyto2D's objective, l1_alpha * L1 + ms_dssim_alpha * (1 - MS-SSIM), on (B, C, H, W).

    VisCy's `MixedLoss` needs five scales, 176 pixels or more. Smaller crops (the quick preset's
    128) use the scales that fit with their weights rescaled to sum to one, so the value stays
    a weighted geometric mean of the per-scale similarities, as in the five-scale case.
    """
    prediction, target = prediction.unsqueeze(2), target.unsqueeze(2)  # (B, C, Z=1, H, W)
    ms_ssim_25d, betas = _ms_ssim()
    fitting = ms_ssim_scales(*prediction.shape[-2:], scales=len(betas))
    if fitting == len(betas):
        return _mixed_loss(l1_alpha, ms_dssim_alpha)(prediction, target)
    if fitting == 0:
        raise ValueError(
            f"images of {tuple(prediction.shape[-2:])} pixels are smaller than MS-SSIM's "
            f"{SSIM_WINDOW}-pixel window; use larger crops (data.crop_size)"
        )
    weights = torch.tensor(betas[:fitting], dtype=torch.float64)
    weights = tuple((weights / weights.sum()).tolist())
    prediction, target = prediction.float(), target.float()
    ms_ssim = ms_ssim_25d(prediction, target, clamp=True, betas=weights)
    return l1_alpha * F.l1_loss(prediction, target) + ms_dssim_alpha * (1 - ms_ssim)


# --- published VisCy checkpoints -------------------------------------------------------------


def is_viscy_checkpoint(path: str | Path) -> bool:
    """VisCy (Lightning) checkpoints end in .ckpt; this package writes .pt."""
    return Path(path).suffix == ".ckpt"


def read_viscy_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The network's weights (without the `model.` prefix) and VisCy's `model_config`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"VisCy checkpoint {path} does not exist; fetch the published "
                              "one with `python -m pix2pixhd data download --viscy-model`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated download, or pickled objects a safe load refuses
        raise CheckpointError(
            f"{path} is not a checkpoint that loads safely ({error}); if the download was "
            "cut, run it again"
        ) from error
    hyper = state.get("hyper_parameters") if isinstance(state, dict) else None
    if not isinstance(hyper, dict) or "state_dict" not in state or "model_config" not in hyper:
        raise CheckpointError(
            f"{path} is not a VisCy Lightning checkpoint: expected 'state_dict' and "
            "'hyper_parameters' with a 'model_config'"
        )
    architecture = hyper.get("architecture", "fcmae")
    if architecture not in VISCY_ARCHITECTURES:
        raise CheckpointError(
            f"{path} holds VisCy's {architecture!r} network; only the 2-D UNeXt2 "
            f"({', '.join(VISCY_ARCHITECTURES)}, as VSCyto2D) loads here"
        )
    weights = {key.removeprefix("model."): value for key, value in state["state_dict"].items()
               if key.startswith("model.")}
    return weights, dict(hyper["model_config"])


def viscy_config(options: dict[str, Any]) -> Config:
    """Our Config for a VisCy network described by VisCy's `model_config` (VSCyto2D defaults)."""
    config = Config()
    model = config.model
    model.kind = "viscy"
    model.encoder_blocks = list(options.get("encoder_blocks", model.encoder_blocks))
    model.dims = list(options.get("dims", model.dims))
    model.decoder_conv_blocks = int(options.get("decoder_conv_blocks", model.decoder_conv_blocks))
    model.stem_kernel_size = list(options.get("stem_kernel_size", model.stem_kernel_size))
    model.in_stack_depth = int(options.get("in_stack_depth", model.in_stack_depth))
    out_channels = int(options.get("out_channels", 2))
    if not 1 <= out_channels <= len(VISCY_OUTPUT_CHANNELS):
        raise CheckpointError(
            f"a VisCy network with {out_channels} outputs: only nuclei (1) or nuclei and "
            "membrane (2) can be named"
        )
    config.data.target_channels = list(VISCY_OUTPUT_CHANNELS[:out_channels])
    return config


def load_viscy_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[VisCyGenerator, Config]:
    """A published VisCy checkpoint as our generator (eval mode, on `device`) and Config."""
    weights, options = read_viscy_checkpoint(path)
    config = viscy_config(options)
    in_channels = int(options.get("in_channels", 1))
    generator = build_viscy_generator(config.model, in_channels,
                                      len(config.data.target_channels))
    try:
        generator.model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: the weights do not fit the network its model_config describes "
            f"({error})"
        ) from error
    log.info("VisCy network from %s: dims %s, outputs %s", path, config.model.dims,
             ", ".join(config.data.target_channels))
    return generator.to(device).eval(), config


def load_viscy_predictor(
    path: str | Path, device: str | torch.device = "cpu", dataset_root: str | Path | None = None
) -> tuple[VisCyGenerator, Config, PerImageNormaliser]:
    """What `predict.load_predictor` returns, for a published VisCy checkpoint."""
    if dataset_root is None:
        raise CheckpointError(
            f"{path} is a VisCy checkpoint: its outputs are in median/IQR units, and the "
            "dataset's statistics turn them into stain units; predict a split folder "
            "(e.g. data/test) or pass the dataset root"
        )
    generator, config = load_viscy_checkpoint(path, device)
    config.data.root = str(dataset_root)
    normaliser = PerImageNormaliser.from_dataset(dataset_root, config.data.input_channel,
                                                 config.data.target_channels)
    return generator, config, normaliser
