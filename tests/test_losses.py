import math

import pytest
import torch
import torchvision

from pix2pixhd.losses import (
    VGGLoss,
    discriminator_loss,
    feature_matching_loss,
    gan_loss,
    gaussian_blur,
    l1_loss,
)


def _scales(*predictions):
    """One scale per prediction, with a dummy intermediate feature before it."""
    return [[torch.zeros(1, 2, 3, 3), p] for p in predictions]


def test_lsgan_discriminator_loss_is_zero_for_a_perfect_discriminator():
    ones, zeros = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    loss = discriminator_loss(_scales(ones, ones), _scales(zeros, zeros), "lsgan")
    assert loss.total.item() == 0.0
    assert loss.real.item() == 0.0 and loss.fake.item() == 0.0


def test_lsgan_is_the_mean_squared_distance_summed_over_scales():
    a = torch.tensor([0.0, 0.5, 1.0, 2.0]).view(1, 1, 2, 2)  # to 1: (1 + .25 + 0 + 1) / 4
    b = torch.full((1, 1, 3, 3), 3.0)  # to 1: 4
    assert gan_loss(_scales(a, b), True).item() == pytest.approx(2.25 / 4 + 4.0)
    # to 0: (0 + .25 + 1 + 4) / 4 + 9
    assert gan_loss(_scales(a, b), False).item() == pytest.approx(5.25 / 4 + 9.0)


def test_discriminator_loss_is_half_the_sum_of_its_terms():
    real = _scales(torch.full((1, 1, 2, 2), 0.5))
    fake = _scales(torch.full((1, 1, 2, 2), 0.25))
    loss = discriminator_loss(real, fake)
    assert loss.real.item() == pytest.approx(0.25)
    assert loss.fake.item() == pytest.approx(0.0625)
    assert loss.total.item() == pytest.approx(0.5 * (0.25 + 0.0625))


def test_vanilla_is_binary_cross_entropy_on_logits():
    logits = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2)
    sigmoid_2 = 1 / (1 + math.exp(-2.0))
    real = (math.log(2) - math.log(sigmoid_2)) / 2
    fake = (math.log(2) - math.log(1 - sigmoid_2)) / 2
    assert gan_loss(_scales(logits), True, "vanilla").item() == pytest.approx(real)
    assert gan_loss(_scales(logits), False, "vanilla").item() == pytest.approx(fake)


def test_gan_loss_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="mode='wgan'"):
        gan_loss(_scales(torch.zeros(1, 1, 2, 2)), True, "wgan")


def _features(values_per_scale):
    """Per scale: features filled with the given values, the last one the prediction."""
    return [[torch.full((1, 2, 2, 2), float(v)) for v in values] for values in values_per_scale]


def test_feature_matching_is_the_weighted_l1_of_intermediate_features():
    # num_D=2, n_layers_D=2 -> 4 features per scale, the last (prediction) ignored
    real = _features([[0, 0, 0, 100], [1, 1, 1, 100]])
    fake = _features([[1, 2, 3, -100], [1, 1, 3, -100]])
    weight = (1 / 2) * (4 / 3)
    expected = weight * ((1 + 2 + 3) + (0 + 0 + 2))
    loss = feature_matching_loss(real, fake, n_layers_D=2, num_D=2)
    assert loss.item() == pytest.approx(expected)


def test_feature_matching_is_zero_for_identical_features():
    real = _features([[1, 2, 3, 4, 5]] * 3)
    assert feature_matching_loss(real, real, 3, 3).item() == 0.0


def test_feature_matching_gradient_reaches_the_fake_features_only():
    real = [[torch.randn(1, 2, 4, 4, requires_grad=True) for _ in range(4)]]
    fake = [[torch.randn(1, 2, 4, 4, requires_grad=True) for _ in range(4)]]
    feature_matching_loss(real, fake, n_layers_D=2, num_D=1).backward()
    assert all(f.grad is None for f in real[0])
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in fake[0][:-1])


def test_feature_matching_refuses_a_wrong_num_d():
    real = _features([[0, 0, 0, 0]] * 2)
    with pytest.raises(ValueError, match="num_D=3"):
        feature_matching_loss(real, real, n_layers_D=2, num_D=3)


def test_l1_loss_is_the_mean_absolute_difference():
    fake = torch.tensor([[[[1.0, -1.0], [0.5, 0.0]]]])
    assert l1_loss(fake, torch.zeros_like(fake)).item() == pytest.approx(2.5 / 4)


def test_blurred_l1_ignores_fine_texture_but_sees_a_moved_nucleus():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    nucleus = ((yy - 32) ** 2 + (xx - 32) ** 2 < 10**2).float()[None, None]
    checkerboard = nucleus * 0.5 * (-1.0) ** (yy + xx)  # period 2 px, zero mean
    textured, moved = nucleus + checkerboard, torch.roll(nucleus, 4, dims=-1)
    # pixel-wise L1 punishes the texture as much as a nucleus moved by 4 px ...
    assert l1_loss(textured, nucleus).item() > 0.9 * l1_loss(moved, nucleus).item()
    # ... blurred, the texture all but vanishes and the move still counts
    assert l1_loss(textured, nucleus, 2.0).item() < 0.05 * l1_loss(moved, nucleus, 2.0).item()
    assert l1_loss(moved, nucleus, 2.0).item() > 0.3 * l1_loss(moved, nucleus).item()


def test_gaussian_blur_keeps_a_constant_and_the_mean():
    constant = torch.full((1, 1, 9, 9), 3.0)
    assert torch.allclose(gaussian_blur(constant, 1.5), constant)
    noise = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    blurred = gaussian_blur(noise, 2.0)
    assert blurred.std() < 0.3 * noise.std()  # white noise loses most of its power
    assert torch.allclose(blurred.mean(), noise.mean(), atol=0.05)


def test_vgg_loss_without_weights_says_it_never_downloads(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads") as error:
        VGGLoss(tmp_path / "vgg19-dcbb9e9d.pth")
    assert "lambda_vgg=0" in str(error.value)
    with pytest.raises(FileNotFoundError, match="vgg_weights is empty"):
        VGGLoss("")


@pytest.fixture(scope="module")
def random_vgg_file(tmp_path_factory):
    """A VGG19 file in torchvision's layout with random features (no download)."""
    with torch.device("meta"):
        vgg = torchvision.models.vgg19(weights=None)
    shapes = {key: value.shape for key, value in vgg.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state = {
        key: torch.randn(shape, generator=generator) * 0.05
        for key, shape in shapes.items() if key.startswith("features.")
    }
    state["classifier.6.bias"] = torch.zeros(1000)  # the real file has the classifier too
    path = tmp_path_factory.mktemp("vgg") / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    return path


def test_vgg_loss_is_zero_for_identical_images_and_positive_otherwise(random_vgg_file):
    loss = VGGLoss(random_vgg_file)
    real = torch.rand(1, 1, 32, 32) * 2 - 1
    assert loss(real, real).item() == 0.0
    fake = (real + 0.3 * torch.randn_like(real)).clamp(-1, 1).requires_grad_(True)
    value = loss(fake, real)
    assert value.item() > 0.0
    value.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())


def test_vgg_loss_compares_each_stain_channel_on_its_own(random_vgg_file):
    loss = VGGLoss(random_vgg_file)
    real = torch.rand(1, 2, 32, 32) * 2 - 1
    fake = torch.rand(1, 2, 32, 32) * 2 - 1
    both = loss(fake, real)
    per_channel = [loss(fake[:, [c]], real[:, [c]]) for c in range(2)]
    # the L1 of each slice averages over B * C images, so two channels give the mean of the two
    assert both.item() == pytest.approx(sum(per_channel).item() / 2, rel=1e-5)


def test_vgg_loss_stays_frozen_in_train_mode(random_vgg_file):
    loss = VGGLoss(random_vgg_file).train()
    assert not loss.training
    assert not any(p.requires_grad for p in loss.parameters())
