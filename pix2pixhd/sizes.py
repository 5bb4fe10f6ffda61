"""How big a network is, from its options alone: parameters and training activations.

`config.validate` refuses a network too big to build before anything is allocated. Building it
on the `meta` device would count its parameters exactly, but a network with a billion residual
blocks takes as long to build on `meta` as anywhere, so these are sums over the layers, each
term in closed form. The Pix2PixHD counts are exact (tests compare them with networks built on
`meta`); the VisCy counts cover the encoder's ConvNeXt blocks only, a lower bound, which is
what a refusal needs.

Every sum stops as soon as it passes `stop_at`: its value is then a lower bound that is already
over the limit, and a sum over 2**40 channels never runs to its end.

Imports nothing of the package, so `config` can use it.
"""

from __future__ import annotations

import math

FLOAT_BYTES = 4
TENSORS_PER_LAYER = 3
"""Activations kept for the backward pass per convolution: its output, the norm's and the
activation function's (a rough count: padding and dropout add more, in-place ReLUs fewer).
Against what autograd saves (weights aside), the estimates come to 1.02-1.11 times for G1,
1.3 for a local enhancer and 1.3-1.7 for the discriminator (`tests/test_sizes.py`)."""


def _conv(channels_in: int, channels_out: int, kernel: int) -> int:
    """Weights and biases of a (transposed) convolution."""
    return channels_in * channels_out * kernel * kernel + channels_out


def _norm(norm: str, channels: int) -> int:
    """Batch norm learns a scale and a shift; the original's instance norm learns nothing."""
    return 2 * channels if norm == "batch" else 0


def _residual_blocks(n_blocks: int, channels: int, norm: str) -> int:
    return n_blocks * 2 * (_conv(channels, channels, 3) + _norm(norm, channels))


def global_generator_parameters(
    *, input_nc: int, output_nc: int, ngf: int, n_downsample_global: int,
    n_blocks_global: int, norm: str, output_layer: bool = True, stop_at: float = math.inf,
) -> int:
    """Parameters of `networks.GlobalGenerator` (without its last 7x7 convolution when
    `output_layer` is False, as inside a LocalEnhancer)."""
    total = _conv(input_nc, ngf, 7) + _norm(norm, ngf)
    for i in range(n_downsample_global):  # the encoder and its mirror in the decoder
        channels = ngf * 2**i
        total += _conv(channels, 2 * channels, 3) + _norm(norm, 2 * channels)
        total += _conv(2 * channels, channels, 3) + _norm(norm, channels)
        if total > stop_at:
            return total
    total += _residual_blocks(n_blocks_global, ngf * 2**n_downsample_global, norm)
    return total + (_conv(ngf, output_nc, 7) if output_layer else 0)


def generator_parameters(
    *, input_nc: int, output_nc: int, ngf: int, netG: str, n_downsample_global: int,
    n_blocks_global: int, n_local_enhancers: int, n_blocks_local: int, norm: str,
    stop_at: float = math.inf,
) -> int:
    """Parameters of `networks.build_generator` with these options (dropout and the choice of
    upsampling layer add none)."""
    if netG == "global":
        return global_generator_parameters(
            input_nc=input_nc, output_nc=output_nc, ngf=ngf,
            n_downsample_global=n_downsample_global, n_blocks_global=n_blocks_global,
            norm=norm, stop_at=stop_at)
    total = global_generator_parameters(
        input_nc=input_nc, output_nc=output_nc, ngf=ngf * 2**n_local_enhancers,
        n_downsample_global=n_downsample_global, n_blocks_global=n_blocks_global, norm=norm,
        output_layer=False, stop_at=stop_at)
    for n in range(1, n_local_enhancers + 1):
        if total > stop_at:
            return total
        width = ngf * 2 ** (n_local_enhancers - n)
        total += _conv(input_nc, width, 7) + _norm(norm, width)
        total += _conv(width, 2 * width, 3) + _norm(norm, 2 * width)
        total += _residual_blocks(n_blocks_local, 2 * width, norm)
        total += _conv(2 * width, width, 3) + _norm(norm, width)
    return total + _conv(ngf, output_nc, 7)


def discriminator_parameters(
    *, input_nc: int, ndf: int, n_layers_D: int, num_D: int, norm: str,
    stop_at: float = math.inf,
) -> int:
    """Parameters of `networks.build_discriminator`: num_D identical PatchGANs whose channels
    double from ndf up to 512."""
    one = _conv(input_nc, ndf, 4)
    channels = ndf
    for layer in range(1, n_layers_D + 1):  # n_layers_D - 1 strided layers, then a stride-1 one
        previous, channels = channels, min(channels * 2, 512)
        one += _conv(previous, channels, 4) + _norm(norm, channels)
        if channels == previous == 512:  # every further layer is the same: multiply
            one += (n_layers_D - layer) * (_conv(512, 512, 4) + _norm(norm, 512))
            break
        if one * num_D > stop_at:
            return one * num_D
    return (one + _conv(channels, 1, 4)) * num_D


def viscy_encoder_parameters(
    *, encoder_blocks: list[int], dims: list[int], stop_at: float = math.inf
) -> int:
    """The two pointwise layers (d -> 4d -> d) of every ConvNeXt V2 block in VisCy's encoder:
    most of its weights (26 of VSCyto2D's 31 M), never more than all of them."""
    total = 0
    for blocks, width in zip(encoder_blocks, dims, strict=False):
        total += blocks * 8 * width * width
        if total > stop_at:
            break
    return total


def generator_activations(
    *, crop_size: int, ngf: int, netG: str, n_downsample_global: int, n_blocks_global: int,
    n_local_enhancers: int, n_blocks_local: int,
) -> float:
    """Feature-map elements one training crop leaves for the backward pass in the generator
    (a float: deep encoders make fractional pixels, which do not matter to an estimate)."""
    enhancers = n_local_enhancers if netG == "local" else 0
    side = crop_size / 2**enhancers  # G1 runs on the input downsampled once per enhancer
    width = ngf * 2**enhancers
    elements = 2 * width * side**2  # the first and the last 7x7 layers
    for i in range(1, n_downsample_global + 1):  # encoder and decoder at each level
        elements += 2 * width * 2**i * (side / 2**i) ** 2
    deepest = n_downsample_global
    elements += 2 * n_blocks_global * width * 2**deepest * (side / 2**deepest) ** 2
    for _ in range(enhancers):  # each enhancer doubles the side and halves the width
        width, side = width // 2, side * 2
        elements += (3 + 2 * n_blocks_local) * width * side**2
    return elements * TENSORS_PER_LAYER


def discriminator_activations(
    *, crop_size: int, ndf: int, n_layers_D: int, num_D: int
) -> float:
    """Feature-map elements of one pass of the discriminator over one crop."""
    elements, side = 0.0, float(crop_size)
    for _ in range(min(num_D, 64)):  # beyond 64 halvings every scale is one pixel
        channels, size = ndf, side / 2
        elements += channels * size**2
        for layer in range(1, n_layers_D + 1):
            channels = min(channels * 2, 512)
            size = size / 2 if layer < n_layers_D else size
            elements += channels * size**2
            if size < 1:
                break
        side = math.ceil(side / 2)
    return elements * TENSORS_PER_LAYER


def viscy_activations(
    *, crop_size: int, encoder_blocks: list[int], dims: list[int], stem_stride: int
) -> float:
    """The 4d-channel maps inside the encoder's ConvNeXt blocks for one crop: a lower bound."""
    elements, side = 0.0, crop_size / stem_stride
    for blocks, width in zip(encoder_blocks, dims, strict=False):
        elements += blocks * 4 * width * side**2
        side /= 2
    return elements * TENSORS_PER_LAYER
