"""Checks of the exercise's tasks: the notebook's check cells call these, the tests feed them
typical wrong answers.

    print(check_feature_matching(my_feature_matching_loss, n_layers_D=3, num_D=3))

Each check runs the student's function under at least two settings, one of them with every
weight other than 1 (so that a forgotten factor shows), compares it with the module's own code
or with a hand-computed answer, and raises `TaskCheckFailed` with a message that names the
mistake and the fix. An exception raised inside the student's function becomes such a message
too. A check returns one line to print when the answer is right.
"""

from __future__ import annotations

import copy
import functools
import math
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pix2pixhd import logs
from pix2pixhd.config import Config, apply_overrides
from pix2pixhd.losses import feature_matching_loss
from pix2pixhd.metrics import iou_matrix, match_instances
from pix2pixhd.networks import build_discriminator
from pix2pixhd.normalisation import DatasetNormaliser
from pix2pixhd.train import Trainer, frozen
from pix2pixhd.uncertainty import uncertainty_maps


class TaskCheckFailed(AssertionError):
    """A task's answer is wrong; the message names the mistake and the fix."""


ERROR_HINTS = (
    ("backward through the graph a second time",
     "a graph was used by two backward passes: D's loss must see fake.detach(), and G's loss "
     "needs its own pass of (phase, fake) through D"),
    ("does not require grad",
     "the loss has no graph to backward through: build it from tensors (no .item(), float(), "
     ".detach() or numpy on the way) and call .item() only on what you return"),
    ("modified by an inplace operation",
     "a weight changed between a forward pass and its backward: call optimizer.step() only "
     "after the backward of the loss that used those weights"),
    ("has no attribute 'item'",
     "a plain number where a tensor was expected: keep losses as tensors, and call .item() "
     "only on the numbers you return"),
    ("has no attribute 'backward'",
     "a plain number where a tensor was expected: .item() drops the graph, so call it only on "
     "the numbers you return, after backward"),
    ("unsupported operand type",
     "a value of the wrong type (None, or a tuple, where a number or tensor was expected): "
     "check what each function you call returns"),
)
"""(words of an exception raised inside a student's function, what it usually means)."""


def _fail(message: str) -> None:
    raise TaskCheckFailed(message)


def _call(task: str, function: Callable, *args: Any, **kwargs: Any) -> Any:
    """function(*args, **kwargs); an exception other than the stub's becomes a hint."""
    try:
        return function(*args, **kwargs)
    except (NotImplementedError, TaskCheckFailed):
        raise
    except Exception as error:  # the student's code: any error is a mistake to explain
        text = f"{type(error).__name__}: {error}"
        hint = next((hint for words, hint in ERROR_HINTS if words in str(error)), None)
        name = getattr(function, "__name__", "your function")
        raise TaskCheckFailed(
            f"{task}: your {name} raised {text.splitlines()[0][:300]}"
            + (f"; {hint}" if hint else "; read the task's box again and fix that line")
        ) from error


def _as_float(value: Any) -> float:
    if isinstance(value, Tensor):
        return float(value.detach().cpu().reshape(-1)[0])
    return float(value)


def _close(value: float, right: float, tolerance: float = 1e-5) -> bool:
    return math.isclose(value, right, rel_tol=tolerance, abs_tol=tolerance)


# --- Task 1.1: stain normalisation ------------------------------------------------------------


def check_stain_normalisation(normalise: Callable, denormalise: Callable, p_low: float,
                              p_high: float) -> str:
    """Both maps at the dataset's percentiles and at made-up ones, inside and outside the range."""
    for low, high in ((p_low, p_high), (10.0, 50.0)):
        span = high - low
        values = np.array([low - 0.2 * span, low, low + 0.25 * span, high, high + 0.5 * span])
        right = 2 * (values - low) / span - 1
        yours = np.asarray(_call("Task 1.1", normalise, values, low, high), dtype=float)
        if yours.shape != values.shape:
            _fail(f"Task 1.1: normalise_stain of {values.size} values gives shape {yours.shape}; "
                  "apply the map to every pixel (plain arithmetic on the array)")
        if not np.allclose(yours, right, atol=1e-5):
            first = int(np.argmax(~np.isclose(yours, right, atol=1e-5)))
            mistake = ("it maps onto [0, 1]: multiply by 2 and subtract 1"
                       if np.allclose(yours, (values - low) / span, atol=1e-5) else
                       "values outside [p_low, p_high] must land outside [-1, 1]; do not clip"
                       if np.allclose(yours, np.clip(right, -1, 1), atol=1e-5) else
                       f"p_low = {low:.4g} goes to -1, p_high = {high:.4g} to +1, linearly")
            _fail(f"Task 1.1: your normalise_stain maps {values[first]:.4g} to "
                  f"{yours[first]:.4f}, it should be {right[first]:.4f}: {mistake}")
        back = np.asarray(_call("Task 1.1", denormalise, right, low, high), dtype=float)
        if back.shape != values.shape or not np.allclose(back, values, rtol=1e-5,
                                                         atol=1e-6 * span):
            _fail(f"Task 1.1: your denormalise_stain maps {list(np.round(right, 3))} to "
                  f"{list(np.round(np.ravel(back), 4))}, it should be "
                  f"{list(np.round(values, 4))}: -1 goes back to p_low, +1 to p_high")
    return "Task 1.1 passed: your normalisation and its inverse are right, inside and outside " \
           "[p_low, p_high], for two pairs of percentiles"


# --- Task 1.2: feature matching ---------------------------------------------------------------


def _features(n_layers_D: int, num_D: int, seed: int) -> tuple[list, list]:
    """A small multi-scale D's features of a random real pair and a random fake pair."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    discriminator = build_discriminator(input_nc=2, ndf=8, n_layers_D=n_layers_D, num_D=num_D)
    pairs = torch.randn(2, 2, 2, 64, 64, generator=generator).tanh()
    with torch.no_grad():
        return discriminator(pairs[0]), discriminator(pairs[1])


def _feature_matching_variants(real: list, fake: list, n_layers_D: int, num_D: int
                               ) -> dict[str, float]:
    """What common mistakes compute, by the mistake's description."""
    layer, scale = 4.0 / (n_layers_D + 1), 1.0 / num_D

    def total(weight: float, last: int | None = -1, reduce: str = "mean") -> float:
        value = 0.0
        for real_scale, fake_scale in zip(real, fake, strict=True):
            for r, f in zip(real_scale[:last], fake_scale[:last], strict=True):
                value += weight * float(getattr((f - r).abs(), reduce)())
        return value

    return {
        f"the layer weight 4 / (n_layers_D + 1) = {layer:.3g} is missing": total(scale),
        f"the scale weight 1 / num_D = {scale:.3g} is missing": total(layer),
        "both weights, 4 / (n_layers_D + 1) and 1 / num_D, are missing": total(1.0),
        "the last entry of each scale (the patch scores) is included; leave it out, it "
        "belongs to the GAN loss": total(layer * scale, None),
        "it sums |fake - real| over each feature map; take the mean":
            total(layer * scale, -1, "sum"),
    }


def check_feature_matching(loss: Callable, *, n_layers_D: int, num_D: int) -> str:
    """The value against the module's loss, and where the gradient goes, for the profile's
    discriminator shape and for n_layers_D = 2, num_D = 2 (layer weight 4/3, not 1)."""
    settings = [(n_layers_D, num_D)] + [s for s in ((2, 2), (4, 3)) if s != (n_layers_D, num_D)]
    for index, (layers, scales) in enumerate(settings[:2]):
        real, fake = _features(layers, scales, seed=index)
        real_leaves = [[f.clone().requires_grad_() for f in scale] for scale in real]
        fake_leaves = [[f.clone().requires_grad_() for f in scale] for scale in fake]
        yours = _call("Task 1.2", loss, real_leaves, fake_leaves, n_layers_D=layers,
                      num_D=scales)
        where = f"with n_layers_D={layers}, num_D={scales}"
        if not isinstance(yours, Tensor):
            _fail(f"Task 1.2: your loss {where} is a {type(yours).__name__}, not a tensor: "
                  "return the loss as a tensor (no .item() or float()), G's backward needs it")
        if yours.numel() != 1:
            _fail(f"Task 1.2: your loss {where} has shape {tuple(yours.shape)}; return one "
                  "number: the sum over scales and layers of weight * mean |fake - real|")
        right = float(feature_matching_loss(real, fake, n_layers_D=layers, num_D=scales))
        value = yours.detach().item()
        if not _close(value, right):
            mistake = next((text for text, wrong in _feature_matching_variants(
                real, fake, layers, scales).items() if _close(value, wrong)),
                "each feature map's mean |fake - real|, weighted by 4 / (n_layers_D + 1) and "
                "1 / num_D, summed over every layer but the last of each scale")
            _fail(f"Task 1.2: your loss {where} is {value:.5f}, the module's {right:.5f}: "
                  f"{mistake}")
        if not yours.requires_grad:
            _fail(f"Task 1.2: your loss {where} has no graph: build it from the feature "
                  "tensors, with no .item(), float() or .detach() of the fake features")
        yours.backward()
        if any(f.grad is not None and bool(f.grad.any()) for s in real_leaves for f in s):
            _fail("Task 1.2: a gradient reached the real features: they are targets, use "
                  "real_feature.detach()")
        if any(f.grad is None for s in fake_leaves for f in s[:-1]):
            _fail("Task 1.2: no gradient reached some fake features: every layer but the last "
                  "of each scale must take part")
    return ("Task 1.2 passed: the module's value for two discriminator shapes (layer weights "
            f"{4 / (settings[0][0] + 1):.3g} and {4 / (settings[1][0] + 1):.3g}), and gradients "
            "reach only the fake side")


# --- Task 1.3: the GAN's training step ------------------------------------------------------


class StandInPerceptualLoss(nn.Module):
    """A fixed, tiny stand-in for the VGG loss (no weights to download): L1 between 4x4
    average-pooled images. The check only needs a term that behaves like `Trainer.vgg`."""

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        pool = nn.functional.avg_pool2d
        return (pool(fake, 4) - pool(real.detach(), 4)).abs().mean()


def gan_step_options(trainer: Trainer) -> dict[str, Any]:
    """generator_step's keywords for a Trainer: the loss weights, D's shape, the perceptual
    network and, when loss.l1_units is 'stain', the map of normalised stains to stain units."""
    config = trainer.config
    loss = config.loss
    to_stain_units = trainer.stain_units() if loss.l1_units == "stain" else None
    return {"lambda_feat": loss.lambda_feat, "lambda_l1": loss.lambda_l1,
            "l1_blur_sigma": loss.l1_blur_sigma, "to_stain_units": to_stain_units,
            "n_layers_D": config.model.n_layers_D, "num_D": config.model.num_D,
            "vgg": trainer.vgg, "lambda_vgg": loss.lambda_vgg}


def gan_training_step(discriminator_step: Callable, generator_step: Callable, G: nn.Module,
                      D: nn.Module, optimizer_G: Any, optimizer_D: Any, phase: Tensor,
                      target: Tensor, **options: Any) -> dict[str, float]:
    """One Pix2PixHD step from the two halves: fake = G(phase), D's update, then G's."""
    fake = G(phase)
    result = _call("Task 1.3", discriminator_step, D, optimizer_D, phase, target, fake)
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], dict)):
        _fail("Task 1.3: discriminator_step must return a pair: ({'loss/D_real': ..., "
              f"'loss/D_fake': ...}}, real_features); it returned a {type(result).__name__}")
    numbers, real_features = result
    generator_numbers = _call("Task 1.3", generator_step, D, optimizer_G, phase, target, fake,
                              real_features, **options)
    if not isinstance(generator_numbers, dict):
        _fail("Task 1.3: generator_step must return a dict of its loss terms by tag; it "
              f"returned a {type(generator_numbers).__name__}")
    return numbers | generator_numbers


def _gan_step_settings(config: Config) -> list[tuple[str, list[str], bool]]:
    """(description, overrides, stand-in perceptual loss): the profile's weights, then every
    factor other than 1 on a smaller network."""
    loss = config.loss
    return [
        (f"the profile's weights (lambda_feat={loss.lambda_feat:g}, lambda_l1={loss.lambda_l1:g}"
         f", l1_blur_sigma={loss.l1_blur_sigma:g}, L1 in {loss.l1_units} units, "
         f"n_layers_D={config.model.n_layers_D})", [], False),
        ("every factor other than 1 (lambda_feat=2.5, lambda_l1=3, l1_blur_sigma=1.5, L1 in "
         "stain units under the asinh map, n_layers_D=2, num_D=2, a perceptual term with "
         "lambda_vgg=0.5)",
         ["loss.lambda_feat=2.5", "loss.lambda_l1=3", "loss.l1_blur_sigma=1.5",
          "loss.l1_units=stain", "data.stain_map=asinh",
          "model.n_layers_D=2", "model.num_D=2", "model.ngf=8", "model.ndf=8",
          "model.n_downsample_global=2", "model.n_blocks_global=2", "model.netG=global"], True),
    ]


def check_gan_step(discriminator_step: Callable, generator_step: Callable, config: Config,
                   batch: dict[str, Tensor], *, learning_rate: float = 0.01) -> str:
    """The two halves against `Trainer.train_step` with every term it logs, for two steps
    under two settings, from the same weights: the losses, D's gradients, the updated weights.

    Adam moves every weight by about lr, even where a gradient is rounding noise (the biases in
    front of instance norm), so two right steps could differ by 2 lr; plain SGD keeps each
    update proportional to its gradient, so the comparison sees only real differences.
    """
    small = {key: batch[key][:2, :, :64, :64].float().cpu() for key in ("input", "target")}
    batches = [small, {key: value.flip(-1) for key, value in small.items()}]
    for description, overrides, stand_in in _gan_step_settings(config):
        with tempfile.TemporaryDirectory(prefix="pix2pixhd-task-1.3-") as folder:
            setting = apply_overrides(config, [
                "train.name=step_check", f"train.checkpoints_dir={folder}", "train.device=cpu",
                "train.amp=none", "train.compile=false", "train.channels_last=false",
                *overrides])
            _check_gan_step_setting(discriminator_step, generator_step, setting, batches,
                                    description, stand_in, learning_rate)
    return ("Task 1.3 passed: your step gives the Trainer's losses (GAN, feature matching, "
            "blurred L1, perceptual), D's gradients and updated weights, with the profile's "
            "weights and with every factor other than 1")


def _sgd_trainer(config: Config, stand_in: bool, learning_rate: float) -> Trainer:
    data = config.data
    normaliser = DatasetNormaliser.from_dataset(data.root, data.input_channel,
                                                data.target_channels, stain_map=data.stain_map)
    trainer = Trainer(config, loaders=([], []), normaliser=normaliser)
    trainer.optimizer_G = torch.optim.SGD(trainer.generator.parameters(), lr=learning_rate)
    trainer.optimizer_D = torch.optim.SGD(trainer.discriminator.parameters(), lr=learning_rate)
    if stand_in:
        trainer.vgg = StandInPerceptualLoss()
        trainer.config = copy.deepcopy(trainer.config)
        trainer.config.loss.lambda_vgg = 0.5
    return trainer


def _check_gan_step_setting(discriminator_step: Callable, generator_step: Callable,
                            config: Config, batches: list[dict[str, Tensor]], description: str,
                            stand_in: bool, learning_rate: float) -> None:
    yours = _sgd_trainer(config, stand_in, learning_rate)
    module = _sgd_trainer(config, stand_in, learning_rate)
    options = gan_step_options(module)
    gradients_into_G: list[int] = []
    next(yours.generator.parameters()).register_hook(lambda gradient: gradients_into_G.append(1))
    for number, batch in enumerate(batches, start=1):
        where = f"at step {number}, with {description}"
        gradients_into_G.clear()
        # each step starts from the module's weights (one D pass of real and fake together
        # against two leaves rounding differences that a second step would grow); gradients
        # are kept, so a missing zero_grad still shows at step 2
        for network in ("generator", "discriminator"):
            getattr(yours, network).load_state_dict(getattr(module, network).state_dict())
        before = {network: {name: weight.detach().clone() for name, weight
                            in getattr(module, network).named_parameters()}
                  for network in ("generator", "discriminator")}
        torch.manual_seed(number)  # the same dropout masks in both generators
        mine = gan_training_step(discriminator_step, generator_step, yours.generator,
                                 yours.discriminator, yours.optimizer_G, yours.optimizer_D,
                                 batch["input"], batch["target"], **options)
        torch.manual_seed(number)
        theirs = {name: float(value) for name, value in module.train_step(batch).items()
                  if name.startswith("loss/")}
        _compare_step_numbers(mine, theirs, options, where)
        if len(gradients_into_G) != 1:
            _fail(f"Task 1.3: {where}, gradients reached G's weights {len(gradients_into_G)} "
                  "times: D's loss must see fake.detach(), so that only G's loss reaches G")
        if not all(p.requires_grad for p in yours.discriminator.parameters()):
            _fail(f"Task 1.3: {where}, D is still frozen after the step: make it trainable "
                  "again (D.requires_grad_(True)) after G's update")
        largest = max(float(p.grad.abs().max()) for p in module.discriminator.parameters())
        for (name, weight), reference in zip(yours.discriminator.named_parameters(),
                                             module.discriminator.parameters(), strict=True):
            if weight.grad is None or float((weight.grad - reference.grad).abs().max()) > \
                    0.01 * largest:
                _fail(f"Task 1.3: {where}, D's gradient of {name} is not D's loss's alone: "
                      "freeze D (D.requires_grad_(False)) during G's step, so that G's loss "
                      "leaves none in D, and zero D's gradients before its backward")
        _compare_weights(yours, module, before, batch, number, where,
                         functools.partial(_sgd_trainer, config, stand_in, learning_rate))


def _compare_step_numbers(mine: dict, theirs: dict[str, float], options: dict, where: str
                          ) -> None:
    """The returned numbers: every logged term, as floats, equal to the Trainer's."""
    hints = {
        logs.D_REAL: "D scores (phase, target) as real; discriminator_loss returns "
                     "(loss_D, loss_D_real, loss_D_fake)",
        logs.D_FAKE: "D scores (phase, fake.detach()) as fake; discriminator_loss returns "
                     "(loss_D, loss_D_real, loss_D_fake)",
        logs.G_GAN: "score (phase, fake) with a new pass through D after D's update, fake not "
                    "detached, and gan_loss(..., True)",
        logs.G_GAN_FEAT: "feature_matching_loss between the real features kept from D's step "
                         "and D's features of (phase, fake), times lambda_feat",
        logs.G_L1: "lambda_l1 * l1_loss(to_stain_units(fake), to_stain_units(target), "
                   "l1_blur_sigma): L1 of the two stains in their own units (fake and target "
                   "as they are when to_stain_units is None) after the same Gaussian blur",
        logs.G_VGG: "lambda_vgg * vgg(fake, target), only when vgg is given",
    }
    factors = {logs.G_GAN_FEAT: ("lambda_feat", options["lambda_feat"]),
               logs.G_L1: ("lambda_l1", options["lambda_l1"]),
               logs.G_VGG: ("lambda_vgg", options["lambda_vgg"])}
    missing = [name for name in theirs if name not in mine]
    if missing:
        _fail(f"Task 1.3: {where}, your step returns no {', '.join(missing)}: "
              + "; ".join(hints[name] for name in missing if name in hints))
    extra = [name for name in mine if name not in theirs]
    if extra:
        _fail(f"Task 1.3: {where}, your step returns {', '.join(extra)}, which the Trainer "
              f"does not log here; return exactly {', '.join(theirs)}")
    for name, right in theirs.items():
        value = mine[name]
        if not isinstance(value, float):
            _fail(f"Task 1.3: {where}, your {name} is a {type(value).__name__}, not a float: "
                  "return plain numbers, loss.item(), so that no graph is kept alive")
        if abs(value - right) <= 1e-5 * max(1.0, abs(right)):
            continue
        factor = factors.get(name)
        if factor and factor[1] not in (0, 1) and _close(value * factor[1], right, 1e-4):
            _fail(f"Task 1.3: {where}, your {name} is {value:.5f}, the Trainer's {right:.5f}: "
                  f"multiply it by {factor[0]} (= {factor[1]:g} here)")
        _fail(f"Task 1.3: {where}, your {name} is {value:.5f}, the Trainer's {right:.5f}: "
              f"{hints.get(name, 'compute it as the Trainer does')}")


def _compare_weights(yours: Trainer, module: Trainer, before: dict, batch: dict, number: int,
                     where: str, make_reference: Callable[[], Trainer]) -> None:
    for network in ("discriminator", "generator"):
        mine = {name: w.detach() for name, w in getattr(yours, network).named_parameters()}
        theirs = {name: w.detach() for name, w in getattr(module, network).named_parameters()}
        update = max(float((theirs[name] - before[network][name]).abs().max()) for name in theirs)
        for name, weight in theirs.items():
            difference = float((mine[name] - weight).abs().max())
            if difference <= 0.01 * update:
                continue
            if network == "discriminator":
                _fail(f"Task 1.3: {where}, D's {name} differs from the Trainer's by "
                      f"{difference:.2e} (the largest update is {update:.2e}): zero D's "
                      "gradients before its backward and step optimizer_D once per step")
            _fail(f"Task 1.3: {where}, G's {name} differs from the Trainer's by "
                  f"{difference:.2e} (the largest update is {update:.2e}): "
                  + _generator_update_mistake(yours, before, batch, number, make_reference))


def _generator_update_mistake(yours: Trainer, before: dict, batch: dict, number: int,
                              make_reference: Callable[[], Trainer]) -> str:
    """Which terms G's update holds, and how often: the update (SGD: -lr times the gradient)
    fitted by least squares to each logged term's gradient at the step's starting weights,
    on a fresh trainer of the same setting (`make_reference`)."""
    reference = make_reference()
    learning_rate = reference.optimizer_G.param_groups[0]["lr"]
    with torch.no_grad():
        for network in ("generator", "discriminator"):
            for name, weight in getattr(reference, network).named_parameters():
                weight.copy_(before[network][name])
    phase, target = batch["input"], batch["target"]
    torch.manual_seed(number)
    fake = reference.generator(phase)
    _, real_features = reference.discriminator_step(phase, target, fake)
    with frozen(reference.discriminator):
        fake_features = reference.discriminator(torch.cat([phase, fake], dim=1))
        terms = reference.kind.generator_terms(fake, target, reference.config, real_features,
                                               fake_features, reference.stain_units())
        if reference.vgg is not None:
            terms[logs.G_VGG] = reference.config.loss.lambda_vgg * reference.vgg(fake, target)
    parameters = list(reference.generator.parameters())
    columns = []
    for term in terms.values():
        gradients = torch.autograd.grad(term, parameters, retain_graph=True, allow_unused=True)
        columns.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                  for g, p in zip(gradients, parameters, strict=True)]))
    basis = torch.stack(columns, dim=1).double()
    update = torch.cat([(before["generator"][name] - weight.detach()).reshape(-1) / learning_rate
                        for name, weight in yours.generator.named_parameters()]).double()
    coefficients = torch.linalg.lstsq(basis, update[:, None]).solution[:, 0]
    residual = float((basis @ coefficients - update).norm() / update.norm().clamp_min(1e-12))
    if residual > 0.05:
        return ("G's update is not made of this step's loss terms: zero optimizer_G's "
                "gradients before G's backward (left over from an earlier backward, they "
                "add up), and step it once per training step")
    wrong = {tag: float(c) for tag, c in zip(terms, coefficients, strict=True)
             if abs(float(c) - 1) > 0.1}
    left_out = [tag for tag, c in wrong.items() if abs(c) < 0.1]
    if left_out:
        return (f"G's backward leaves out {', '.join(left_out)}: call backward once on the sum "
                "of every term you return (the numbers you log must be what G learns from)")
    return ("G's update holds " + ", ".join(f"{c:.2f} x {tag}" for tag, c in wrong.items())
            + ": backward the sum of the terms once, each term once, and step once")


# --- Task 3.1: F1 from an IoU matrix ---------------------------------------------------------


def _f1_by_hand(iou: np.ndarray, threshold: float, strict: bool = False) -> float:
    matched = iou > threshold if strict else iou >= threshold
    tp = int(matched.sum())
    fp, fn = iou.shape[1] - tp, iou.shape[0] - tp
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def _tied_label_images() -> tuple[np.ndarray, np.ndarray]:
    """True and predicted nuclei whose IoUs are exactly 1, 0.75 and 0.5, plus one invented."""
    true = np.zeros((40, 80), dtype=np.int32)
    predicted = np.zeros_like(true)
    true[0:10, 0:10] = 1
    predicted[0:10, 0:10] = 1            # IoU 1
    true[0:20, 20:30] = 2
    predicted[0:15, 20:30] = 2           # 150 / 200 = 0.75
    true[0:10, 40:50] = 3
    predicted[0:5, 40:50] = 3            # 50 / 100 = 0.5
    predicted[30:38, 60:68] = 4          # invented
    return true, predicted


def check_f1_at_iou(f1_at_iou: Callable, extra_cases: dict[str, tuple] | None = None) -> str:
    """Hand-made IoU matrices and label images with IoUs exactly at the thresholds (ties), then
    any (true labels, predicted labels) given, at IoU 0.5, 0.75 and 0.9, against the module."""
    matrices = {
        "a 3 x 3 IoU matrix with IoUs 0.5 and 0.75": np.array(
            [[0.5, 0.0, 0.0], [0.0, 0.75, 0.3], [0.0, 0.0, 0.0]]),
        "a 2 x 4 IoU matrix (more predicted than true nuclei)": np.array(
            [[0.9, 0.1, 0.0, 0.0], [0.0, 0.0, 0.6, 0.0]]),
        "no predicted nuclei (a 2 x 0 matrix)": np.zeros((2, 0)),
    }
    true, predicted = _tied_label_images()
    cases = {"label images with IoUs exactly 1, 0.75 and 0.5": (true, predicted),
             **(extra_cases or {})}
    checked = []
    for case, iou in matrices.items():
        for threshold in (0.5, 0.75, 0.9):
            checked.append(_check_f1_case(f1_at_iou, case, iou, threshold,
                                          _f1_by_hand(iou, threshold)))
    for case, (true_labels, predicted_labels) in cases.items():
        iou = iou_matrix(true_labels, predicted_labels)[2].toarray()
        for threshold in (0.5, 0.75, 0.9):
            right = match_instances(true_labels, predicted_labels, [threshold])["f1"][0]
            checked.append(_check_f1_case(f1_at_iou, case, iou, threshold, right))
    return (f"Task 3.1 passed: your F1 agrees with the module's matching in {len(checked)} "
            "cases, ties at the threshold included")


def _check_f1_case(f1_at_iou: Callable, case: str, iou: np.ndarray, threshold: float,
                   right: float) -> float:
    yours = _call("Task 3.1", f1_at_iou, iou.copy(), threshold)
    if isinstance(yours, tuple | list | dict | np.ndarray) and np.size(yours) != 1:
        _fail(f"Task 3.1: for {case} your f1_at_iou returns {yours!r}; return one number, "
              "2 TP / (2 TP + FP + FN)")
    value = _as_float(np.ravel(yours)[0] if isinstance(yours, np.ndarray) else yours)
    if math.isclose(value, right, abs_tol=1e-6):
        return value
    if math.isclose(value, _f1_by_hand(iou, threshold, strict=True), abs_tol=1e-6):
        _fail(f"Task 3.1: for {case} at IoU {threshold} your F1 is {value:.3f}, it should be "
              f"{right:.3f}: a pair whose IoU equals the threshold is a match; use "
              "iou >= threshold, not >")
    _fail(f"Task 3.1: for {case} at IoU {threshold} your F1 is {value:.3f}, it should be "
          f"{right:.3f}: a true positive is a pair with IoU >= threshold, every other predicted "
          "nucleus is a false positive and every other true nucleus a false negative")
    return value


# --- Task 4.1: a window around a nucleus ----------------------------------------------------

CROP_CASES = {
    ((100, 100), 64, (256, 256)): ((68, 132), (68, 132)),
    ((5, 250), 64, (256, 256)): ((0, 64), (192, 256)),
    ((130, 40), 32, (140, 300)): ((108, 140), (24, 56)),
    ((0, 0), 16, (16, 40)): ((0, 16), (0, 16)),
    ((60, 33), 15, (64, 64)): ((49, 64), (26, 41)),
}
"""(centre, size, shape) -> ((row start, stop), (column start, stop)), worked out by hand."""


def check_crop_around(crop_around: Callable) -> str:
    """Windows inside the image, at its edges and corners, of even and odd sizes."""
    image = np.arange(300 * 300).reshape(300, 300)
    for (centre, size, shape), right in CROP_CASES.items():
        window = _call("Task 4.1", crop_around, centre, size, shape)
        call = f"crop_around({centre}, {size}, {shape})"
        if not (isinstance(window, tuple | list) and len(window) == 2):
            _fail(f"Task 4.1: {call} returns {window!r}; return a pair of slices "
                  "(rows, columns)")
        if not all(isinstance(part, slice) for part in window):
            _fail(f"Task 4.1: {call} returns {tuple(window)!r}: return slices, "
                  "(slice(row_start, row_start + size), slice(column_start, column_start + "
                  "size)), not (start, stop) pairs, so that image[window] crops")
        mine = tuple((part.start, part.stop) for part in window)
        if mine != right:
            _fail(f"Task 4.1: {call} gives rows {mine[0][0]}:{mine[0][1]}, columns "
                  f"{mine[1][0]}:{mine[1][1]}; it should be rows {right[0][0]}:{right[0][1]}, "
                  f"columns {right[1][0]}:{right[1][1]} (start at centre - size // 2, then "
                  "move the window inside the image: clamp the start to [0, length - size])")
        if image[tuple(window)].shape != (size, size):
            _fail(f"Task 4.1: image[{call}] is not {size} x {size}")
    return "Task 4.1 passed: your windows are centred and stay inside the image"


# --- Task 5.1: spread and error of MC-dropout samples -----------------------------------------


def check_std_and_error_maps(std_and_error_maps: Callable,
                             cases: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> str:
    """A hand-made case of 3 draws (where ddof matters most), then the samples given."""
    made_up = (np.array([[[1.0, 0.0]], [[2.0, 0.0]], [[4.0, 3.0]]]), np.array([[3.0, 0.0]]))
    for samples, stain in [made_up, *cases]:
        result = _call("Task 5.1", std_and_error_maps, samples, stain)
        if not (isinstance(result, tuple | list) and len(result) == 2):
            _fail(f"Task 5.1: std_and_error_maps returns {type(result).__name__}; return the "
                  "pair (std map, error map)")
        std, error = (np.asarray(part, dtype=float) for part in result)
        maps = uncertainty_maps(samples)
        right_std, right_error = maps["std"], np.abs(maps["mean"] - stain)
        for name, mine in (("std", std), ("error", error)):
            if mine.shape != right_std.shape:
                _fail(f"Task 5.1: your {name} map has shape {mine.shape}, it should be "
                      f"{right_std.shape}: reduce over the samples axis (0)")
        scale = max(float(np.abs(right_std).max()), float(np.abs(right_error).max()), 1e-12)
        same = lambda a, b, scale=scale: bool(np.max(np.abs(a - b)) <= 1e-4 * scale)  # noqa: E731
        if same(std, right_error) and same(error, right_std):
            _fail("Task 5.1: your maps are swapped: return (std map, error map)")
        if not same(std, right_std):
            _fail("Task 5.1: your std map differs from the module's: "
                  + ("use the sample standard deviation, ddof=1" if same(
                      std, samples.std(axis=0)) else
                     "the standard deviation over the draws, axis 0, with ddof=1"))
        if not same(error, right_error):
            _fail("Task 5.1: your error map differs from the module's: "
                  + ("take the absolute value, |mean - stain|" if same(
                      error, maps["mean"] - stain) or same(error, stain - maps["mean"]) else
                     "take |mean of the samples over axis 0 - real stain|"))
    return "Task 5.1 passed: your std and error maps agree with the module's"


# --- Task 5.2: a trust threshold ---------------------------------------------------------------


def check_trust_threshold(threshold_outcome: Callable) -> str:
    """A hand-made table where one nucleus sits exactly at the threshold (kept: removal is
    trust < threshold) and each kind of nucleus is removed in a different number."""
    import pandas as pd

    nuclei = pd.DataFrame({"trust": [0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 1.0, 1.0],
                           "matched": [0, 0, 1, 0, 1, 1, 1, 0]})
    for threshold, right in ((0.5, (2, 1)), (0.8, (3, 3)), (0.0, (0, 0))):
        result = _call("Task 5.2", threshold_outcome, nuclei.copy(), threshold)
        if not (isinstance(result, tuple | list) and len(result) == 2):
            _fail(f"Task 5.2: threshold_outcome returns {type(result).__name__}; return the "
                  "pair (false nuclei removed, real nuclei lost)")
        mine = tuple(int(value) for value in result)
        if mine == right:
            continue
        if mine == right[::-1]:
            _fail("Task 5.2: your counts are swapped: return (false nuclei removed, real "
                  "nuclei lost); false nuclei are those with matched == 0")
        strict = nuclei.trust <= threshold
        if mine == (int((strict & (nuclei.matched == 0)).sum()),
                    int((strict & (nuclei.matched == 1)).sum())):
            _fail("Task 5.2: a nucleus whose trust equals the threshold is kept: remove "
                  "those with trust < threshold, not <=")
        _fail(f"Task 5.2: at threshold {threshold} your counts are {mine}, they should be "
              f"{right}: count the nuclei with trust < threshold, split by matched (0 = false, "
              "1 = real)")
    return "Task 5.2 passed: your counts agree with a hand-made table"
