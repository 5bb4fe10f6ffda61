"""The table of model kinds: one entry per kind, builders, loss terms and logged tags."""

import pytest
import torch

from pix2pixhd import logs
from pix2pixhd.config import ConfigError, apply_overrides, load_config
from pix2pixhd.models import KINDS, ModelKind, make_discriminator, make_generator, model_kind


def test_the_config_checks_a_kind_added_to_the_table_and_only_it(monkeypatch):
    """A kind is one entry: once in the table, the config accepts it and runs its checks."""
    def refuse(config):
        raise ConfigError("the toy kind refuses every config")

    toy = ModelKind(**{**vars(KINDS["regression"]), "check_options": lambda model: refuse(model)})
    with pytest.raises(ConfigError, match="model.kind='toy' is not one of gan, regression"):
        apply_overrides(load_config("quick"), ["model.kind=toy"])
    monkeypatch.setitem(KINDS, "toy", toy)
    with pytest.raises(ConfigError, match="the toy kind refuses every config"):
        apply_overrides(load_config("quick"), ["model.kind=toy"])


def test_only_the_gan_has_a_discriminator_and_it_sees_phase_and_stain(tiny_config):
    assert make_discriminator(apply_overrides(tiny_config, ["model.kind=regression"])) is None
    discriminator = make_discriminator(tiny_config)
    pair = torch.zeros(1, 2, 32, 32)  # phase and one stain, side by side
    assert len(discriminator(pair)) == tiny_config.model.num_D
    assert make_discriminator(apply_overrides(tiny_config, ["model.kind=viscy"])) is None


@pytest.mark.parametrize("kind", ["gan", "regression"])
def test_generator_terms_are_logged_tags_and_sum_to_a_differentiable_loss(tiny_config, kind):
    config = apply_overrides(tiny_config, [f"model.kind={kind}", "loss.lambda_l1=5"])
    generator, discriminator = make_generator(config), make_discriminator(config)
    phase, target = torch.randn(2, 1, 32, 32), torch.rand(2, 1, 32, 32) * 2 - 1
    fake = generator(phase)
    features = (None, None)
    if discriminator is not None:
        features = (discriminator(torch.cat([phase, target], 1)),
                    discriminator(torch.cat([phase, fake], 1)))
    terms = model_kind(kind).generator_terms(fake, target, config, *features, lambda y: 3 * y)
    assert set(terms) <= set(model_kind(kind).tags) <= set(logs.GENERATOR_TAGS) | {
        *logs.DISCRIMINATOR_TAGS, *logs.D_OUT_TRAIN_TAGS, *logs.D_OUT_VAL_TAGS}
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in generator.parameters())


def test_the_gan_adds_l1_on_blurred_stains_only_when_weighted(tiny_config):
    config = apply_overrides(tiny_config, ["loss.lambda_l1=0"])
    generator, discriminator = make_generator(config), make_discriminator(config)
    phase, target = torch.randn(2, 1, 32, 32), torch.rand(2, 1, 32, 32) * 2 - 1
    fake = generator(phase)
    terms = model_kind("gan").generator_terms(
        fake, target, config, discriminator(torch.cat([phase, target], 1)),
        discriminator(torch.cat([phase, fake], 1)))
    assert set(terms) == {logs.G_GAN, logs.G_GAN_FEAT}


def test_a_kind_not_in_the_table_names_the_option():
    with pytest.raises(ConfigError, match="model.kind='diffusion' is not one of gan, regression"):
        model_kind("diffusion")


def test_the_gans_l1_in_stain_units_compares_the_stains_mapped_back(tiny_config):
    from pix2pixhd.losses import l1_loss

    config = apply_overrides(tiny_config, ["loss.lambda_l1=3", "loss.l1_blur_sigma=1.5",
                                           "loss.l1_units=stain"])
    discriminator = make_discriminator(config)
    phase = torch.randn(2, 1, 32, 32)
    target, fake = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    features = (discriminator(torch.cat([phase, target], 1)),
                discriminator(torch.cat([phase, fake], 1)))

    def to_stain_units(y):  # a stand-in map whose factors are not 1, and not affine
        return 7 * y.exp() + 2

    terms = model_kind("gan").generator_terms(fake, target, config, *features, to_stain_units)
    expected = 3 * l1_loss(to_stain_units(fake), to_stain_units(target), 1.5)
    torch.testing.assert_close(terms[logs.G_L1], expected)
    assert not torch.allclose(expected, 3 * l1_loss(fake, target, 1.5))
    with pytest.raises(ValueError, match="l1_units=stain needs"):
        model_kind("gan").generator_terms(fake, target, config, *features)


def test_the_objective_adds_the_perceptual_term_to_the_kinds_terms_and_keeps_the_gan_mode(
        tiny_config):
    """G's terms are the kind's plus lambda_vgg times the perceptual network; D's loss is the
    losses module's under loss.gan_mode."""
    from pix2pixhd.losses import discriminator_loss
    from pix2pixhd.models import Objective

    config = apply_overrides(tiny_config, ["loss.l1_units=model", "loss.gan_mode=vanilla"])
    config.loss.lambda_vgg = 0.5  # set after validation: no VGG weights are read here
    discriminator = make_discriminator(config)
    phase = torch.randn(2, 1, 32, 32)
    target, fake = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    real_features = discriminator(torch.cat([phase, target], 1))
    fake_features = discriminator(torch.cat([phase, fake], 1))

    def stand_in_vgg(a, b):
        return (a - b).abs().mean() + 1

    terms = Objective(config, vgg=stand_in_vgg).generator_terms(fake, target, real_features,
                                                                fake_features)
    kinds = model_kind("gan").generator_terms(fake, target, config, real_features,
                                              fake_features)
    assert set(terms) == set(kinds) | {logs.G_VGG}
    torch.testing.assert_close(terms[logs.G_VGG], 0.5 * stand_in_vgg(fake, target))
    assert logs.G_VGG not in Objective(config).generator_terms(fake, target, real_features,
                                                               fake_features)
    ours = Objective(config).discriminator_loss(real_features, fake_features)
    theirs = discriminator_loss(real_features, fake_features, "vanilla")
    for mine, right in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, right)
    assert not torch.allclose(ours.total, discriminator_loss(real_features, fake_features).total)


def test_the_package_and_its_command_line_start_without_torch():
    """The kind table is imported with the package, but loads torch only to build networks,
    so `data` commands and --help start fast."""
    import subprocess
    import sys

    code = "import sys, pix2pixhd.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"
