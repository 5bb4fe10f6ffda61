"""The Pix2PixHD generator and multi-scale discriminator (Wang et al., CVPR 2018).

The layers, their order and their attribute names are those of the original implementation
(NVIDIA/pix2pixHD, `models/networks.py`) for the same options, so a state dict it saved
(`latest_net_G.pth`, `latest_net_D.pth`) loads here with `strict=True`:

    generator = build_generator(use_dropout=False)        # G1, "global", the original's options
    load_original_state_dict(generator, "checkpoints/run/latest_net_G.pth")

Generator: G1 (`GlobalGenerator`) is an encoder (stride-2 convolutions), residual blocks and a
decoder (transposed convolutions). G2 (`LocalEnhancer`) wraps G1, run on the half-resolution
input, inside a full-resolution front end and back end: coarse-to-fine.

Discriminator: `num_D` PatchGAN discriminators (`NLayerDiscriminator`) look at the image at full,
half, quarter, ... resolution. Each returns the output of every layer: the intermediate ones feed
the feature-matching loss, the last one (one channel, no sigmoid) is the real/fake prediction.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pix2pixhd.config import GENERATORS, NORMS, UPSAMPLINGS, ModelConfig, check_counts

log = logging.getLogger(__name__)


def norm_layer(norm: str, channels: int) -> nn.Module:
    """Instance norm without learned scale (as the original) or batch norm with it."""
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=True)
    raise ValueError(f"norm={norm!r} is not one of {', '.join(NORMS)}")


def init_weights(module: nn.Module) -> None:
    """The original's initialisation: (transposed) convolution weights N(0, 0.02), batch-norm
    scale N(1, 0.02) and shift 0. Convolution biases keep PyTorch's default, as in the original."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not); works on the meta device too."""
    return sum(p.numel() for p in module.parameters())


# --- generator -------------------------------------------------------------------------------


def upsampling_layer(upsample: str, channels_in: int, channels_out: int) -> nn.Module:
    """Double the height and width: (B, channels_in, H, W) -> (B, channels_out, 2H, 2W).

    'transpose' is the original's 3x3 transposed convolution with stride 2. Its kernel overlaps
    itself unevenly: along each axis an even output pixel receives one tap of the kernel and an
    odd one two, so neighbouring pixels are sums of different weights. That is the period-2
    "checkerboard" of Odena et al. (Distill, 2016), present from the first step and hard to
    train away. 'resize' repeats every pixel
    (nearest neighbour) and then applies an ordinary 3x3 convolution, which treats every output
    pixel alike; same number of parameters.
    """
    if upsample == "transpose":
        return nn.ConvTranspose2d(
            channels_in, channels_out, kernel_size=3, stride=2, padding=1, output_padding=1
        )
    if upsample == "resize":
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1),
        )
    raise ValueError(f"upsample={upsample!r} is not one of {', '.join(UPSAMPLINGS)}")


class BinomialLowPass(nn.Module):
    """A fixed low-pass filter, [1, 2, 1] / 4 along each axis with reflected borders, applied to
    each channel: (B, C, H, W) in and out, no weights.

    Its amplitude response is cos^2(pi f) along an axis, f in cycles/pixel: 1 at 0, 0.65 at 0.2,
    0 at 0.5. On a generator's output it removes what a GAN tends to draw at the pixel grid's own
    frequency (stripes two pixels apart, which the strided discriminator barely sees), while the
    layers before it can still boost any lower frequency to make up for the filter. It keeps the
    output in [-1, 1]: every output pixel is a weighted mean of the tanh's values.
    """

    def __init__(self) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0]) / 4
        self.register_buffer("kernel", torch.outer(taps, taps)[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(padded, self.kernel.to(x.dtype).expand(channels, 1, 3, 3),
                        groups=channels)


def output_filter(lowpass_output: bool) -> nn.Module:
    """`BinomialLowPass` when asked for, else nothing; neither has weights, so the choice does
    not change a state dict."""
    return BinomialLowPass() if lowpass_output else nn.Identity()


class ResnetBlock(nn.Module):
    """Two 3x3 convolutions with reflection padding, added to the input: (B, dim, H, W) in and out.

    Args:
        dim: channels in and out.
        norm: 'instance' or 'batch'.
        use_dropout: put a Dropout between the two convolutions. The original has this option
            (off by default, p=0.5); it moves the second convolution from index 5 to index 6 of
            `conv_block`, so state dicts with and without dropout do not load into each other.
        dropout_p: probability of zeroing an activation; also what MC-dropout samples with.
    """

    def __init__(
        self, dim: int, norm: str = "instance", use_dropout: bool = False, dropout_p: float = 0.2
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3),
            norm_layer(norm, dim),
            nn.ReLU(inplace=True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(dropout_p))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3), norm_layer(norm, dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


def _check_divisible(x: Tensor, multiple: int, option: str) -> None:
    """The encoder halves the image `log2(multiple)` times and the decoder doubles it back:
    other sizes come out a different size from the input, which fails later and less clearly."""
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        raise ValueError(
            f"input of {height}x{width} pixels: this generator needs height and width that are "
            f"multiples of {multiple} ({option}); pad or crop the image"
        )


class GlobalGenerator(nn.Module):
    """G1: (B, input_nc, H, W) -> (B, output_nc, H, W) in [-1, 1], H and W multiples of
    2**n_downsampling.

    `model` is one Sequential: 7x7 convolution, `n_downsampling` stride-2 3x3 convolutions that
    double the channels, `n_blocks` residual blocks at ngf * 2**n_downsampling channels,
    `n_downsampling` upsampling layers that halve them (transposed convolutions, as the original,
    or resize-convolutions: `upsampling_layer`), 7x7 convolution, tanh; then `output_filter`
    (the optional `BinomialLowPass`).
    """

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        ngf: int = 64,
        n_downsampling: int = 3,
        n_blocks: int = 9,
        norm: str = "instance",
        use_dropout: bool = False,
        dropout_p: float = 0.2,
        upsample: str = "transpose",
        lowpass_output: bool = False,
    ) -> None:
        super().__init__()
        self.size_multiple = 2**n_downsampling
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7),
            norm_layer(norm, ngf),
            nn.ReLU(inplace=True),
        ]
        for i in range(n_downsampling):
            channels = ngf * 2**i
            layers += [
                nn.Conv2d(channels, channels * 2, kernel_size=3, stride=2, padding=1),
                norm_layer(norm, channels * 2),
                nn.ReLU(inplace=True),
            ]
        deepest = ngf * 2**n_downsampling
        layers += [ResnetBlock(deepest, norm, use_dropout, dropout_p) for _ in range(n_blocks)]
        for i in range(n_downsampling):
            channels = ngf * 2 ** (n_downsampling - i)
            layers += [
                upsampling_layer(upsample, channels, channels // 2),
                norm_layer(norm, channels // 2),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.output_filter = output_filter(lowpass_output)

    def forward(self, x: Tensor) -> Tensor:
        _check_divisible(x, self.size_multiple, "2**n_downsample_global")
        return self.output_filter(self.model(x))


class LocalEnhancer(nn.Module):
    """G2: (B, input_nc, H, W) -> (B, output_nc, H, W); H, W multiples of
    2**(n_downsample_global + n_local_enhancers).

    `model` is G1 built with ngf * 2**n_local_enhancers and without its output layers (pad, 7x7
    convolution, tanh); it runs on the input downsampled n_local_enhancers times. Enhancer n
    (1 = coarsest) has a front end `model{n}_1` (7x7 conv, stride-2 conv) on the input at its
    resolution, whose features are added to the coarser output, and a back end `model{n}_2`
    (residual blocks, transposed conv; the last enhancer also the output layers).
    """

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        ngf: int = 32,
        n_downsample_global: int = 3,
        n_blocks_global: int = 9,
        n_local_enhancers: int = 1,
        n_blocks_local: int = 3,
        norm: str = "instance",
        use_dropout: bool = False,
        dropout_p: float = 0.2,
        upsample: str = "transpose",
        lowpass_output: bool = False,
    ) -> None:
        super().__init__()
        self.n_local_enhancers = n_local_enhancers
        self.size_multiple = 2 ** (n_downsample_global + n_local_enhancers)
        global_generator = GlobalGenerator(
            input_nc,
            output_nc,
            ngf * 2**n_local_enhancers,
            n_downsample_global,
            n_blocks_global,
            norm,
            use_dropout,
            dropout_p,
            upsample,
        )
        self.model = nn.Sequential(*list(global_generator.model)[:-3])
        for n in range(1, n_local_enhancers + 1):
            width = ngf * 2 ** (n_local_enhancers - n)
            front = [
                nn.ReflectionPad2d(3),
                nn.Conv2d(input_nc, width, kernel_size=7),
                norm_layer(norm, width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width * 2, kernel_size=3, stride=2, padding=1),
                norm_layer(norm, width * 2),
                nn.ReLU(inplace=True),
            ]
            back: list[nn.Module] = [
                ResnetBlock(width * 2, norm, use_dropout, dropout_p) for _ in range(n_blocks_local)
            ]
            back += [
                upsampling_layer(upsample, width * 2, width),
                norm_layer(norm, width),
                nn.ReLU(inplace=True),
            ]
            if n == n_local_enhancers:
                back += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7), nn.Tanh()]
            setattr(self, f"model{n}_1", nn.Sequential(*front))
            setattr(self, f"model{n}_2", nn.Sequential(*back))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.output_filter = output_filter(lowpass_output)

    def forward(self, x: Tensor) -> Tensor:
        _check_divisible(x, self.size_multiple, "2**(n_downsample_global + n_local_enhancers)")
        pyramid = [x]
        for _ in range(self.n_local_enhancers):
            pyramid.append(self.downsample(pyramid[-1]))
        output = self.model(pyramid[-1])
        for n in range(1, self.n_local_enhancers + 1):
            front = getattr(self, f"model{n}_1")
            back = getattr(self, f"model{n}_2")
            output = back(front(pyramid[self.n_local_enhancers - n]) + output)
        return self.output_filter(output)


# --- discriminator ---------------------------------------------------------------------------


class NLayerDiscriminator(nn.Module):
    """PatchGAN: (B, input_nc, H, W) -> list of n_layers + 2 feature maps, the last (B, 1, h, w)
    the real/fake score of each patch (a logit, no sigmoid: LSGAN regresses it to 1 or 0).

    Layers `model0 .. model{n_layers+1}` are kept apart (the original's getIntermFeat layout) so
    the feature-matching loss can read each one: 4x4 convolutions with padding 2, stride 2 for the
    first n_layers, channels doubling from ndf up to 512, LeakyReLU(0.2), no norm on the first.
    """

    def __init__(
        self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "instance"
    ) -> None:
        super().__init__()
        self.n_layers = n_layers
        kernel, padding = 4, 2  # padding = ceil((kernel - 1) / 2), as the original
        blocks = [
            [nn.Conv2d(input_nc, ndf, kernel, stride=2, padding=padding),
             nn.LeakyReLU(0.2, inplace=True)]
        ]
        channels = ndf
        for _ in range(1, n_layers):
            previous, channels = channels, min(channels * 2, 512)
            blocks.append([
                nn.Conv2d(previous, channels, kernel, stride=2, padding=padding),
                norm_layer(norm, channels),
                nn.LeakyReLU(0.2, inplace=True),
            ])
        previous, channels = channels, min(channels * 2, 512)
        blocks.append([
            nn.Conv2d(previous, channels, kernel, stride=1, padding=padding),
            norm_layer(norm, channels),
            nn.LeakyReLU(0.2, inplace=True),
        ])
        blocks.append([nn.Conv2d(channels, 1, kernel, stride=1, padding=padding)])
        for j, block in enumerate(blocks):
            setattr(self, f"model{j}", nn.Sequential(*block))

    def layers(self) -> list[nn.Module]:
        return [getattr(self, f"model{j}") for j in range(self.n_layers + 2)]

    def forward(self, x: Tensor) -> list[Tensor]:
        return _features(self.layers(), x)


def _features(layers: list[nn.Module], x: Tensor) -> list[Tensor]:
    """Output of every layer in turn."""
    features = []
    for layer in layers:
        x = layer(x)
        features.append(x)
    return features


class MultiscaleDiscriminator(nn.Module):
    """`num_D` PatchGANs at full, 1/2, 1/4, ... resolution: (B, input_nc, H, W) -> per scale,
    finest first, the list of its layers' features.

    Layers are stored as `scale{i}_layer{j}` (the original's names). Beware the original's order:
    scale num_D-1 is the one that sees the full-resolution image and scale 0 the coarsest, so
    `forward(x)[k]` comes from `scale{num_D-1-k}`.
    """

    def __init__(
        self,
        input_nc: int,
        ndf: int = 64,
        n_layers: int = 3,
        num_D: int = 3,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        self.num_D = num_D
        self.n_layers = n_layers
        for i in range(num_D):
            single = NLayerDiscriminator(input_nc, ndf, n_layers, norm)
            for j, layer in enumerate(single.layers()):
                setattr(self, f"scale{i}_layer{j}", layer)
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def scale_layers(self, scale: int) -> list[nn.Module]:
        """Layers of the discriminator stored as `scale{scale}` (num_D-1 is the finest)."""
        return [getattr(self, f"scale{scale}_layer{j}") for j in range(self.n_layers + 2)]

    def forward(self, x: Tensor) -> list[list[Tensor]]:
        result = []
        for k in range(self.num_D):
            if k > 0:
                x = self.downsample(x)
            result.append(_features(self.scale_layers(self.num_D - 1 - k), x))
        return result


# --- builders --------------------------------------------------------------------------------


# The builders' defaults are ModelConfig's, so a network built with no options is the one a
# default config trains: the original's options, with this task's dropout and three D scales.


def build_generator(
    *,
    input_nc: int = 1,
    output_nc: int = 1,
    ngf: int = ModelConfig.ngf,
    netG: str = ModelConfig.netG,
    n_downsample_global: int = ModelConfig.n_downsample_global,
    n_blocks_global: int = ModelConfig.n_blocks_global,
    n_local_enhancers: int = ModelConfig.n_local_enhancers,
    n_blocks_local: int = ModelConfig.n_blocks_local,
    norm: str = ModelConfig.norm,
    use_dropout: bool = ModelConfig.use_dropout,
    dropout_p: float = ModelConfig.dropout_p,
    upsample: str = ModelConfig.upsample,
    lowpass_output: bool = ModelConfig.lowpass_output,
) -> GlobalGenerator | LocalEnhancer:
    """G1 ('global') or G2 ('local', G1 inside n_local_enhancers enhancers), initialised as the
    original. For 'local', ngf is the width of the finest enhancer; G1 gets ngf * 2**n.
    The original's residual blocks have no dropout: pass use_dropout=False to load its weights.
    upsample: 'transpose' (the original's layers, its state dicts load) or 'resize' (nearest x2
    then a 3x3 convolution: no checkerboard; see `upsampling_layer`). lowpass_output: end with
    `BinomialLowPass`, which no stripe two pixels apart passes."""
    if netG not in GENERATORS:
        raise ValueError(f"netG={netG!r} is not one of {', '.join(GENERATORS)}")
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not one of {', '.join(NORMS)}")
    if upsample not in UPSAMPLINGS:
        raise ValueError(f"upsample={upsample!r} is not one of {', '.join(UPSAMPLINGS)}")
    check_counts(input_nc=input_nc, output_nc=output_nc, ngf=ngf)
    check_counts(allow_zero=True, n_downsample_global=n_downsample_global,
                 n_blocks_global=n_blocks_global)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p={dropout_p} must be in [0, 1)")
    if netG == "global":
        generator = GlobalGenerator(
            input_nc, output_nc, ngf, n_downsample_global, n_blocks_global, norm,
            use_dropout, dropout_p, upsample, lowpass_output,
        )
    else:
        check_counts(n_local_enhancers=n_local_enhancers)
        check_counts(allow_zero=True, n_blocks_local=n_blocks_local)
        generator = LocalEnhancer(
            input_nc, output_nc, ngf, n_downsample_global, n_blocks_global, n_local_enhancers,
            n_blocks_local, norm, use_dropout, dropout_p, upsample, lowpass_output,
        )
    init_weights(generator)
    log.debug("generator %s: %d parameters", netG, count_parameters(generator))
    return generator


def build_discriminator(
    *,
    input_nc: int = 2,
    ndf: int = ModelConfig.ndf,
    n_layers_D: int = ModelConfig.n_layers_D,
    num_D: int = ModelConfig.num_D,
    norm: str = ModelConfig.norm,
) -> MultiscaleDiscriminator:
    """Multi-scale PatchGAN discriminator, initialised as the original. input_nc counts the
    condition and the image together (phase + stains, concatenated on channels)."""
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not one of {', '.join(NORMS)}")
    check_counts(input_nc=input_nc, ndf=ndf, n_layers_D=n_layers_D, num_D=num_D)
    discriminator = MultiscaleDiscriminator(input_nc, ndf, n_layers_D, num_D, norm)
    init_weights(discriminator)
    log.debug("discriminator: %d parameters", count_parameters(discriminator))
    return discriminator


# --- state dicts from the original implementation -----------------------------------------


class IncompatibleStateDictError(RuntimeError):
    """A saved state dict whose keys or shapes do not fit the network built here."""


def load_original_state_dict(module: nn.Module, path: str | Path) -> nn.Module:
    """Load a state dict saved by the original Pix2PixHD (or by this package) into `module`,
    strictly. A `module.` prefix left by DataParallel is removed. Returns `module`.

    Raises IncompatibleStateDictError listing missing and unexpected keys and shape mismatches,
    and which options (ngf, n_blocks_global, use_dropout, ...) the file seems to have been saved
    with, when they differ from the network's.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no state dict at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise IncompatibleStateDictError(
            f"{path} is not a state dict (a mapping from parameter names to tensors); "
            "checkpoints of this package hold one per network under 'generator'/'discriminator'"
        )
    state = {_strip_prefix(key): value for key, value in state.items()}
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [
        f"{key}: file {tuple(state[key].shape)}, network {tuple(expected[key].shape)}"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    if missing or unexpected or shapes:
        raise IncompatibleStateDictError(
            _mismatch_message(path, missing, unexpected, shapes, state, expected)
        )
    module.load_state_dict(state, strict=True)
    log.info("loaded %d tensors from %s", len(state), path)
    return module


def _strip_prefix(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def _mismatch_message(
    path: Path,
    missing: list[str],
    unexpected: list[str],
    shapes: list[str],
    state: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
) -> str:
    lines = [f"{path} does not fit this network:"]
    for title, items in (
        ("missing in the file", missing),
        ("unexpected in the file", unexpected),
        ("different shapes", shapes),
    ):
        if items:
            more = f", ... ({len(items) - 8} more)" if len(items) > 8 else ""
            shown = ", ".join(items[:8]) + more
            lines.append(f"  {title} ({len(items)}): {shown}")
    saved, built = infer_options(state), infer_options(expected)
    differing = [
        f"{name}={saved[name]!r} (this network: {built[name]!r})"
        for name in saved
        if name in built and saved[name] != built[name]
    ]
    if differing:
        lines.append("  the file looks saved with " + ", ".join(differing))
        lines.append("  build the network with those options to load it")
    elif any(re.match(r"layer\d+\.", key) for key in state):
        lines.append(
            "  the file is a discriminator saved without intermediate features (the original's "
            "--no_ganFeat_loss); only the per-layer layout (scale{i}_layer{j}) is supported"
        )
    else:
        lines.append(
            "  check ngf/ndf, input_nc/output_nc, n_downsample_global, n_blocks_global, "
            "n_layers_D, num_D, norm and use_dropout (dropout shifts the residual-block keys)"
        )
    return "\n".join(lines)


def infer_options(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """The build options a generator or discriminator state dict was saved with, read from its
    key names and shapes (as far as they tell): e.g. {'netG': 'global', 'ngf': 64, ...}."""
    keys = [_strip_prefix(key) for key in state]
    state = {_strip_prefix(key): value for key, value in state.items()}
    options: dict[str, Any] = {}
    if any(key.endswith("running_mean") for key in keys):
        options["norm"] = "batch"
    elif keys:
        options["norm"] = "instance"
    if any(".conv_block." in key for key in keys):
        options["use_dropout"] = any(".conv_block.6." in key for key in keys)
    scales = {int(m[1]): int(m[2]) for m in _matches(r"scale(\d+)_layer(\d+)\.", keys)}
    if scales:
        options["num_D"] = max(scales) + 1
        options["n_layers_D"] = max(int(m[1]) for m in _matches(r"scale0_layer(\d+)\.", keys)) - 1
        first = state.get("scale0_layer0.0.weight")
        if first is not None:
            options["ndf"], options["input_nc"] = int(first.shape[0]), int(first.shape[1])
        return options
    if "model.1.weight" not in state:
        return options
    enhancers = [int(m[1]) for m in _matches(r"model(\d+)_1\.", keys)]
    options["netG"] = "local" if enhancers else "global"
    options["input_nc"] = int(state["model.1.weight"].shape[1])
    options["n_blocks_global"] = len({m[1] for m in _matches(r"model\.(\d+)\.conv_block\.", keys)})
    top_convs = sorted(
        int(m[1]) for m in _matches(r"model\.(\d+)\.weight$", keys) if state[m[0]].dim() == 4
    )
    if enhancers:
        n = max(enhancers)
        options["n_local_enhancers"] = n
        options["n_blocks_local"] = len(
            {m[1] for m in _matches(r"model1_2\.(\d+)\.conv_block\.", keys)}
        )
        options["n_downsample_global"] = (len(top_convs) - 1) // 2
        if f"model{n}_1.1.weight" in state:
            options["ngf"] = int(state[f"model{n}_1.1.weight"].shape[0])
        last = _last_conv(state, rf"model{n}_2\.(\d+)\.weight$")
    else:
        options["n_downsample_global"] = (len(top_convs) - 2) // 2
        options["ngf"] = int(state["model.1.weight"].shape[0])
        last = _last_conv(state, r"model\.(\d+)\.weight$")
    if last is not None:
        options["output_nc"] = int(last.shape[0])
    return options


def _matches(pattern: str, keys: list[str]) -> list[re.Match[str]]:
    compiled = re.compile(pattern)
    return [m for m in (compiled.match(key) for key in keys) if m]


def _last_conv(state: Mapping[str, Tensor], pattern: str) -> Tensor | None:
    """Weight of the highest-index 4-D layer matching `pattern` (the output convolution)."""
    found = [
        (int(m[1]), state[m[0]]) for m in _matches(pattern, list(state)) if state[m[0]].dim() == 4
    ]
    return max(found, key=lambda item: item[0])[1] if found else None
