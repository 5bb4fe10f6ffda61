"""VisCy's 2-D virtual-staining network (VSCyto2D's UNeXt2) inside this package's loop.

VisCy (mehta-lab) trains its virtual-staining models by regression: VSCyto2D is a fully
convolutional masked-autoencoder U-Net (ConvNeXt V2 encoder, pixel-shuffle decoder) fitted with
0.5 L1 + 0.5 MS-DSSIM. Here the `viscy` package's own classes are used, not a copy:

    generator = build_viscy_generator(config.model, input_nc=1, output_nc=1)  # kind=viscy
    loss = viscy_mixed_loss(prediction, target)                              # VisCy's MixedLoss
    generator, config, normaliser = load_viscy_predictor("VSCyto2D.ckpt", dataset_root="data")

Units. A model trained here (`model.kind=viscy`) sees the same normalised images as the GAN
and the regression baseline (phase: train-split median 0, IQR 1; stains: the stain map of
`data.stain_map`) so the three compare in the same units, but its output stays linear, as
VisCy's head is: no tanh, so no stain is out of reach and the loss has no saturated
gradients. A published VisCy checkpoint follows VisCy's own recipe instead: phase
normalised per field of view (its median and IQR), stains predicted in median/IQR units; its
outputs are mapped to stain units with the train split's stain median and IQR where a dataset
gives them, and are otherwise left in VisCy's units.

Checkpoints. A Lightning `.ckpt` saved by VisCy's `FcmaeUNet` holds the network's options
(`hyper_parameters.model_config`); one saved by `VSUNet`, as the published VSCyto2D of June
2024, holds none, and they are read from the weights' names and shapes instead.

`viscy` imports Lightning and MONAI (seconds), so it is imported only when a VisCy model is
built or loaded.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pix2pixhd.checkpoint import CheckpointError
from pix2pixhd.config import Config, ModelConfig
from pix2pixhd.layout import dataset_json_path, read_dataset_json
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

    whole_input_statistics = True
    """GlobalResponseNorm (ConvNeXt V2) averages over the whole input, so tiles change the
    output: predict goes through a field of view in one pass where it can."""

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


VISCY_OPTION_FLAG = "--viscy-config"
"""The predict option that sets a VisCy network's `model_config` entry (KEY=VALUE)."""

_COUNTS = ("in_channels", "out_channels", "decoder_conv_blocks", "in_stack_depth")
_LISTS = ("encoder_blocks", "dims", "stem_kernel_size")


def read_viscy_checkpoint(
    path: str | Path, model_config: dict[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The network's weights (without the `model.` prefix) and VisCy's `model_config`.

    A checkpoint saved with hyper-parameters (VisCy's `FcmaeUNet`) gives its `model_config`;
    one saved without (`VSUNet`, as the published VSCyto2D of June 2024) has its options read
    from the weights' names and shapes (`infer_viscy_options`). `model_config` entries given
    here replace either.
    """
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
    hyper = hyper if isinstance(hyper, dict) else {}
    architecture = hyper.get("architecture", "fcmae")
    if architecture not in VISCY_ARCHITECTURES:
        raise CheckpointError(
            f"{path} holds VisCy's {architecture!r} network; only the 2-D UNeXt2 "
            f"({', '.join(VISCY_ARCHITECTURES)}, as VSCyto2D) loads here"
        )
    state_dict = state.get("state_dict") if isinstance(state, dict) else None
    state_dict = state_dict if isinstance(state_dict, dict) else {}
    weights = {key.removeprefix("model."): value for key, value in state_dict.items()
               if key.startswith("model.")}
    if not weights:
        raise CheckpointError(
            f"{path} is not a VisCy Lightning checkpoint: expected a 'state_dict' with the "
            "network's weights under 'model.'"
        )
    saved = hyper.get("model_config")
    if isinstance(saved, dict) and saved:
        options = dict(saved)
    else:
        options = infer_viscy_options(weights, path, given=model_config or {})
        log.info("%s has no model_config: read from its weights %s", path, options)
    options.update(model_config or {})
    return weights, checked_viscy_options(options, path)


def infer_viscy_options(
    weights: dict[str, torch.Tensor], path: str | Path, given: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A UNeXt2 / FCMAE network's `model_config`, read from its weights' names and shapes.

    The stem's 2-D convolution gives in_channels and dims[0]; each stage's downsampling gives
    its width; block indices count encoder_blocks and decoder_conv_blocks; the stem's 3-D kernel
    gives stem_kernel_size. The last decoder stage's width is out_channels x in_stack_depth x
    (stem stride)^2, and the 3-D stem's width dims[0] // (in_stack_depth // depth of its
    kernel); where those leave more than one in_stack_depth, `given` must name it (or
    out_channels).
    """
    given = given or {}
    stem2d, stem3d = weights.get("encoder.stem.conv2d.weight"), weights.get(
        "encoder.stem.conv3d.weight")
    if stem2d is None or stem3d is None or stem2d.ndim != 4 or stem3d.ndim != 5:
        raise CheckpointError(
            f"{path}: its weights are not VisCy's 2-D UNeXt2 / FCMAE network (no "
            "encoder.stem.conv2d/conv3d weights), the only one that loads without a "
            "model_config; save it with its hyper-parameters (VisCy's FcmaeUNet)"
        )
    if any(key.startswith("head.") for key in weights):
        raise CheckpointError(f"{path}: its network has a convolutional head (head_conv), "
                              "which this package does not build")
    stages = _indices(weights, r"encoder\.stages\.(\d+)\.")
    dims = [int(stem2d.shape[0])] + [
        int(weights[f"encoder.stages.{i}.downsample.1.weight"].shape[0]) for i in stages[1:]]
    encoder_blocks = [len(_indices(weights, rf"encoder\.stages\.{i}\.blocks\.(\d+)\."))
                      for i in stages]
    decoder_stages = _indices(weights, r"decoder\.decoder_stages\.(\d+)\.")
    if not stages or not decoder_stages:
        raise CheckpointError(f"{path}: its weights have no encoder or decoder stages")
    decoder_blocks = len(_indices(weights,
                                  r"decoder\.decoder_stages\.0\.conv\.blocks\.(\d+)\."))
    kernel = [int(k) for k in stem3d.shape[2:]]
    last = weights.get(f"decoder.decoder_stages.{decoder_stages[-1]}.conv.downsample.1.weight")
    if last is None:
        raise CheckpointError(f"{path}: its last decoder stage has no projection weights")
    per_pixel, remainder = divmod(int(last.shape[0]), kernel[-1] ** 2)
    # the 3-D stem has dims[0] // (in_stack_depth // kernel depth) filters (VisCy's rounding)
    depths = [d for d in range(kernel[0], per_pixel + 1) if per_pixel % d == 0 and not remainder
              and int(stem2d.shape[0]) // (d // kernel[0]) == int(stem3d.shape[0])]
    if "in_stack_depth" in given:
        depths = [int(given["in_stack_depth"])]
    elif "out_channels" in given and per_pixel % int(given["out_channels"]) == 0:
        depths = [per_pixel // int(given["out_channels"])]
    if len(depths) != 1:
        raise CheckpointError(
            f"{path}: in_stack_depth cannot be read from its weights ({depths or 'none'} "
            f"fit); set it with {VISCY_OPTION_FLAG} in_stack_depth=N"
        )
    return {
        "in_channels": int(stem2d.shape[1]),
        "out_channels": per_pixel // depths[0],
        "encoder_blocks": encoder_blocks,
        "dims": dims,
        "decoder_conv_blocks": decoder_blocks,
        "stem_kernel_size": kernel,
        "in_stack_depth": depths[0],
        "pretraining": False,
    }


def _indices(weights: dict[str, torch.Tensor], pattern: str) -> list[int]:
    """The sorted distinct integers that `pattern`'s group matches at the start of the names."""
    found = {int(match.group(1)) for key in weights if (match := re.match(pattern, key))}
    return sorted(found)


def checked_viscy_options(options: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """`options` with every size a positive integer, or one CheckpointError line naming it."""
    checked = dict(options)
    for key in (*_COUNTS, *_LISTS):
        if key not in options:
            continue
        value = options[key]
        values = value if key in _LISTS else [value]
        if (key in _LISTS and not isinstance(value, (list, tuple))) or not values or not all(
                _is_positive_int(v) for v in values):
            what = "a list of positive integers" if key in _LISTS else "a positive integer"
            raise CheckpointError(
                f"{path}: model_config {key}={value!r} is not {what}; the file is damaged or "
                f"not VisCy's (set it with {VISCY_OPTION_FLAG} {key}=...)"
            )
        checked[key] = [int(v) for v in values] if key in _LISTS else int(value)
    if len(checked.get("dims", [])) != len(checked.get("encoder_blocks", checked.get("dims", []))):
        raise CheckpointError(f"{path}: model_config dims {checked['dims']} and encoder_blocks "
                              f"{checked['encoder_blocks']} differ in length")
    if "stem_kernel_size" in checked and len(checked["stem_kernel_size"]) != 3:
        raise CheckpointError(f"{path}: model_config stem_kernel_size "
                              f"{checked['stem_kernel_size']} is not (depth, height, width)")
    return checked


def _is_positive_int(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return False
    try:
        number = float(value)
    except ValueError:
        return False
    return number.is_integer() and number >= 1


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
    path: str | Path, device: str | torch.device = "cpu",
    model_config: dict[str, Any] | None = None,
) -> tuple[VisCyGenerator, Config]:
    """A published VisCy checkpoint as our generator (eval mode, on `device`) and Config;
    `model_config` entries replace the file's (see `read_viscy_checkpoint`)."""
    weights, options = read_viscy_checkpoint(path, model_config)
    if options.get("in_stack_depth", 1) != 1:
        raise CheckpointError(
            f"{path}: its network takes stacks of {options['in_stack_depth']} planes "
            "(in_stack_depth); this package predicts 2-D images, so only a 2-D network "
            "(in_stack_depth 1, as VSCyto2D) loads"
        )
    config = viscy_config(options)
    in_channels = int(options.get("in_channels", 1))
    generator = build_viscy_generator(config.model, in_channels,
                                      len(config.data.target_channels))
    try:
        generator.model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: the weights do not fit the network of model_config {options} ({error})"
        ) from error
    log.info("VisCy network from %s: dims %s, outputs %s", path, config.model.dims,
             ", ".join(config.data.target_channels))
    return generator.to(device).eval(), config


def viscy_normaliser(dataset_root: str | Path | None, config: Config) -> PerImageNormaliser:
    """The published model's normaliser: phase per image; outputs to stain units with the
    median and IQR of ROOT/dataset.json, or left in VisCy's units (median 0 and IQR 1 stand
    in) when there is no dataset or it lacks them (`has_stain_statistics`)."""
    targets = list(config.data.target_channels)
    if has_stain_statistics(dataset_root, config):
        return PerImageNormaliser.from_dataset(dataset_root, config.data.input_channel, targets)
    return PerImageNormaliser(config.data.input_channel, targets,
                              {c: {"median": 0.0, "iqr": 1.0} for c in targets})


def has_stain_statistics(dataset_root: str | Path | None, config: Config) -> bool:
    """Whether ROOT/dataset.json gives the median and IQR of every output channel, so that a
    VisCy model's outputs can return to stain units."""
    if dataset_root is None or not dataset_json_path(dataset_root).is_file():
        return False
    stats = read_dataset_json(dataset_root).get("normalisation") or {}
    return all({"median", "iqr"} <= set(stats.get(c, {})) for c in config.data.target_channels)


def load_viscy_predictor(
    path: str | Path, device: str | torch.device = "cpu",
    dataset_root: str | Path | None = None, model_config: dict[str, Any] | None = None,
) -> tuple[VisCyGenerator, Config, PerImageNormaliser]:
    """What `predict.load_predictor` returns, for a published VisCy checkpoint; outputs in
    stain units where `dataset_root` has the statistics, else in VisCy's (see
    `viscy_normaliser`)."""
    generator, config = load_viscy_checkpoint(path, device, model_config)
    if dataset_root is not None:
        config.data.root = str(dataset_root)
    return generator, config, viscy_normaliser(dataset_root, config)
