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


# --- Task 1.2 ---------------------------------------------------------------------------------

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


# --- Task 1.5 ---------------------------------------------------------------------------------

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
                         "Task 1.5", "AttributeError")
    assert "Traceback" not in message


# --- Task 1.6 ---------------------------------------------------------------------------------
# Answers as a student writes them: the right one, other right ways, and the usual mistakes.
# Each check runs one half with the Trainer's other half, so each mistake must be blamed on the
# function that makes it.

def real_and_fake_pairs(phase, target, fake):
    return torch.cat([phase, target], dim=1), torch.cat([phase, fake.detach()], dim=1)


def detached(features):
    return [[feature.detach() for feature in scale] for scale in features]


def discriminator_step(D, optimizer_D, phase, target, fake):
    real_pair, fake_pair = real_and_fake_pairs(phase, target, fake)
    pred_real, pred_fake = D(real_pair), D(fake_pair)
    loss_D, loss_D_real, loss_D_fake = discriminator_loss(pred_real, pred_fake)
    optimizer_D.zero_grad(set_to_none=True)
    loss_D.backward()
    optimizer_D.step()
    return {"loss/D_real": loss_D_real.item(), "loss/D_fake": loss_D_fake.item()}, \
        detached(pred_real)


def discriminator_step_one_pass(D, optimizer_D, phase, target, fake):
    """Right: real and fake pairs through D as one batch (instance norm keeps them apart)."""
    real_pair, fake_pair = real_and_fake_pairs(phase, target, fake)
    both = D(torch.cat([real_pair, fake_pair], dim=0))
    pred_real = [[feature[:len(phase)] for feature in scale] for scale in both]
    pred_fake = [[feature[len(phase):] for feature in scale] for scale in both]
    loss_D, loss_D_real, loss_D_fake = discriminator_loss(pred_real, pred_fake)
    optimizer_D.zero_grad()
    loss_D.backward()
    optimizer_D.step()
    return {"loss/D_real": loss_D_real.item(), "loss/D_fake": loss_D_fake.item()}, \
        detached(pred_real)


def discriminator_step_backward_per_term(D, optimizer_D, phase, target, fake):
    """Right: half of each term, one backward each (the gradients add up to loss_D's)."""
    real_pair, fake_pair = real_and_fake_pairs(phase, target, fake)
    pred_real = D(real_pair)
    optimizer_D.zero_grad()
    loss_D_real = gan_loss(pred_real, True)
    (0.5 * loss_D_real).backward()
    loss_D_fake = gan_loss(D(fake_pair), False)
    (0.5 * loss_D_fake).backward()
    optimizer_D.step()
    return {"loss/D_real": loss_D_real.item(), "loss/D_fake": loss_D_fake.item()}, \
        detached(pred_real)


def d_without_detach(D, optimizer_D, phase, target, fake):
    pred_real = D(torch.cat([phase, target], dim=1))
    pred_fake = D(torch.cat([phase, fake], dim=1))
    loss_D, loss_D_real, loss_D_fake = discriminator_loss(pred_real, pred_fake)
    optimizer_D.zero_grad()
    loss_D.backward()
    optimizer_D.step()
    return {"loss/D_real": loss_D_real.item(), "loss/D_fake": loss_D_fake.item()}, \
        detached(pred_real)


def d_without_detach_graph_kept(D, optimizer_D, phase, target, fake):
    pred_real = D(torch.cat([phase, target], dim=1))
    pred_fake = D(torch.cat([phase, fake], dim=1))
    loss_D, loss_D_real, loss_D_fake = discriminator_loss(pred_real, pred_fake)
    optimizer_D.zero_grad()
    loss_D.backward(retain_graph=True)
    optimizer_D.step()
    return {"loss/D_real": loss_D_real.item(), "loss/D_fake": loss_D_fake.item()}, \
        detached(pred_real)


def d_not_halved(D, optimizer_D, phase, target, fake):
    real_pair, fake_pair = real_and_fake_pairs(phase, target, fake)
    pred_real, pred_fake = D(real_pair), D(fake_pair)
    _, loss_D_real, loss_D_fake = discriminator_loss(pred_real, pred_fake)
    optimizer_D.zero_grad()
    (loss_D_real + loss_D_fake).backward()
    optimizer_D.step()
    return {"loss/D_real": loss_D_real.item(), "loss/D_fake": loss_D_fake.item()}, \
        detached(pred_real)


def d_without_zero_grad(D, optimizer_D, phase, target, fake):
    real_pair, fake_pair = real_and_fake_pairs(phase, target, fake)
    pred_real, pred_fake = D(real_pair), D(fake_pair)
    loss_D, loss_D_real, loss_D_fake = discriminator_loss(pred_real, pred_fake)
    loss_D.backward()
    optimizer_D.step()
    return {"loss/D_real": loss_D_real.item(), "loss/D_fake": loss_D_fake.item()}, \
        detached(pred_real)


def d_without_step(D, optimizer_D, phase, target, fake):
    real_pair, fake_pair = real_and_fake_pairs(phase, target, fake)
    pred_real, pred_fake = D(real_pair), D(fake_pair)
    loss_D, loss_D_real, loss_D_fake = discriminator_loss(pred_real, pred_fake)
    optimizer_D.zero_grad()
    loss_D.backward()
    return {"loss/D_real": loss_D_real.item(), "loss/D_fake": loss_D_fake.item()}, \
        detached(pred_real)


def d_real_and_fake_swapped(D, optimizer_D, phase, target, fake):
    real_pair, fake_pair = real_and_fake_pairs(phase, target, fake)
    pred_real, pred_fake = D(real_pair), D(fake_pair)
    loss_D, loss_D_real, loss_D_fake = discriminator_loss(pred_fake, pred_real)
    optimizer_D.zero_grad()
    loss_D.backward()
    optimizer_D.step()
    return {"loss/D_real": loss_D_real.item(), "loss/D_fake": loss_D_fake.item()}, \
        detached(pred_real)


def d_returns_tensors(D, optimizer_D, phase, target, fake):
    real_pair, fake_pair = real_and_fake_pairs(phase, target, fake)
    pred_real, pred_fake = D(real_pair), D(fake_pair)
    loss_D, loss_D_real, loss_D_fake = discriminator_loss(pred_real, pred_fake)
    optimizer_D.zero_grad()
    loss_D.backward()
    optimizer_D.step()
    return {"loss/D_real": loss_D_real, "loss/D_fake": loss_D_fake}, detached(pred_real)


def d_features_after_the_update(D, optimizer_D, phase, target, fake):
    real_pair, fake_pair = real_and_fake_pairs(phase, target, fake)
    loss_D, loss_D_real, loss_D_fake = discriminator_loss(D(real_pair), D(fake_pair))
    optimizer_D.zero_grad()
    loss_D.backward()
    optimizer_D.step()
    with torch.no_grad():
        pred_real = D(real_pair)
    return {"loss/D_real": loss_D_real.item(), "loss/D_fake": loss_D_fake.item()}, pred_real


def d_features_not_detached(D, optimizer_D, phase, target, fake):
    real_pair, fake_pair = real_and_fake_pairs(phase, target, fake)
    pred_real, pred_fake = D(real_pair), D(fake_pair)
    loss_D, loss_D_real, loss_D_fake = discriminator_loss(pred_real, pred_fake)
    optimizer_D.zero_grad()
    loss_D.backward()
    optimizer_D.step()
    return {"loss/D_real": loss_D_real.item(), "loss/D_fake": loss_D_fake.item()}, pred_real


def g_terms(D, phase, target, fake, real_features, options, *, lambda_feat=None, blur=None,
            units=True, vgg=True):
    """G's weighted terms by tag, as the notebook's solution writes them; the keywords let a
    wrong answer below leave one thing out."""
    pred_fake = D(torch.cat([phase, fake], dim=1))
    lambda_feat = options["lambda_feat"] if lambda_feat is None else lambda_feat
    terms = {"loss/G_GAN": gan_loss(pred_fake, True),
             "loss/G_GAN_Feat": lambda_feat * feature_matching_loss(
                 real_features, pred_fake, options["n_layers_D"], options["num_D"])}
    if options["lambda_l1"] > 0:
        to_units = (options["to_stain_units"] if units else None) or (lambda stain: stain)
        sigma = options["l1_blur_sigma"] if blur is None else blur
        terms["loss/G_L1"] = options["lambda_l1"] * l1_loss(to_units(fake), to_units(target),
                                                            sigma)
    if options["vgg"] is not None and vgg:
        terms["loss/G_VGG"] = options["lambda_vgg"] * options["vgg"](fake, target)
    return terms


def generator_step(D, optimizer_G, phase, target, fake, real_features, **options):
    D.requires_grad_(False)
    terms = g_terms(D, phase, target, fake, real_features, options)
    optimizer_G.zero_grad(set_to_none=True)
    sum(terms.values()).backward()
    optimizer_G.step()
    D.requires_grad_(True)
    return {tag: term.item() for tag, term in terms.items()}


def generator_step_backward_per_term(D, optimizer_G, phase, target, fake, real_features,
                                     **options):
    """Right: one backward per term, the graph kept for the next (gradients add up)."""
    for parameter in D.parameters():
        parameter.requires_grad = False
    terms = g_terms(D, phase, target, fake, real_features, options)
    optimizer_G.zero_grad()
    for term in terms.values():
        term.backward(retain_graph=True)
    optimizer_G.step()
    for parameter in D.parameters():
        parameter.requires_grad = True
    return {tag: term.item() for tag, term in terms.items()}


def generator_step_unfreezing_before_the_update(D, optimizer_G, phase, target, fake,
                                                real_features, **options):
    """Right: D trainable again as soon as G's backward is done."""
    D.requires_grad_(False)
    terms = g_terms(D, phase, target, fake, real_features, options)
    loss_G = sum(terms.values())
    optimizer_G.zero_grad()
    loss_G.backward()
    D.requires_grad_(True)
    optimizer_G.step()
    return {tag: term.item() for tag, term in terms.items()}


def g_without_lambda_feat(D, optimizer_G, phase, target, fake, real_features, **options):
    D.requires_grad_(False)
    terms = g_terms(D, phase, target, fake, real_features, options, lambda_feat=1.0)
    optimizer_G.zero_grad()
    sum(terms.values()).backward()
    optimizer_G.step()
    D.requires_grad_(True)
    return {tag: term.item() for tag, term in terms.items()}


def g_without_blur(D, optimizer_G, phase, target, fake, real_features, **options):
    D.requires_grad_(False)
    terms = g_terms(D, phase, target, fake, real_features, options, blur=0.0)
    optimizer_G.zero_grad()
    sum(terms.values()).backward()
    optimizer_G.step()
    D.requires_grad_(True)
    return {tag: term.item() for tag, term in terms.items()}


def g_in_normalised_units(D, optimizer_G, phase, target, fake, real_features, **options):
    D.requires_grad_(False)
    terms = g_terms(D, phase, target, fake, real_features, options, units=False)
    optimizer_G.zero_grad()
    sum(terms.values()).backward()
    optimizer_G.step()
    D.requires_grad_(True)
    return {tag: term.item() for tag, term in terms.items()}


def g_without_vgg(D, optimizer_G, phase, target, fake, real_features, **options):
    D.requires_grad_(False)
    terms = g_terms(D, phase, target, fake, real_features, options, vgg=False)
    optimizer_G.zero_grad()
    sum(terms.values()).backward()
    optimizer_G.step()
    D.requires_grad_(True)
    return {tag: term.item() for tag, term in terms.items()}


def g_feature_matching_not_learnt(D, optimizer_G, phase, target, fake, real_features,
                                  **options):
    D.requires_grad_(False)
    terms = g_terms(D, phase, target, fake, real_features, options)
    optimizer_G.zero_grad()
    sum(term for tag, term in terms.items() if tag != "loss/G_GAN_Feat").backward()
    optimizer_G.step()
    D.requires_grad_(True)
    return {tag: term.item() for tag, term in terms.items()}


def g_without_zero_grad(D, optimizer_G, phase, target, fake, real_features, **options):
    D.requires_grad_(False)
    terms = g_terms(D, phase, target, fake, real_features, options)
    sum(terms.values()).backward()
    optimizer_G.step()
    D.requires_grad_(True)
    return {tag: term.item() for tag, term in terms.items()}


def g_leaves_D_frozen(D, optimizer_G, phase, target, fake, real_features, **options):
    D.requires_grad_(False)
    terms = g_terms(D, phase, target, fake, real_features, options)
    optimizer_G.zero_grad()
    sum(terms.values()).backward()
    optimizer_G.step()
    return {tag: term.item() for tag, term in terms.items()}


def g_without_freezing_D(D, optimizer_G, phase, target, fake, real_features, **options):
    terms = g_terms(D, phase, target, fake, real_features, options)
    optimizer_G.zero_grad()
    sum(terms.values()).backward()
    optimizer_G.step()
    return {tag: term.item() for tag, term in terms.items()}


def g_scores_the_detached_fake(D, optimizer_G, phase, target, fake, real_features, **options):
    D.requires_grad_(False)
    pred_fake = D(torch.cat([phase, fake.detach()], dim=1))
    terms = {"loss/G_GAN": gan_loss(pred_fake, True),
             "loss/G_GAN_Feat": options["lambda_feat"] * feature_matching_loss(
                 real_features, pred_fake, options["n_layers_D"], options["num_D"])}
    terms |= {tag: term for tag, term in g_terms(D, phase, target, fake, real_features,
                                                   options).items() if tag not in terms}
    optimizer_G.zero_grad()
    sum(terms.values()).backward()
    optimizer_G.step()
    D.requires_grad_(True)
    return {tag: term.item() for tag, term in terms.items()}


def g_returns_tensors(D, optimizer_G, phase, target, fake, real_features, **options):
    D.requires_grad_(False)
    terms = g_terms(D, phase, target, fake, real_features, options)
    optimizer_G.zero_grad()
    sum(terms.values()).backward()
    optimizer_G.step()
    D.requires_grad_(True)
    return terms


def g_backward_per_term_graph_freed(D, optimizer_G, phase, target, fake, real_features,
                                    **options):
    D.requires_grad_(False)
    terms = g_terms(D, phase, target, fake, real_features, options)
    optimizer_G.zero_grad()
    for term in terms.values():
        term.backward()
    optimizer_G.step()
    D.requires_grad_(True)
    return {tag: term.item() for tag, term in terms.items()}


@pytest.fixture(scope="module")
def step_inputs(tiny_dataset):
    """A small network under the quick profile's loss weights (L1 in stain units)."""
    config = apply_overrides(load_config("quick"), TINY + [f"data.root={tiny_dataset}"])
    assert config.loss.l1_units == "stain" and config.loss.lambda_l1 > 0
    generator = torch.Generator().manual_seed(0)
    batch = {"input": torch.randn(2, 1, 64, 64, generator=generator),
             "target": torch.rand(2, 1, 64, 64, generator=generator) * 2 - 1}
    return config, batch


@pytest.mark.parametrize("d_step, g_step", [
    (discriminator_step, generator_step),
    (discriminator_step_one_pass, generator_step_backward_per_term),
    (discriminator_step_backward_per_term, generator_step_unfreezing_before_the_update),
])
def test_gan_step_check_passes_right_answers_written_in_different_ways(step_inputs, d_step,
                                                                       g_step):
    config, batch = step_inputs
    assert "passed" in tasks.check_gan_step(d_step, g_step, config, batch)


@pytest.mark.parametrize("wrong, words", [
    (d_without_detach, ("sent gradients into G", "fake.detach()")),
    (d_without_detach_graph_kept, ("sent gradients into G", "fake.detach()")),
    (d_not_halved, ("twice the Trainer's", "0.5 * (real + fake)")),
    (d_without_zero_grad, ("at step 2", "optimizer_D.zero_grad()")),
    (d_without_step, ("D did not move", "call optimizer_D.step() after it")),
    (d_real_and_fake_swapped, ("loss/D_real", "in that order")),
    (d_returns_tensors, ("not a float", "loss.item()")),
    (d_features_after_the_update, ("real features that differ", "before optimizer_D.step()")),
    (d_features_not_detached, ("still carry D's graph", "feature.detach()")),
])
def test_gan_step_check_blames_the_discriminator_step_for_its_mistakes(step_inputs, wrong,
                                                                       words):
    config, batch = step_inputs
    message = fails_with(lambda: tasks.check_gan_step(wrong, generator_step, config, batch),
                         "your discriminator_step", *words)
    assert "generator_step" not in message


@pytest.mark.parametrize("wrong, words", [
    (g_without_lambda_feat, ("loss/G_GAN_Feat", "multiply it by lambda_feat (= 2.5 here)")),
    (g_without_blur, ("loss/G_L1", "blur")),
    (g_in_normalised_units, ("loss/G_L1", "to_stain_units(fake)")),
    (g_without_vgg, ("returns no loss/G_VGG",)),  # the second setting has a perceptual term
    (g_feature_matching_not_learnt, ("leaves out loss/G_GAN_Feat",)),
    (g_without_zero_grad, ("at step 2", "optimizer_G.zero_grad()")),
    (g_leaves_D_frozen, ("leaves D frozen", "D.requires_grad_(True)")),
    (g_without_freezing_D, ("gradients of G's loss in D", "D.requires_grad_(False)")),
    (g_scores_the_detached_fake, ("no gradient of D's scores reaches G", "fake.detach()")),
    (g_returns_tensors, ("not a float", "loss.item()")),
    (g_backward_per_term_graph_freed, ("RuntimeError", "retain_graph=True")),
])
def test_gan_step_check_blames_the_generator_step_for_its_mistakes(step_inputs, wrong, words):
    config, batch = step_inputs
    message = fails_with(lambda: tasks.check_gan_step(discriminator_step, wrong, config, batch),
                         "your generator_step", *words)
    assert "discriminator_step" not in message and "Traceback" not in message


# --- Task 3.1 ---------------------------------------------------------------------------------

def f1_at_iou(iou, threshold=0.5):
    """One-to-one: each true nucleus takes the first predicted nucleus still free."""
    taken = np.zeros(iou.shape[1], dtype=bool)
    true_positives = 0
    for row in iou >= threshold:
        free = np.flatnonzero(row & ~taken)
        if free.size:
            taken[free[0]] = True
            true_positives += 1
    false_positives = iou.shape[1] - true_positives
    false_negatives = iou.shape[0] - true_positives
    return 2 * true_positives / max(2 * true_positives + false_positives + false_negatives, 1)


def f1_counting_every_pair(iou, threshold=0.5):
    tp = int((iou >= threshold).sum())
    fp, fn = iou.shape[1] - tp, iou.shape[0] - tp
    return 2 * tp / max(2 * tp + fp + fn, 1)


def f1_strictly_above(iou, threshold=0.5):
    return f1_at_iou(iou, np.nextafter(threshold, 1))


def test_f1_check_passes_one_to_one_matching_and_names_each_mistake():
    assert "passed" in tasks.check_f1_at_iou(f1_at_iou)
    message = fails_with(lambda: tasks.check_f1_at_iou(f1_counting_every_pair),
                         "a nucleus cut in two halves", "1.333, above 1", "match one-to-one")
    assert "it should be 0.667" in message
    fails_with(lambda: tasks.check_f1_at_iou(f1_strictly_above), "use iou >= threshold, not >")
    fails_with(lambda: tasks.check_f1_at_iou(lambda iou, t: (1, 2, 3)), "return one number")
    fails_with(lambda: tasks.check_f1_at_iou(lambda iou, t: None), "return one number")
    fails_with(lambda: tasks.check_f1_at_iou(
        lambda iou, t: 2 * (iou >= t).sum() / (2 * (iou >= t).sum() + iou.shape[1])),
        "every other true nucleus a false negative")


def test_the_module_never_scores_the_split_nucleus_above_1():
    from pix2pixhd.metrics import match_instances

    true, predicted = tasks._label_images(*tasks.F1_CASES[
        "a nucleus cut in two halves (IoU exactly 0.5 with each)"])
    assert match_instances(true, predicted, [0.5])["f1"] == [pytest.approx(2 / 3)]


# --- Task 4.1 ---------------------------------------------------------------------------------

def crop_around(centre, size, shape):
    starts = [min(max(int(c) - size // 2, 0), length - size)
              for c, length in zip(centre, shape, strict=True)]
    return tuple(slice(start, start + size) for start in starts)


def crop_as_start_stop_pairs(centre, size, shape):
    return tuple((s.start, s.stop) for s in crop_around(centre, size, shape))


def crop_unclamped(centre, size, shape):
    return tuple(slice(c - size // 2, c - size // 2 + size) for c in centre)


def crop_with_float_starts(centre, size, shape):
    starts = [min(max(c - size / 2, 0), length - size)
              for c, length in zip(centre, shape, strict=True)]
    return tuple(slice(start, start + size) for start in starts)


def crop_cut_at_the_border(centre, size, shape):
    return tuple(slice(max(c - size // 2, 0), min(c - size // 2 + size, length))
                 for c, length in zip(centre, shape, strict=True))


def crop_one_short_for_odd_sizes(centre, size, shape):
    starts = [min(max(c - size // 2, 0), length - size)
              for c, length in zip(centre, shape, strict=True)]
    return tuple(slice(start, start + 2 * (size // 2)) for start in starts)


def crop_refusing_centres_outside(centre, size, shape):
    if not all(0 <= c < length for c, length in zip(centre, shape, strict=True)):
        return None
    return crop_around(centre, size, shape)


def test_crop_check_passes_slices_and_names_each_mistake_in_its_own_words():
    assert "passed" in tasks.check_crop_around(crop_around)
    assert "passed" in tasks.check_crop_around(  # numpy integers are whole numbers too
        lambda *a: tuple(slice(np.int64(s.start), np.int64(s.stop)) for s in crop_around(*a)))
    fails_with(lambda: tasks.check_crop_around(crop_as_start_stop_pairs),
               "return slices", "not (start, stop) pairs")
    fails_with(lambda: tasks.check_crop_around(crop_unclamped), "reaches outside",
               "clamp each start")
    fails_with(lambda: tasks.check_crop_around(crop_with_float_starts), "whole numbers",
               "size // 2, not size / 2")
    fails_with(lambda: tasks.check_crop_around(crop_cut_at_the_border), "37 x 38 pixels",
               "stop = start + size")
    fails_with(lambda: tasks.check_crop_around(crop_one_short_for_odd_sizes), "14 x 14 pixels",
               "should be 15 x 15")
    fails_with(lambda: tasks.check_crop_around(crop_refusing_centres_outside),
               "crop_around((-20, 300), 32, (256, 256)) returns None")


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


def test_trust_threshold_check_passes_the_answer_and_names_swaps_and_the_boundary():
    def right(nuclei, threshold):
        removed = nuclei.trust < threshold
        return int((removed & (nuclei.matched == 0)).sum()), int((removed & nuclei.matched).sum())

    assert "passed" in tasks.check_trust_threshold(right)
    fails_with(lambda: tasks.check_trust_threshold(lambda t, h: right(t, h)[::-1]), "swapped")
    fails_with(lambda: tasks.check_trust_threshold(
        lambda t, h: (int(((t.trust <= h) & (t.matched == 0)).sum()),
                      int(((t.trust <= h) & (t.matched == 1)).sum()))), "not <=")
    fails_with(lambda: tasks.check_trust_threshold(
        lambda t, h: (int((t.trust < h).sum()), 0)), "should be")
    fails_with(lambda: tasks.check_trust_threshold(lambda t, h: 3), "pair")
