"""The checks of the exercise's tasks pass the right answers and reject the usual wrong ones,
each with a message that names the mistake (not a raw exception)."""

import warnings

import numpy as np
import pytest
import torch

from pix2pixhd import tasks
from pix2pixhd.config import apply_overrides, load_config
from pix2pixhd.losses import discriminator_loss, feature_matching_loss, gan_loss, l1_loss
from pix2pixhd.tasks import TaskCheckFailed

from .conftest import TINY


def fails_with(check, *words):
    """The check raises TaskCheckFailed whose message holds every one of `words`."""
    with pytest.raises(TaskCheckFailed) as raised:
        check()
    for word in words:
        assert word in str(raised.value), str(raised.value)
    return str(raised.value)


# --- Task 1.1 ---------------------------------------------------------------------------------

def normalise(image, p_low, p_high):
    return 2 * (image - p_low) / (p_high - p_low) - 1


def denormalise(normalised, p_low, p_high):
    return (normalised + 1) / 2 * (p_high - p_low) + p_low


def test_stain_normalisation_check_passes_the_answer_and_names_each_mistake():
    assert "passed" in tasks.check_stain_normalisation(normalise, denormalise, 113.4, 2121.2)
    fails_with(lambda: tasks.check_stain_normalisation(
        lambda x, lo, hi: (x - lo) / (hi - lo), denormalise, 113.4, 2121.2), "[0, 1]")
    fails_with(lambda: tasks.check_stain_normalisation(
        lambda x, lo, hi: np.clip(normalise(x, lo, hi), -1, 1), denormalise, 113.4, 2121.2),
        "do not clip")
    fails_with(lambda: tasks.check_stain_normalisation(
        normalise, lambda y, lo, hi: (y + 1) * (hi - lo) + lo, 113.4, 2121.2),
        "denormalise_stain", "+1 to p_high")


# --- Task 1.2 ---------------------------------------------------------------------------------

def fm_loss(real, fake, n_layers_D, num_D, *, layer_weight=True, detach=True, item=False):
    loss = 0.0
    weight = (4.0 / (n_layers_D + 1) if layer_weight else 1.0) / num_D
    for real_scale, fake_scale in zip(real, fake, strict=True):
        for r, f in zip(real_scale[:-1], fake_scale[:-1], strict=True):
            loss = loss + weight * (f - (r.detach() if detach else r)).abs().mean()
    return loss.item() if item else loss


@pytest.mark.parametrize("shape", [(3, 3), (2, 2)])
def test_feature_matching_check_passes_the_answer_for_each_discriminator_shape(shape):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the check prints no UserWarning
        message = tasks.check_feature_matching(fm_loss, n_layers_D=shape[0], num_D=shape[1])
    assert "passed" in message and "1.33" in message  # 4 / 3: a layer weight other than 1


def test_feature_matching_check_names_each_mistake():
    check = lambda loss: lambda: tasks.check_feature_matching(loss, n_layers_D=3, num_D=3)  # noqa: E731
    # the profiles' n_layers_D=3 makes the layer weight 1, yet leaving it out is caught
    fails_with(check(lambda *a, **k: fm_loss(*a, **k, layer_weight=False)),
               "layer weight 4 / (n_layers_D + 1)", "missing")
    fails_with(check(lambda *a, **k: fm_loss(*a, **k, detach=False)), "real_feature.detach()")
    fails_with(check(lambda *a, **k: fm_loss(*a, **k, item=True)), "not a tensor", ".item()")
    fails_with(check(lambda real, fake, n_layers_D, num_D: feature_matching_loss(
        [s + [s[-1]] for s in real], [s + [s[-1]] for s in fake], n_layers_D, num_D)),
        "raised ValueError")
    fails_with(check(lambda real, fake, n_layers_D, num_D: sum(
        (f - r.detach()).abs().mean() / num_D for rs, fs in zip(real, fake, strict=True)
        for r, f in zip(rs, fs, strict=True))), "last entry of each scale")


def test_a_raw_exception_inside_a_task_becomes_a_hint():
    def broken(real, fake, n_layers_D, num_D):
        return real.detach()  # a list has no detach

    message = fails_with(lambda: tasks.check_feature_matching(broken, n_layers_D=3, num_D=3),
                         "Task 1.2", "AttributeError")
    assert "Traceback" not in message


# --- Task 1.3 ---------------------------------------------------------------------------------

def discriminator_step(D, optimizer_D, phase, target, fake, *, detach=True, item=True):
    pred_real = D(torch.cat([phase, target], dim=1))
    pred_fake = D(torch.cat([phase, fake.detach() if detach else fake], dim=1))
    loss_D, loss_real, loss_fake = discriminator_loss(pred_real, pred_fake)
    optimizer_D.zero_grad(set_to_none=True)
    loss_D.backward(retain_graph=not detach)
    optimizer_D.step()
    numbers = {"loss/D_real": loss_real, "loss/D_fake": loss_fake}
    if item:
        numbers = {name: value.item() for name, value in numbers.items()}
    return numbers, [[f.detach() for f in scale] for scale in pred_real]


def generator_step(D, optimizer_G, phase, target, fake, real_features, *, lambda_feat,
                   lambda_l1, l1_blur_sigma, n_layers_D, num_D, to_stain_units=None, vgg=None,
                   lambda_vgg=0.0, mistake=None):
    D.requires_grad_(False)
    pred_fake = D(torch.cat([phase, fake], dim=1))
    feat = feature_matching_loss(real_features, pred_fake, n_layers_D=n_layers_D, num_D=num_D)
    terms = {"loss/G_GAN": gan_loss(pred_fake, True),
             "loss/G_GAN_Feat": feat if mistake == "no lambda_feat" else lambda_feat * feat}
    if lambda_l1 > 0:
        units = to_stain_units if to_stain_units and mistake != "normalised units" else None
        units = units or (lambda stain: stain)
        terms["loss/G_L1"] = lambda_l1 * l1_loss(
            units(fake), units(target), 0.0 if mistake == "no blur" else l1_blur_sigma)
    if vgg is not None and mistake != "no vgg":
        terms["loss/G_VGG"] = lambda_vgg * vgg(fake, target)
    if mistake != "no zero_grad":
        optimizer_G.zero_grad(set_to_none=True)
    left_out = {"feature matching not in backward": "loss/G_GAN_Feat",
                "perceptual term not in backward": "loss/G_VGG"}.get(mistake)
    learnt = {tag: term for tag, term in terms.items() if tag != left_out}
    sum(learnt.values()).backward()
    optimizer_G.step()
    if mistake != "D stays frozen":
        D.requires_grad_(True)
    if mistake == "tensors returned":
        return {tag: term for tag, term in terms.items()}
    return {tag: term.item() for tag, term in terms.items()}


def with_mistake(mistake):
    return lambda *args, **kwargs: generator_step(*args, **kwargs, mistake=mistake)


@pytest.fixture(scope="module")
def step_inputs(tiny_dataset):
    """The quick profile's loss weights on the tiny networks: the check compares terms and
    updates, which the networks' sizes do not change."""
    config = apply_overrides(load_config("quick"), TINY + [f"data.root={tiny_dataset}"])
    assert config.loss.l1_units == "stain"
    generator = torch.Generator().manual_seed(0)
    batch = {"input": torch.randn(2, 1, 64, 64, generator=generator),
             "target": torch.rand(2, 1, 64, 64, generator=generator) * 2 - 1}
    return config, batch


def test_gan_step_check_passes_the_step_with_every_term_the_trainer_logs(step_inputs):
    config, batch = step_inputs
    assert config.loss.lambda_l1 > 0, "the check must use the profile's real weights"
    assert "passed" in tasks.check_gan_step(discriminator_step, generator_step, config, batch)


@pytest.mark.parametrize("mistake, words", [
    ("no lambda_feat", ("loss/G_GAN_Feat", "multiply it by lambda_feat (= 2.5 here)")),
    ("no blur", ("loss/G_L1", "blur")),
    ("normalised units", ("loss/G_L1", "to_stain_units(fake)")),
    ("no vgg", ("no loss/G_VGG",)),
    ("feature matching not in backward", ("backward leaves out loss/G_GAN_Feat",)),
    ("perceptual term not in backward", ("backward leaves out loss/G_VGG",)),  # 2nd setting
    ("no zero_grad", ("zero optimizer_G's gradients",)),
    ("D stays frozen", ("D is still frozen",)),
    ("tensors returned", ("not a float", "loss.item()")),
])
def test_gan_step_check_names_each_mistake_of_the_generator_step(step_inputs, mistake, words):
    config, batch = step_inputs
    message = fails_with(lambda: tasks.check_gan_step(discriminator_step, with_mistake(mistake),
                                                      config, batch), *words)
    assert "zero each optimiser" not in message or mistake == "no zero_grad"


def test_gan_step_check_names_the_mistakes_of_the_discriminator_step(step_inputs):
    config, batch = step_inputs
    fails_with(lambda: tasks.check_gan_step(
        lambda *a: discriminator_step(*a, detach=False), generator_step, config, batch),
        "fake.detach()")
    fails_with(lambda: tasks.check_gan_step(
        lambda *a: discriminator_step(*a, item=False), generator_step, config, batch),
        "not a float")

    def no_retain(D, optimizer_D, phase, target, fake):  # the graph through G is freed
        pred_real = D(torch.cat([phase, target], dim=1))
        pred_fake = D(torch.cat([phase, fake], dim=1))
        loss_D, loss_real, loss_fake = discriminator_loss(pred_real, pred_fake)
        optimizer_D.zero_grad()
        loss_D.backward()
        optimizer_D.step()
        return ({"loss/D_real": loss_real.item(), "loss/D_fake": loss_fake.item()},
                [[f.detach() for f in scale] for scale in pred_real])

    message = fails_with(lambda: tasks.check_gan_step(no_retain, generator_step, config, batch),
                         "RuntimeError", "fake.detach()")
    assert "Traceback" not in message


# --- Task 3.1 ---------------------------------------------------------------------------------

def f1_at_iou(iou, threshold=0.5, strict=False):
    tp = int((iou > threshold if strict else iou >= threshold).sum())
    fp, fn = iou.shape[1] - tp, iou.shape[0] - tp
    return 2 * tp / max(2 * tp + fp + fn, 1)


def test_f1_check_passes_the_answer_and_catches_greater_than_on_ties():
    assert "passed" in tasks.check_f1_at_iou(f1_at_iou)
    fails_with(lambda: tasks.check_f1_at_iou(lambda iou, t: f1_at_iou(iou, t, strict=True)),
               "use iou >= threshold, not >")
    fails_with(lambda: tasks.check_f1_at_iou(lambda iou, t: (1, 2, 3)), "return one number")
    fails_with(lambda: tasks.check_f1_at_iou(
        lambda iou, t: 2 * (iou >= t).sum() / (2 * (iou >= t).sum() + iou.shape[1])),
        "every other true nucleus a false negative")


# --- Task 4.1 ---------------------------------------------------------------------------------

def crop_around(centre, size, shape):
    starts = [min(max(int(c) - size // 2, 0), length - size)
              for c, length in zip(centre, shape, strict=True)]
    return tuple(slice(start, start + size) for start in starts)


def test_crop_check_passes_slices_and_names_start_stop_pairs_and_unclamped_windows():
    assert "passed" in tasks.check_crop_around(crop_around)
    fails_with(lambda: tasks.check_crop_around(
        lambda *a: tuple((s.start, s.stop) for s in crop_around(*a))),
        "return slices", "not (start, stop) pairs")
    fails_with(lambda: tasks.check_crop_around(
        lambda centre, size, shape: tuple(slice(int(c) - size // 2, int(c) - size // 2 + size)
                                          for c in centre)), "clamp the start")


# --- Task 5.1 ---------------------------------------------------------------------------------

def test_std_check_passes_the_answer_and_names_ddof_swaps_and_signs():
    right = lambda s, y: (s.std(axis=0, ddof=1), np.abs(s.mean(axis=0) - y))  # noqa: E731
    assert "passed" in tasks.check_std_and_error_maps(right)
    fails_with(lambda: tasks.check_std_and_error_maps(
        lambda s, y: (s.std(axis=0), np.abs(s.mean(axis=0) - y))), "ddof=1")
    fails_with(lambda: tasks.check_std_and_error_maps(lambda s, y: right(s, y)[::-1]),
               "swapped")
    fails_with(lambda: tasks.check_std_and_error_maps(
        lambda s, y: (s.std(axis=0, ddof=1), s.mean(axis=0) - y)), "absolute value")
    fails_with(lambda: tasks.check_std_and_error_maps(
        lambda s, y: (s.std(axis=2, ddof=1), np.abs(s.mean(axis=0) - y))), "axis (0)")
