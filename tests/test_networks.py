import numpy as np
import pytest
import torch

from pix2pixhd.networks import (
    IncompatibleStateDictError,
    LocalEnhancer,
    build_discriminator,
    build_generator,
    count_parameters,
    infer_options,
    load_original_state_dict,
)

# Parameter counts of the original NVIDIA/pix2pixHD networks (define_G / define_D with
# getIntermFeat=True), 1 input and 1 output channel, instance norm, no dropout.
GENERATOR_COUNTS = [
    (dict(netG="global", ngf=64, n_downsample_global=4, n_blocks_global=9), 182_430_721),
    (dict(netG="global", ngf=64, n_downsample_global=3, n_blocks_global=9), 45_580_801),
    (dict(netG="local", ngf=32, n_downsample_global=3, n_blocks_global=9,
          n_local_enhancers=1, n_blocks_local=3), 45_839_361),
    (dict(netG="global", ngf=32, n_downsample_global=3, n_blocks_global=9), 11_399_425),
    (dict(netG="global", ngf=16, n_downsample_global=3, n_blocks_global=6), 1_966_465),
]
DISCRIMINATOR_COUNTS = [
    (dict(ndf=32, num_D=3), 2_081_187),
    (dict(ndf=64, num_D=2), 5_527_426),
    (dict(ndf=16, num_D=3), 524_499),
]


@pytest.mark.parametrize(("options", "expected"), GENERATOR_COUNTS)
def test_generator_parameter_count_matches_the_original(options, expected):
    with torch.device("meta"):  # shapes only: the largest has 182M parameters
        generator = build_generator(input_nc=1, output_nc=1, **options)
    assert count_parameters(generator) == expected


@pytest.mark.parametrize(("options", "expected"), DISCRIMINATOR_COUNTS)
def test_discriminator_parameter_count_matches_the_original(options, expected):
    with torch.device("meta"):
        discriminator = build_discriminator(input_nc=2, n_layers_D=3, **options)
    assert count_parameters(discriminator) == expected


def test_discriminator_features_have_the_original_shapes_finest_scale_first():
    ndf = 4
    discriminator = build_discriminator(input_nc=2, ndf=ndf, n_layers_D=3, num_D=3)
    with torch.no_grad():
        result = discriminator(torch.randn(1, 2, 256, 256))
    channels = [ndf, 2 * ndf, 4 * ndf, 8 * ndf, 1]
    sides = [[129, 65, 33, 34, 35], [65, 33, 17, 18, 19], [33, 17, 9, 10, 11]]
    assert len(result) == 3
    for features, scale_sides in zip(result, sides, strict=True):
        assert [tuple(f.shape) for f in features] == [
            (1, c, s, s) for c, s in zip(channels, scale_sides, strict=True)
        ]


def _constant_scale_state(discriminator) -> dict[str, torch.Tensor]:
    """All weights zero, the last layer's bias of scale i equal to i: each scale's patch
    prediction is then the constant index of the stored scale that produced it."""
    state = {key: torch.zeros_like(value) for key, value in discriminator.state_dict().items()}
    for i in range(3):
        state[f"scale{i}_layer4.0.bias"] = torch.tensor([float(i)])
    return state


def test_original_scale_order_full_resolution_goes_to_the_last_stored_scale(tmp_path):
    discriminator = build_discriminator(input_nc=2, ndf=4, n_layers_D=3, num_D=3)
    torch.save(_constant_scale_state(discriminator), tmp_path / "latest_net_D.pth")
    load_original_state_dict(discriminator, tmp_path / "latest_net_D.pth")
    with torch.no_grad():
        result = discriminator(torch.randn(1, 2, 256, 256))
    # the original's forward: result[k] comes from scale{num_D-1-k} on the input pooled k times
    assert [tuple(r[-1].shape[-2:]) for r in result] == [(35, 35), (19, 19), (11, 11)]
    assert [torch.unique(r[-1]).tolist() for r in result] == [[2.0], [1.0], [0.0]]


def _tensor(*shape):
    return torch.randn(*shape)


def test_global_generator_loads_the_original_key_layout_strictly(tmp_path):
    # original GlobalGenerator, ngf=4, n_downsampling=1, n_blocks=1, instance norm:
    # model = pad, conv, norm, relu, conv(down), norm, relu, ResnetBlock, convT, norm, relu,
    # pad, conv, tanh; ResnetBlock.conv_block = pad, conv, norm, relu, pad, conv, norm
    state = {
        "model.1.weight": _tensor(4, 1, 7, 7), "model.1.bias": _tensor(4),
        "model.4.weight": _tensor(8, 4, 3, 3), "model.4.bias": _tensor(8),
        "model.7.conv_block.1.weight": _tensor(8, 8, 3, 3),
        "model.7.conv_block.1.bias": _tensor(8),
        "model.7.conv_block.5.weight": _tensor(8, 8, 3, 3),
        "model.7.conv_block.5.bias": _tensor(8),
        "model.8.weight": _tensor(8, 4, 3, 3), "model.8.bias": _tensor(4),
        "model.12.weight": _tensor(1, 4, 7, 7), "model.12.bias": _tensor(1),
    }
    # DataParallel, as the original trains, saves keys with a `module.` prefix
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "latest_net_G.pth")
    generator = build_generator(ngf=4, n_downsample_global=1, n_blocks_global=1,
                                use_dropout=False)  # as the original's default
    load_original_state_dict(generator, tmp_path / "latest_net_G.pth")
    loaded = generator.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_local_enhancer_loads_the_original_key_layout_strictly(tmp_path):
    # original LocalEnhancer, ngf=4, n_local_enhancers=1: G1 (ngf 8, one down, one block) without
    # its last pad/conv/tanh; model1_1 = pad, conv, norm, relu, conv(down), norm, relu;
    # model1_2 = ResnetBlock, convT, norm, relu, pad, conv, tanh
    state = {
        "model.1.weight": _tensor(8, 1, 7, 7), "model.1.bias": _tensor(8),
        "model.4.weight": _tensor(16, 8, 3, 3), "model.4.bias": _tensor(16),
        "model.7.conv_block.1.weight": _tensor(16, 16, 3, 3),
        "model.7.conv_block.1.bias": _tensor(16),
        "model.7.conv_block.5.weight": _tensor(16, 16, 3, 3),
        "model.7.conv_block.5.bias": _tensor(16),
        "model.8.weight": _tensor(16, 8, 3, 3), "model.8.bias": _tensor(8),
        "model1_1.1.weight": _tensor(4, 1, 7, 7), "model1_1.1.bias": _tensor(4),
        "model1_1.4.weight": _tensor(8, 4, 3, 3), "model1_1.4.bias": _tensor(8),
        "model1_2.0.conv_block.1.weight": _tensor(8, 8, 3, 3),
        "model1_2.0.conv_block.1.bias": _tensor(8),
        "model1_2.0.conv_block.5.weight": _tensor(8, 8, 3, 3),
        "model1_2.0.conv_block.5.bias": _tensor(8),
        "model1_2.1.weight": _tensor(8, 4, 3, 3), "model1_2.1.bias": _tensor(4),
        "model1_2.5.weight": _tensor(1, 4, 7, 7), "model1_2.5.bias": _tensor(1),
    }
    torch.save(state, tmp_path / "latest_net_G.pth")
    generator = build_generator(
        netG="local", ngf=4, n_downsample_global=1, n_blocks_global=1, n_blocks_local=1,
        use_dropout=False,
    )
    load_original_state_dict(generator, tmp_path / "latest_net_G.pth")
    assert set(generator.state_dict()) == set(state)


def test_discriminator_has_the_original_key_layout():
    discriminator = build_discriminator(input_nc=2, ndf=4, n_layers_D=2, num_D=2, norm="batch")
    expected = set()
    for scale in ("scale0", "scale1"):
        for layer in ("layer0.0", "layer1.0", "layer2.0", "layer3.0"):
            expected |= {f"{scale}_{layer}.weight", f"{scale}_{layer}.bias"}
        for layer in ("layer1.1", "layer2.1"):  # batch norm after the conv of the middle layers
            expected |= {
                f"{scale}_{layer}.{name}"
                for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
            }
    assert set(discriminator.state_dict()) == expected


def test_dropout_shifts_the_second_residual_convolution_as_in_the_original():
    without = build_generator(ngf=4, n_downsample_global=1, n_blocks_global=1, use_dropout=False)
    with_dropout = build_generator(
        ngf=4, n_downsample_global=1, n_blocks_global=1, use_dropout=True
    )
    assert "model.7.conv_block.5.weight" in without.state_dict()
    assert "model.7.conv_block.6.weight" in with_dropout.state_dict()
    assert "model.7.conv_block.5.weight" not in with_dropout.state_dict()


def test_mismatched_state_dict_names_the_differing_options(tmp_path):
    saved = build_generator(ngf=4, n_downsample_global=1, n_blocks_global=2, use_dropout=False)
    torch.save(saved.state_dict(), tmp_path / "g.pth")
    other = build_generator(ngf=8, n_downsample_global=1, n_blocks_global=2, use_dropout=True)
    with pytest.raises(IncompatibleStateDictError) as error:
        load_original_state_dict(other, tmp_path / "g.pth")
    message = str(error.value)
    assert "missing in the file" in message and "model.7.conv_block.6.weight" in message
    assert "different shapes" in message
    assert "ngf=4 (this network: 8)" in message
    assert "use_dropout=False (this network: True)" in message


def test_discriminator_mismatch_names_num_d(tmp_path):
    torch.save(build_discriminator(ndf=4, num_D=2).state_dict(), tmp_path / "d.pth")
    with pytest.raises(IncompatibleStateDictError, match=r"num_D=2 \(this network: 3\)"):
        load_original_state_dict(build_discriminator(ndf=4, num_D=3), tmp_path / "d.pth")


def test_infer_options_reads_back_the_build_options():
    options = dict(
        input_nc=1, output_nc=2, ngf=4, netG="local", n_downsample_global=2, n_blocks_global=3,
        n_local_enhancers=2, n_blocks_local=1, norm="batch", use_dropout=True,
    )
    with torch.device("meta"):
        state = build_generator(**options).state_dict()
    assert infer_options(state) == options


@pytest.mark.parametrize("netG", ["global", "local"])
def test_generator_output_has_the_input_size_and_tanh_range(netG):
    generator = build_generator(
        netG=netG, ngf=4, n_downsample_global=2, n_blocks_global=1, n_blocks_local=1
    )
    x = torch.randn(2, 1, 32, 48)  # non-square, multiples of 2**(2 + 1)
    with torch.no_grad():
        y = generator(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1.0
    if netG == "local":
        assert isinstance(generator, LocalEnhancer)


def test_generator_refuses_sizes_that_are_not_a_multiple_of_its_downsampling():
    generator = build_generator(netG="local", ngf=4, n_downsample_global=2, n_blocks_global=1)
    with pytest.raises(ValueError, match="multiples of 8"):
        generator(torch.randn(1, 1, 36, 32))


def test_dropout_makes_training_passes_random_and_eval_passes_deterministic():
    generator = build_generator(
        ngf=4, n_downsample_global=1, n_blocks_global=2, use_dropout=True, dropout_p=0.5
    )
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        generator.train()
        assert not torch.equal(generator(x), generator(x))
        generator.eval()
        assert torch.equal(generator(x), generator(x))


def test_initialisation_follows_the_original():
    torch.manual_seed(0)
    generator = build_generator(ngf=16, n_downsample_global=2, n_blocks_global=2, norm="batch")
    conv = generator.model[10].conv_block[1]  # first residual convolution, 64*64*9 weights
    assert conv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert conv.weight.mean().item() == pytest.approx(0.0, abs=2e-3)
    norm = generator.model[2]
    assert norm.weight.mean().item() == pytest.approx(1.0, abs=0.02)
    assert torch.equal(norm.bias, torch.zeros_like(norm.bias))


def test_builders_refuse_unknown_choices():
    with pytest.raises(ValueError, match="netG='unet' is not one of global, local"):
        build_generator(netG="unet")
    with pytest.raises(ValueError, match="norm='group'"):
        build_discriminator(norm="group")
    with pytest.raises(ValueError, match="num_D=0"):
        build_discriminator(num_D=0)


def test_loading_something_that_is_not_a_state_dict_says_so(tmp_path):
    torch.save({"generator": {"w": torch.zeros(1)}, "epoch": 3}, tmp_path / "checkpoint.pt")
    with pytest.raises(IncompatibleStateDictError, match="is not a state dict"):
        load_original_state_dict(build_discriminator(ndf=4), tmp_path / "checkpoint.pt")


def _period_two_power_fraction(image: torch.Tensor) -> float:
    """Share of the image's spectral power at 0.5 cycles/pixel along rows or columns: the
    frequency of a period-2 (checkerboard) pattern. Borders are cut off, where padding differs."""
    image = image[0, 0, 16:-16, 16:-16].double()
    power = torch.fft.fft2(image - image.mean()).abs() ** 2
    nyquist = image.shape[0] // 2
    return float((power[nyquist, :].sum() + power[:, nyquist].sum()) / power.sum())


@pytest.mark.parametrize("netG", ["global", "local"])
def test_resize_upsampling_has_no_checkerboard_where_transpose_has_one(netG):
    """Odena et al. 2016: fed a constant image, a fresh transposed-convolution decoder paints a
    period-2 pattern (its kernel overlaps unevenly); nearest x2 + conv paints none."""
    constant = torch.ones(1, 1, 128, 128)
    nyquist_share = {}
    for upsample in ("transpose", "resize"):
        torch.manual_seed(0)
        generator = build_generator(netG=netG, ngf=8, n_downsample_global=2, n_blocks_global=1,
                                    n_blocks_local=1, upsample=upsample).eval()
        with torch.no_grad():
            nyquist_share[upsample] = _period_two_power_fraction(generator(constant))
    assert nyquist_share["transpose"] > 0.5  # measured 0.98 (global) and 0.81 (local)
    assert nyquist_share["resize"] < 0.05    # measured 0.013 and 0.0007


def test_resize_upsampling_keeps_the_parameter_count():
    for netG in ("global", "local"):
        counts = {}
        for upsample in ("transpose", "resize"):
            with torch.device("meta"):
                generator = build_generator(netG=netG, ngf=16, upsample=upsample)
            counts[upsample] = count_parameters(generator)
        assert counts["transpose"] == counts["resize"]


def test_builder_defaults_are_the_model_config_defaults():
    """A network built with no options is the one a default config trains."""
    import inspect

    from pix2pixhd.config import ModelConfig

    defaults = ModelConfig()
    for builder in (build_generator, build_discriminator):
        for name, parameter in inspect.signature(builder).parameters.items():
            if hasattr(defaults, name):
                assert parameter.default == getattr(defaults, name), (builder.__name__, name)
    assert (defaults.n_downsample_global, defaults.ndf, defaults.use_dropout) == (4, 64, True)


# --- the output low-pass -------------------------------------------------------------------


def test_binomial_low_pass_equals_scipys_convolution_with_mirrored_borders():
    from scipy import ndimage

    from pix2pixhd.networks import BinomialLowPass

    x = torch.randn(2, 3, 17, 20, generator=torch.Generator().manual_seed(0))
    kernel = np.outer([1, 2, 1], [1, 2, 1])[None, None] / 16
    expected = ndimage.convolve(x.numpy().astype(np.float64), kernel, mode="mirror")
    np.testing.assert_allclose(BinomialLowPass()(x).numpy(), expected, atol=1e-6)


def test_binomial_low_pass_removes_two_pixel_stripes_and_keeps_smooth_images():
    from pix2pixhd.networks import BinomialLowPass

    columns = torch.arange(32.0)
    stripes = (0.7 * (-1) ** columns).expand(1, 1, 16, 32).clone()
    ramp = (0.01 * columns).expand(1, 1, 16, 32).clone()
    low_pass = BinomialLowPass()
    assert low_pass(stripes).abs().max() < 1e-6
    np.testing.assert_allclose(low_pass(ramp)[..., 1:-1].numpy(), ramp[..., 1:-1].numpy(),
                               atol=1e-6)


@pytest.mark.parametrize("netG", ["global", "local"])
def test_the_low_pass_adds_no_weights_and_keeps_the_output_in_range(netG):
    from pix2pixhd.networks import BinomialLowPass

    options = dict(netG=netG, ngf=8, n_downsample_global=2, n_blocks_global=1,
                   n_blocks_local=1, upsample="resize")
    plain = build_generator(**options)
    filtered = build_generator(**options, lowpass_output=True)
    assert filtered.state_dict().keys() == plain.state_dict().keys()
    filtered.load_state_dict(plain.state_dict())
    plain.eval(), filtered.eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        smooth, raw = filtered(x), plain(x)
    assert smooth.abs().max() <= 1
    assert not torch.allclose(smooth, raw)
    torch.testing.assert_close(smooth, BinomialLowPass()(raw))
