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
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from pix2pixhd import logs
from pix2pixhd.config import Config, apply_overrides
from pix2pixhd.losses import Predictions, feature_matching_loss
from pix2pixhd.metrics import iou_matrix, match_instances
from pix2pixhd.models import Objective
from pix2pixhd.networks import build_discriminator
from pix2pixhd.normalisation import DatasetNormaliser
from pix2pixhd.train import Trainer, frozen
from pix2pixhd.uncertainty import uncertainty_maps


class TaskCheckFailed(AssertionError):
    """A task's answer is wrong; the message names the mistake and the fix."""


ERROR_HINTS = (
    ("backward through the graph a second time",
     "a graph was used by two backward passes: a backward per loss term needs "
     "retain_graph=True on every one but the last (or backward their sum once)"),
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


def _call(task: str, function: Callable, *args: Any, role: str | None = None,
          **kwargs: Any) -> Any:
    """function(*args, **kwargs); an exception other than the stub's becomes a hint that names
    the function by `role` (the name the task gave it), else by its own name."""
    try:
        return function(*args, **kwargs)
    except (NotImplementedError, TaskCheckFailed):
        raise
    except Exception as error:  # the student's code: any error is a mistake to explain
        text = f"{type(error).__name__}: {error}"
        hint = next((hint for words, hint in ERROR_HINTS if words in str(error)), None)
        name = role or getattr(function, "__name__", "function")
        raise TaskCheckFailed(
            f"{task}: your {name} raised {text.splitlines()[0][:300]}"
            + (f"; {hint}" if hint else "; read the task's box again and fix that line")
        ) from error


def _close(value: float, right: float, tolerance: float = 1e-5) -> bool:
    return math.isclose(value, right, rel_tol=tolerance, abs_tol=tolerance)


# --- Task 1.2: stain normalisation ------------------------------------------------------------


def check_stain_normalisation(normalise: Callable, denormalise: Callable, p_low: float,
                              p_high: float) -> str:
    """Both maps at the dataset's percentiles and at made-up ones, inside and outside the range."""
    for low, high in ((p_low, p_high), (10.0, 50.0)):
        span = high - low
        values = np.array([low - 0.2 * span, low, low + 0.25 * span, high, high + 0.5 * span])
        right = 2 * (values - low) / span - 1
        yours = np.asarray(_call("Task 1.2", normalise, values, low, high), dtype=float)
        if yours.shape != values.shape:
            _fail(f"Task 1.2: normalise_stain of {values.size} values gives shape {yours.shape}; "
                  "apply the map to every pixel (plain arithmetic on the array)")
        if not np.allclose(yours, right, atol=1e-5):
            first = int(np.argmax(~np.isclose(yours, right, atol=1e-5)))
            mistake = ("it maps onto [0, 1]: multiply by 2 and subtract 1"
                       if np.allclose(yours, (values - low) / span, atol=1e-5) else
                       "values outside [p_low, p_high] must land outside [-1, 1]; do not clip"
                       if np.allclose(yours, np.clip(right, -1, 1), atol=1e-5) else
                       f"p_low = {low:.4g} goes to -1, p_high = {high:.4g} to +1, linearly")
            _fail(f"Task 1.2: your normalise_stain maps {values[first]:.4g} to "
                  f"{yours[first]:.4f}, it should be {right[first]:.4f}: {mistake}")
        back = np.asarray(_call("Task 1.2", denormalise, right, low, high), dtype=float)
        if back.shape != values.shape or not np.allclose(back, values, rtol=1e-5,
                                                         atol=1e-6 * span):
            _fail(f"Task 1.2: your denormalise_stain maps {list(np.round(right, 3))} to "
                  f"{list(np.round(np.ravel(back), 4))}, it should be "
                  f"{list(np.round(values, 4))}: -1 goes back to p_low, +1 to p_high")
    return "Task 1.2 passed: your normalisation and its inverse are right, inside and outside " \
           "[p_low, p_high], for two pairs of percentiles"


# --- Task 1.5: feature matching ---------------------------------------------------------------


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
        yours = _call("Task 1.5", loss, real_leaves, fake_leaves, n_layers_D=layers,
                      num_D=scales)
        where = f"with n_layers_D={layers}, num_D={scales}"
        if not isinstance(yours, Tensor):
            _fail(f"Task 1.5: your loss {where} is a {type(yours).__name__}, not a tensor: "
                  "return the loss as a tensor (no .item() or float()), G's backward needs it")
        if yours.numel() != 1:
            _fail(f"Task 1.5: your loss {where} has shape {tuple(yours.shape)}; return one "
                  "number: the sum over scales and layers of weight * mean |fake - real|")
        right = float(feature_matching_loss(real, fake, n_layers_D=layers, num_D=scales))
        value = yours.detach().item()
        if not _close(value, right):
            mistake = next((text for text, wrong in _feature_matching_variants(
                real, fake, layers, scales).items() if _close(value, wrong)),
                "each feature map's mean |fake - real|, weighted by 4 / (n_layers_D + 1) and "
                "1 / num_D, summed over every layer but the last of each scale")
            _fail(f"Task 1.5: your loss {where} is {value:.5f}, the module's {right:.5f}: "
                  f"{mistake}")
        if not yours.requires_grad:
            _fail(f"Task 1.5: your loss {where} has no graph: build it from the feature "
                  "tensors, with no .item(), float() or .detach() of the fake features")
        yours.backward()
        if any(f.grad is not None and bool(f.grad.any()) for s in real_leaves for f in s):
            _fail("Task 1.5: a gradient reached the real features: they are targets, use "
                  "real_feature.detach()")
        if any(f.grad is None for s in fake_leaves for f in s[:-1]):
            _fail("Task 1.5: no gradient reached some fake features: every layer but the last "
                  "of each scale must take part")
    return ("Task 1.5 passed: the module's value for two discriminator shapes (layer weights "
            f"{4 / (settings[0][0] + 1):.3g} and {4 / (settings[1][0] + 1):.3g}), and gradients "
            "reach only the fake side")


# --- Task 1.6: the GAN's training step ------------------------------------------------------


class StandInPerceptualLoss(nn.Module):
    """A fixed, tiny stand-in for the VGG loss (no weights to download): L1 between 4x4
    average-pooled images. The check only needs a term that behaves like `Objective.vgg`."""

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        pool = nn.functional.avg_pool2d
        return (pool(fake, 4) - pool(real.detach(), 4)).abs().mean()


def gan_step_options(trainer: Trainer) -> dict[str, Any]:
    """generator_step's keywords for a Trainer: the loss weights, D's shape, the perceptual
    network and, when loss.l1_units is 'stain', the map of normalised stains to stain units."""
    config, objective = trainer.config, trainer.objective
    loss = config.loss
    to_stain_units = objective.to_stain_units if loss.l1_units == "stain" else None
    return {"lambda_feat": loss.lambda_feat, "lambda_l1": loss.lambda_l1,
            "l1_blur_sigma": loss.l1_blur_sigma, "to_stain_units": to_stain_units,
            "n_layers_D": config.model.n_layers_D, "num_D": config.model.num_D,
            "vgg": objective.vgg, "lambda_vgg": loss.lambda_vgg}


def _gan_step_settings(config: Config) -> list[tuple[str, list[str], bool]]:
    """(description, overrides, stand-in perceptual loss): the profile's weights, then every
    factor other than 1 on a network no larger than the profile's."""
    loss, model = config.loss, config.model
    return [
        (f"the profile's weights (lambda_feat={loss.lambda_feat:g}, lambda_l1={loss.lambda_l1:g}"
         f", l1_blur_sigma={loss.l1_blur_sigma:g}, L1 in {loss.l1_units} units, "
         f"n_layers_D={config.model.n_layers_D})", [], False),
        ("every factor other than 1 (lambda_feat=2.5, lambda_l1=3, l1_blur_sigma=1.5, L1 in "
         "stain units under the asinh map, n_layers_D=2, num_D=2, a perceptual term with "
         "lambda_vgg=0.5)",
         ["loss.lambda_feat=2.5", "loss.lambda_l1=3", "loss.l1_blur_sigma=1.5",
          "loss.l1_units=stain", "data.stain_map=asinh",
          "model.n_layers_D=2", "model.num_D=2", f"model.ngf={min(model.ngf, 8)}",
          f"model.ndf={min(model.ndf, 8)}", "model.n_downsample_global=2",
          f"model.n_blocks_global={min(model.n_blocks_global, 2)}", "model.netG=global"], True),
    ]


def check_gan_step(discriminator_step: Callable, generator_step: Callable, config: Config,
                   batch: dict[str, Tensor], *, learning_rate: float = 1e-3) -> str:
    """Each half of the step on its own, the other half being the Trainer's: your
    discriminator_step followed by `Trainer.generator_step`, and `Trainer.discriminator_step`
    followed by your generator_step. Both are held to `Trainer.train_step` (whose terms come
    from `models.Objective`) for two steps under two settings: the losses, the gradients that
    reach each network, the updated weights. A mistake is so reported in the half that makes it.

    Adam moves every weight by about lr, even where a gradient is rounding noise (the biases in
    front of instance norm), so two right steps could differ by 2 lr; plain SGD keeps each
    update proportional to its gradient, so the comparison sees only real differences. Its
    lr is small because the L1 term in stain units has large gradients: at 0.01 one step
    saturates G's tanh, and a second step would compare updates of zero.
    """
    small = {key: batch[key][:2, :, :64, :64].float().cpu() for key in ("input", "target")}
    batches = [small, {key: value.flip(-1) for key, value in small.items()}]
    for description, overrides, stand_in in _gan_step_settings(config):
        with tempfile.TemporaryDirectory(prefix="pix2pixhd-task-1.3-") as folder:
            setting = apply_overrides(config, [
                "train.name=step_check", f"train.checkpoints_dir={folder}", "train.device=cpu",
                "train.amp=none", "train.compile=false", "train.channels_last=false",
                *overrides])
            _check_gan_step_setting(discriminator_step, generator_step, batches, description,
                                    functools.partial(_sgd_trainer, setting, stand_in,
                                                      learning_rate))
    return ("Task 1.6 passed: your discriminator_step and your generator_step, each with the "
            "Trainer's other half, give the Trainer's losses (GAN, feature matching, blurred "
            "L1, perceptual), gradients and updated weights, with the profile's weights and "
            "with every factor other than 1")


def _sgd_trainer(config: Config, stand_in: bool, learning_rate: float) -> Trainer:
    data = config.data
    normaliser = DatasetNormaliser.from_dataset(data.root, data.input_channel,
                                                data.target_channels, stain_map=data.stain_map)
    trainer = Trainer(config, loaders=([], []), normaliser=normaliser)
    trainer.optimizer_G = torch.optim.SGD(trainer.generator.parameters(), lr=learning_rate)
    trainer.optimizer_D = torch.optim.SGD(trainer.discriminator.parameters(), lr=learning_rate)
    if stand_in:
        trainer.config = copy.deepcopy(trainer.config)
        trainer.config.loss.lambda_vgg = 0.5
        trainer.objective = Objective(trainer.config, trainer.stain_units(),
                                      StandInPerceptualLoss())
    return trainer


class _ModuleStep(NamedTuple):
    """What `Trainer.train_step`'s two halves give from one step's starting weights."""

    before: dict[str, dict[str, Tensor]]
    """G's and D's weights at the start, by network and name."""
    after: dict[str, dict[str, Tensor]]
    """The same after the step (D's after D's update: G's update leaves D alone)."""
    numbers: dict[str, float]
    """Every loss term the Trainer logs, by tag."""
    real_features: Predictions
    """D's features of the real pair from D's step: G's feature-matching target."""


def _weights(trainer: Trainer) -> dict[str, dict[str, Tensor]]:
    return {network: {name: weight.detach().clone() for name, weight
                      in getattr(trainer, network).named_parameters()}
            for network in ("generator", "discriminator")}


def _gradients(network: nn.Module) -> list[Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in network.parameters()]


def _gradients_changed(before: list[Tensor | None], network: nn.Module) -> bool:
    """True when a backward added to the network's gradients (setting them to None does not)."""
    return any(p.grad is not None and (old is None or not torch.equal(old, p.grad))
               for old, p in zip(before, network.parameters(), strict=True))


def _module_step(module: Trainer, batch: dict[str, Tensor], number: int) -> _ModuleStep:
    before = _weights(module)
    phase, target = batch["input"], batch["target"]
    torch.manual_seed(number)  # the same dropout masks in every generator of this step
    fake = module.generator(phase)
    numbers, real_features = module.discriminator_step(phase, target, fake)
    numbers |= module.generator_step(phase, target, fake, real_features)
    return _ModuleStep(before, _weights(module),
                       {tag: float(value) for tag, value in numbers.items()
                        if tag.startswith("loss/")}, real_features)


def _check_gan_step_setting(discriminator_step: Callable, generator_step: Callable,
                            batches: list[dict[str, Tensor]], description: str,
                            make_trainer: Callable[[], Trainer]) -> None:
    module, for_d, for_g = make_trainer(), make_trainer(), make_trainer()
    options = gan_step_options(module)
    for number, batch in enumerate(batches, start=1):
        where = f"at step {number}, with {description}"
        # each step starts from the module's weights (its one D pass of real and fake together
        # against two leaves rounding differences that a second step would grow); gradients
        # are kept, so a missing zero_grad shows at step 2
        for trainer in (for_d, for_g):
            for network in ("generator", "discriminator"):
                getattr(trainer, network).load_state_dict(getattr(module, network).state_dict())
        reference = _module_step(module, batch, number)
        _try_discriminator_step(discriminator_step, for_d, batch, number, reference, where,
                                make_trainer)
        _try_generator_step(generator_step, for_g, batch, number, reference, options, where,
                            make_trainer)


# the discriminator's half ---------------------------------------------------------------------


def _try_discriminator_step(discriminator_step: Callable, trainer: Trainer, batch: dict,
                            number: int, module: _ModuleStep, where: str,
                            make_trainer: Callable[[], Trainer]) -> None:
    """Your discriminator_step, then the Trainer's generator_step, against the module."""
    phase, target = batch["input"], batch["target"]
    G, D = trainer.generator, trainer.discriminator
    torch.manual_seed(number)
    fake = G(phase)
    into_G = _gradients(G)
    result = _call("Task 1.6", discriminator_step, D, trainer.optimizer_D, phase, target, fake,
                   role="discriminator_step")
    at = f"Task 1.6: {where}, your discriminator_step"
    if not (isinstance(result, tuple | list) and len(result) == 2
            and isinstance(result[0], dict)):
        _fail(f"{at} returns a {type(result).__name__}; return the pair ({{'loss/D_real': ..., "
              "'loss/D_fake': ...}, real_features)")
    numbers, real_features = result
    _compare_numbers(numbers, {tag: module.numbers[tag] for tag in logs.DISCRIMINATOR_TAGS},
                     {}, at)
    if _gradients_changed(into_G, G):
        _fail(f"{at} sent gradients into G: score the pair (phase, fake.detach()), so that D's "
              "loss trains D alone")
    if not all(p.requires_grad for p in D.parameters()):
        _fail(f"{at} leaves D frozen: it must end with D trainable")
    _compare_real_features(real_features, module.real_features, at)
    _compare_network(D, module.after["discriminator"], module.before["discriminator"], at, "D",
                     lambda: _discriminator_update_mistake(D, module.before, fake, batch,
                                                           make_trainer))
    trainer.generator_step(phase, target, fake, real_features)  # the other half: the module's


def _compare_real_features(yours: Any, right: Predictions, at: str) -> None:
    """D's features of the real pair, per scale and layer, detached, before D's update."""
    shape = [len(scale) for scale in right]
    if not (isinstance(yours, list | tuple)
            and [len(s) if isinstance(s, list | tuple) else -1 for s in yours] == shape
            and all(isinstance(f, Tensor) and f.shape == r.shape
                    for s, rs in zip(yours, right, strict=True)
                    for f, r in zip(s, rs, strict=True))):
        _fail(f"{at} returns real features that are not D's output for the real pair (a list "
              f"of {len(shape)} scales, each a list of {shape[0]} tensors): return D(real "
              "pair) as D gave it, each feature detached")
    for scale, (mine, theirs) in enumerate(zip(yours, right, strict=True)):
        for layer, (f, r) in enumerate(zip(mine, theirs, strict=True)):
            if f.requires_grad:
                _fail(f"{at} returns real features that still carry D's graph: return "
                      "[[feature.detach() for feature in scale] for scale in pred_real]")
            if float((f - r).abs().max()) > 1e-4 * max(1.0, float(r.abs().max())):
                _fail(f"{at} returns real features that differ from D's output for (phase, "
                      f"target) at scale {scale}, layer {layer}: keep the features of the "
                      "real pair from the pass that D's loss used, before optimizer_D.step()")


def _discriminator_update_mistake(D: nn.Module, before: dict, fake: Tensor, batch: dict,
                                  make_trainer: Callable[[], Trainer]) -> str:
    """What D's update (SGD: -lr times the gradient) is made of: fitted by least squares to the
    gradients of D's two terms at the step's starting weights."""
    reference = make_trainer()
    _load(reference.discriminator, before["discriminator"])
    real, fake_features = reference.discriminate(batch["input"], batch["target"],
                                                 fake.detach())
    _, loss_real, loss_fake = reference.objective.discriminator_loss(real, fake_features)
    terms = {logs.D_REAL: loss_real, logs.D_FAKE: loss_fake}
    coefficients, residual = _fit_update(D, before["discriminator"], terms,
                                         reference.optimizer_D, reference.discriminator)
    if coefficients is None:
        return ("D did not move: zero its gradients before D's backward (not between it and "
                "the step), and call optimizer_D.step() after it")
    if residual > 0.05:
        return ("D's update is not this step's loss alone: call optimizer_D.zero_grad() before "
                "D's backward (the gradients of an earlier step add up otherwise)")
    if all(abs(c - 1) < 0.1 for c in coefficients.values()):
        return ("D's update is twice the Trainer's: backward loss_D, the first value "
                "discriminator_loss returns, which is already 0.5 * (real + fake)")
    return ("D's update holds " + ", ".join(f"{c:.2f} x {tag}" for tag, c in coefficients.items())
            + ", the Trainer's 0.5 x each: backward loss_D = 0.5 * (loss_D_real + loss_D_fake) "
            "once, and step optimizer_D once")


# the generator's half ------------------------------------------------------------------------


def _try_generator_step(generator_step: Callable, trainer: Trainer, batch: dict, number: int,
                        module: _ModuleStep, options: dict, where: str,
                        make_trainer: Callable[[], Trainer]) -> None:
    """The Trainer's discriminator_step, then your generator_step, against the module."""
    phase, target = batch["input"], batch["target"]
    G, D = trainer.generator, trainer.discriminator
    torch.manual_seed(number)
    fake = G(phase)
    _, real_features = trainer.discriminator_step(phase, target, fake)  # the module's half
    in_D = _gradients(D)
    mine = _call("Task 1.6", generator_step, D, trainer.optimizer_G, phase, target, fake,
                 real_features, role="generator_step", **options)
    at = f"Task 1.6: {where}, your generator_step"
    if not isinstance(mine, dict):
        _fail(f"{at} returns a {type(mine).__name__}; return a dict of its loss terms by tag, "
              "{'loss/G_GAN': ..., ...}")
    _compare_numbers(mine, {tag: value for tag, value in module.numbers.items()
                            if tag not in logs.DISCRIMINATOR_TAGS}, options, at)
    if not all(p.requires_grad for p in D.parameters()):
        _fail(f"{at} leaves D frozen: make it trainable again (D.requires_grad_(True)) after "
              "G's backward, or D learns nothing from the next step on")
    if _gradients_changed(in_D, D):
        _fail(f"{at} leaves gradients of G's loss in D: freeze D (D.requires_grad_(False)) "
              "before it scores (phase, fake), so that the gradient passes through D to G "
              "and none stays in D")
    _compare_network(G, module.after["generator"], module.before["generator"], at, "G",
                     lambda: _generator_update_mistake(G, module.before, batch, number,
                                                       make_trainer))


def _generator_update_mistake(G: nn.Module, before: dict, batch: dict, number: int,
                              make_trainer: Callable[[], Trainer]) -> str:
    """Which terms G's update holds, and how often: fitted by least squares to each logged
    term's gradient at the step's starting weights, after the Trainer's D step."""
    reference = make_trainer()
    for network in ("generator", "discriminator"):
        _load(getattr(reference, network), before[network])
    phase, target = batch["input"], batch["target"]
    torch.manual_seed(number)
    fake = reference.generator(phase)
    _, real_features = reference.discriminator_step(phase, target, fake)
    with frozen(reference.discriminator):
        fake_features = reference.discriminator(torch.cat([phase, fake], dim=1))
        terms = reference.objective.generator_terms(fake, target, real_features, fake_features)
    coefficients, residual = _fit_update(G, before["generator"], terms, reference.optimizer_G,
                                         reference.generator)
    if coefficients is None:
        return ("G did not move: zero its gradients before G's backward (not between it and "
                "the step), and call optimizer_G.step() after it")
    if residual > 0.05:
        return ("G's update is not this step's loss alone: call optimizer_G.zero_grad() "
                "before G's backward (the gradients of an earlier step add up otherwise), and "
                "step it once")
    wrong = {tag: c for tag, c in coefficients.items() if abs(c - 1) > 0.1}
    left_out = [tag for tag, c in wrong.items() if abs(c) < 0.1]
    if {logs.G_GAN, logs.G_GAN_FEAT} <= set(left_out):
        return ("no gradient of D's scores reaches G: D must score (phase, fake) itself, not "
                "fake.detach() and not under torch.no_grad(); D.requires_grad_(False) is "
                "what keeps D out")
    if left_out:
        return (f"G's backward leaves out {', '.join(left_out)}: backward the sum of every "
                "term you return (the numbers you log must be what G learns from)")
    return ("G's update holds " + ", ".join(f"{c:.2f} x {tag}" for tag, c in wrong.items())
            + ": backward each term once (or their sum once), and step optimizer_G once")


# shared by both halves -----------------------------------------------------------------------


def _load(network: nn.Module, weights: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for name, weight in network.named_parameters():
            weight.copy_(weights[name])


def _fit_update(network: nn.Module, before: dict[str, Tensor], terms: dict[str, Tensor],
                optimizer: Any, reference: nn.Module
                ) -> tuple[dict[str, float] | None, float]:
    """(coefficient of each term, relative residual) of the least-squares fit of the network's
    update, (before - after) / lr, to the terms' gradients; (None, 0) when it did not move."""
    learning_rate = optimizer.param_groups[0]["lr"]
    parameters = list(reference.parameters())
    columns = []
    for term in terms.values():
        gradients = torch.autograd.grad(term, parameters, retain_graph=True, allow_unused=True)
        columns.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                  for g, p in zip(gradients, parameters, strict=True)]))
    basis = torch.stack(columns, dim=1).double()
    update = torch.cat([(before[name] - weight.detach()).reshape(-1) / learning_rate
                        for name, weight in network.named_parameters()]).double()
    if float(update.abs().max()) == 0:
        return None, 0.0
    solution = torch.linalg.lstsq(basis, update[:, None]).solution[:, 0]
    residual = float((basis @ solution - update).norm() / update.norm())
    return {tag: float(c) for tag, c in zip(terms, solution, strict=True)}, residual


def _compare_network(network: nn.Module, right: dict[str, Tensor], before: dict[str, Tensor],
                     at: str, letter: str, mistake: Callable[[], str]) -> None:
    """The network's weights after the step against the module's, within 1 % of the update."""
    update = max(float((right[name] - before[name]).abs().max()) for name in right)
    for name, weight in network.named_parameters():
        difference = float((weight.detach() - right[name]).abs().max())
        if difference > 0.01 * update:
            _fail(f"{at} leaves {letter}'s {name} {difference:.2e} away from the Trainer's (the "
                  f"largest update is {update:.2e}): {mistake()}")


def _compare_numbers(mine: dict, theirs: dict[str, float], options: dict, at: str) -> None:
    """The returned numbers: every logged term of this half, as floats, equal to the
    Trainer's."""
    hints = {
        logs.D_REAL: "discriminator_loss(D's output for the real pair, D's output for the fake "
                     "pair) returns (loss_D, loss_D_real, loss_D_fake), in that order",
        logs.D_FAKE: "D scores (phase, fake.detach()) as fake; discriminator_loss(real, fake) "
                     "returns (loss_D, loss_D_real, loss_D_fake), in that order",
        logs.G_GAN: "gan_loss(D's output for (phase, fake), True): D, already updated, scores "
                    "the fake, which G wants called real",
        logs.G_GAN_FEAT: "feature_matching_loss(real_features, D's output for (phase, fake)), "
                         "times lambda_feat",
        logs.G_L1: "lambda_l1 * l1_loss(to_stain_units(fake), to_stain_units(target), "
                   "l1_blur_sigma): L1 of the two stains in their own units (fake and target "
                   "as they are when to_stain_units is None) after the same Gaussian blur",
        logs.G_VGG: "lambda_vgg * vgg(fake, target), only when vgg is given",
    }
    factors = {logs.G_GAN_FEAT: "lambda_feat", logs.G_L1: "lambda_l1", logs.G_VGG: "lambda_vgg"}
    missing = [tag for tag in theirs if tag not in mine]
    if missing:
        _fail(f"{at} returns no {', '.join(missing)}: "
              + "; ".join(hints[tag] for tag in missing if tag in hints))
    extra = [tag for tag in mine if tag not in theirs]
    if extra:
        _fail(f"{at} returns {', '.join(map(str, extra))}, which the Trainer does not log "
              f"here; return exactly {', '.join(theirs)}")
    for tag, right in theirs.items():
        value = mine[tag]
        if not isinstance(value, float):
            _fail(f"{at} returns {tag} as a {type(value).__name__}, not a float: return plain "
                  "numbers, loss.item(), so that no graph is kept alive")
        if abs(value - right) <= 1e-5 * max(1.0, abs(right)):
            continue
        weight = options.get(factors.get(tag, ""), 1)
        if weight not in (0, 1) and _close(value * weight, right, 1e-4):
            _fail(f"{at} gives {tag} = {value:.5f}, the Trainer {right:.5f}: multiply it by "
                  f"{factors[tag]} (= {weight:g} here)")
        _fail(f"{at} gives {tag} = {value:.5f}, the Trainer {right:.5f}: "
              f"{hints.get(tag, 'compute it as the Trainer does')}")


# --- Task 3.1: F1 from an IoU matrix ---------------------------------------------------------


def _label_images(true_boxes: Sequence[tuple], predicted_boxes: Sequence[tuple]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """True and predicted label images of rectangular nuclei, (row start, stop, column start,
    stop) each, labelled 1, 2, ... in order: IoUs exact to the pixel."""
    images = []
    for boxes in (true_boxes, predicted_boxes):
        labels = np.zeros((40, 80), dtype=np.int32)
        for label, (r0, r1, c0, c1) in enumerate(boxes, start=1):
            labels[r0:r1, c0:c1] = label
        images.append(labels)
    return images[0], images[1]


F1_CASES = {
    "label images with IoUs exactly 1, 0.75 and 0.5, and one invented nucleus": (
        [(0, 10, 0, 10), (0, 20, 20, 30), (0, 10, 40, 50)],
        [(0, 10, 0, 10), (0, 15, 20, 30), (0, 5, 40, 50), (30, 38, 60, 68)]),
    "a nucleus cut in two halves (IoU exactly 0.5 with each)": (
        [(0, 10, 0, 10)], [(0, 10, 0, 5), (0, 10, 5, 10)]),
    "a nucleus cut in two halves, two nuclei merged into one (IoU exactly 0.5 each), and a "
    "nucleus found whole": (
        [(0, 10, 0, 10), (20, 30, 0, 5), (20, 30, 5, 10), (0, 10, 20, 30)],
        [(0, 10, 0, 5), (0, 10, 5, 10), (20, 30, 0, 10), (0, 10, 20, 30)]),
    "more predicted than true nuclei (IoUs 0.9 and 0.6)": (
        [(0, 10, 0, 10), (20, 30, 0, 10)],
        [(0, 10, 0, 9), (20, 30, 0, 6), (0, 8, 40, 48), (20, 28, 40, 48)]),
    "no predicted nuclei": ([(0, 10, 0, 10), (20, 30, 0, 10)], []),
}
"""Made-up cases by description: (true boxes, predicted boxes) for `_label_images`."""


def _count_every_pair(iou: np.ndarray, threshold: float) -> float:
    """The F1 of counting every pair above the threshold as a true positive: wrong when a
    nucleus cut in halves (or two merged) makes two pairs at IoU 0.5 with one nucleus."""
    tp = int((iou >= threshold).sum())
    fp, fn = iou.shape[1] - tp, iou.shape[0] - tp
    return 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn > 0 else 0.0


def check_f1_at_iou(f1_at_iou: Callable, extra_cases: dict[str, tuple] | None = None) -> str:
    """Made-up label images with IoUs exactly at the thresholds (ties) and nuclei cut in halves
    or merged, then any (true labels, predicted labels) given, at IoU 0.5, 0.75 and 0.9, against
    the module's one-to-one matching (`metrics.match_instances`)."""
    cases = {case: _label_images(*boxes) for case, boxes in F1_CASES.items()}
    cases |= extra_cases or {}
    checked = 0
    for case, (true_labels, predicted_labels) in cases.items():
        iou = iou_matrix(true_labels, predicted_labels)[2].toarray()
        for threshold in (0.5, 0.75, 0.9):
            right = match_instances(true_labels, predicted_labels, [threshold])["f1"][0]
            strict = match_instances(true_labels, predicted_labels,
                                     [float(np.nextafter(threshold, 1))])["f1"][0]
            _check_f1_case(f1_at_iou, case, iou, threshold, right, strict)
            checked += 1
    return (f"Task 3.1 passed: your F1 agrees with the module's one-to-one matching in {checked} "
            "cases, ties at the threshold and nuclei cut in halves included")


def _one_number(value: Any) -> float | None:
    """A number, a 0-d or one-element array or tensor, as a float; None for anything else."""
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, bool) or not isinstance(value, int | float | np.number | np.ndarray):
        return None
    array = np.asarray(value)
    if array.size != 1 or not np.issubdtype(array.dtype, np.number):
        return None
    return float(array.ravel()[0])


def _check_f1_case(f1_at_iou: Callable, case: str, iou: np.ndarray, threshold: float,
                   right: float, strict: float) -> None:
    """One IoU matrix at one threshold; `strict` is the F1 of IoU > threshold."""
    yours = _call("Task 3.1", f1_at_iou, iou.copy(), threshold)
    at = f"Task 3.1: for {case} at IoU {threshold}"
    value = _one_number(yours)
    if value is None:
        _fail(f"{at} your f1_at_iou returns {yours!r}; return one number, "
              "2 TP / (2 TP + FP + FN)")
    if math.isclose(value, right, abs_tol=1e-6):
        return
    one_to_one = ("match one-to-one: a true nucleus takes at most one predicted nucleus and "
                  "a predicted nucleus at most one true one, so a nucleus cut in two halves "
                  "gives one true positive and one false positive")
    if value > 1 + 1e-9:
        _fail(f"{at} your F1 is {value:.3f}, above 1, which F1 can never be; it should be "
              f"{right:.3f}: a nucleus was counted in two matches; {one_to_one}")
    if math.isclose(value, _count_every_pair(iou, threshold), abs_tol=1e-6):
        _fail(f"{at} your F1 is {value:.3f}, it should be {right:.3f}: you count every pair "
              f"with IoU >= threshold; {one_to_one}")
    if math.isclose(value, strict, abs_tol=1e-6):
        _fail(f"{at} your F1 is {value:.3f}, it should be {right:.3f}: a pair whose IoU equals "
              "the threshold is a match; use iou >= threshold, not >")
    _fail(f"{at} your F1 is {value:.3f}, it should be {right:.3f}: a true positive is a "
          "matched pair (IoU >= threshold, one-to-one), every other predicted nucleus is a "
          "false positive and every other true nucleus a false negative")


# --- Task 4.1: a window around a nucleus ----------------------------------------------------

CROP_CASES = {
    ((100, 100), 64, (256, 256)): ((68, 132), (68, 132)),
    ((5, 250), 64, (256, 256)): ((0, 64), (192, 256)),
    ((130, 40), 32, (140, 300)): ((108, 140), (24, 56)),
    ((0, 0), 16, (16, 40)): ((0, 16), (0, 16)),
    ((60, 33), 15, (64, 64)): ((49, 64), (26, 41)),
    ((-20, 300), 32, (256, 256)): ((0, 32), (224, 256)),
    ((400, 128), 64, (256, 256)): ((192, 256), (96, 160)),
}
"""(centre, size, shape) -> ((row start, stop), (column start, stop)), worked out by hand; the
last two centres lie outside the image."""


def check_crop_around(crop_around: Callable) -> str:
    """Windows inside the image, at its edges and corners, around centres outside it, of even
    and odd sizes. Whatever your function returns, the check answers with its own message."""
    for (centre, size, shape), right in CROP_CASES.items():
        window = _call("Task 4.1", crop_around, centre, size, shape)
        bounds = _window_bounds(window, f"Task 4.1: crop_around({centre}, {size}, {shape})")
        _check_window(bounds, right, centre, size, shape)
    return ("Task 4.1 passed: your windows are centred, of the size asked, and stay inside the "
            "image, even around centres outside it")


def _window_bounds(window: Any, call: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """((row start, stop), (column start, stop)) of a pair of slices of whole numbers."""
    if not (isinstance(window, tuple | list) and len(window) == 2):
        _fail(f"{call} returns {window!r}; return a pair of slices (rows, columns)")
    if not all(isinstance(part, slice) for part in window):
        _fail(f"{call} returns {tuple(window)!r}: return slices, (slice(row_start, row_start + "
              "size), slice(column_start, column_start + size)), not (start, stop) pairs, so "
              "that image[window] crops")
    for axis, part in zip(("rows", "columns"), window, strict=True):
        whole = all(isinstance(end, int | np.integer) and not isinstance(end, bool)
                    for end in (part.start, part.stop))
        if not whole:
            _fail(f"{call} gives {axis} {part!r}: a slice's start and stop must be whole "
                  "numbers (int), not floats or None: use size // 2, not size / 2, and int() "
                  "for a centre that is not an int")
        if part.step not in (None, 1):
            _fail(f"{call} gives {axis} {part!r}: leave out the step, every pixel is kept")
    return tuple((int(part.start), int(part.stop)) for part in window)


def _check_window(bounds: tuple, right: tuple, centre: tuple, size: int, shape: tuple) -> None:
    call = f"Task 4.1: crop_around({centre}, {size}, {shape})"
    mine = ", ".join(f"{axis} {start}:{stop}" for axis, (start, stop)
                     in zip(("rows", "columns"), bounds, strict=True))
    should = ", ".join(f"{axis} {start}:{stop}" for axis, (start, stop)
                       in zip(("rows", "columns"), right, strict=True))
    if any(stop - start != size for start, stop in bounds):
        _fail(f"{call} gives {mine}, a window of {' x '.join(str(b - a) for a, b in bounds)} "
              f"pixels; it should be {size} x {size} ({should}): stop = start + size")
    outside = any(start < 0 or stop > length
                  for (start, stop), length in zip(bounds, shape, strict=True))
    if outside:
        _fail(f"{call} gives {mine}, which reaches outside the {shape[0]} x {shape[1]} image; "
              f"it should be {should}: clamp each start to [0, length - size], so that the "
              "window moves inside the image even when the centre lies outside it")
    if bounds != right:
        _fail(f"{call} gives {mine}; it should be {should}: start at centre - size // 2, then "
              "move the window inside the image: clamp the start to [0, length - size]")


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
