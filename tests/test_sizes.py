"""The arithmetic of `sizes` against networks built on the meta device (shapes, no memory)."""

import itertools

import pytest
import torch
from torch import nn

from pix2pixhd import sizes
from pix2pixhd.networks import build_discriminator, build_generator, count_parameters

GENERATOR_OPTIONS = [
    dict(netG=netG, ngf=ngf, n_downsample_global=down, n_blocks_global=blocks,
         n_local_enhancers=enhancers, n_blocks_local=local_blocks, norm=norm)
    for netG, ngf, down, blocks, enhancers, local_blocks, norm in itertools.product(
        ["global", "local"], [3], [0, 2], [0, 3], [1, 2], [2], ["instance", "batch"])
]


@pytest.mark.parametrize("options", GENERATOR_OPTIONS)
def test_generator_parameters_match_a_network_built_on_meta(options):
    with torch.device("meta"):
        generator = build_generator(input_nc=1, output_nc=2, **options)
    assert sizes.generator_parameters(input_nc=1, output_nc=2, **options) == count_parameters(
        generator)


@pytest.mark.parametrize(("ndf", "n_layers_D", "num_D", "norm"), list(itertools.product(
    [1, 32, 300], [1, 3, 6], [1, 3], ["instance", "batch"])))
def test_discriminator_parameters_match_a_network_built_on_meta(ndf, n_layers_D, num_D, norm):
    """ndf 300 with 6 layers reaches the cap of 512 channels, where the sum multiplies."""
    with torch.device("meta"):
        discriminator = build_discriminator(input_nc=3, ndf=ndf, n_layers_D=n_layers_D,
                                            num_D=num_D, norm=norm)
    assert sizes.discriminator_parameters(
        input_nc=3, ndf=ndf, n_layers_D=n_layers_D, num_D=num_D, norm=norm,
    ) == count_parameters(discriminator)


def test_a_stopped_sum_is_a_lower_bound_over_the_limit():
    huge = sizes.generator_parameters(
        input_nc=1, output_nc=1, ngf=64, netG="global", n_downsample_global=10**9,
        n_blocks_global=9, n_local_enhancers=1, n_blocks_local=3, norm="instance", stop_at=10**9)
    assert 10**9 < huge < 10**11


def _saved_for_backward(network: nn.Module, x: torch.Tensor) -> int:
    """Elements of the activations autograd keeps for the backward pass of one forward pass
    (the tensors it saves, weights left out): what the estimate estimates."""
    weights = {p.data_ptr() for p in network.parameters()}
    saved = {}

    def pack(tensor):
        if tensor.data_ptr() not in weights:
            saved[tensor.data_ptr(), tensor.numel()] = tensor.numel()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        network(x)
    return sum(saved.values())


@pytest.mark.parametrize("netG", ["global", "local"])
def test_generator_activations_estimate_what_autograd_saves(netG):
    """Measured at the sizes below: 1.11 (global) and 1.33 (local) times what is saved."""
    options = dict(ngf=8, netG=netG, n_downsample_global=3, n_blocks_global=3,
                   n_local_enhancers=1, n_blocks_local=2)
    measured = _saved_for_backward(build_generator(**options), torch.zeros(1, 1, 64, 64))
    estimate = sizes.generator_activations(crop_size=64, **options)
    assert 0.9 * measured <= estimate <= 1.6 * measured


def test_discriminator_activations_estimate_what_autograd_saves():
    """Measured: 1.32 times what is saved."""
    discriminator = build_discriminator(input_nc=2, ndf=8, n_layers_D=3, num_D=3)
    measured = _saved_for_backward(discriminator, torch.zeros(1, 2, 128, 128,
                                                              requires_grad=True))
    estimate = sizes.discriminator_activations(crop_size=128, ndf=8, n_layers_D=3, num_D=3)
    assert 0.9 * measured <= estimate <= 2 * measured


def test_viscy_encoder_count_is_most_of_the_network_and_never_more():
    """VSCyto2D's sizes: the pointwise layers are 26 M of its 31 M parameters."""
    pytest.importorskip("viscy")
    from pix2pixhd.config import ModelConfig
    from pix2pixhd.vscyto import build_viscy_generator

    for dims in ([96, 192, 384, 768], [8, 16, 32, 64]):
        model = ModelConfig(kind="viscy", dims=dims)
        with torch.device("meta"):
            network = build_viscy_generator(model, 1, 2)
        total = count_parameters(network) + sum(b.numel() for b in network.buffers())
        counted = sizes.viscy_encoder_parameters(encoder_blocks=model.encoder_blocks, dims=dims)
        assert 0.5 * total < counted <= total
