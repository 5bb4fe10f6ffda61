# %% [markdown]
# # Image translation, part 2: virtual staining with a conditional GAN
#
# A phase image shows where cells are; a fluorescence stain shows what they are made of, but
# costs dyes, light that harms living cells, and imaging time. *Virtual staining* predicts the
# stain from the label-free image with a neural network.
#
# In part 1 of this course a regression model (a U-Net trained with a pixel-wise loss) did this.
# Where the input is ambiguous it predicts the *average* of the plausible stains: a blur. Here
# you train a **conditional GAN**, Pix2PixHD (Wang et al., 2018): a generator proposes a stain, a
# discriminator judges whether a (phase, stain) pair looks real, and the two train against each
# other. The GAN draws *one plausible* stain: sharp, but possibly invented.
#
# You will
# 0. choose a profile that fits your machine,
# 1. build both networks, write the GAN's loss and training step, and train,
# 2. read a pre-trained GAN's training logs,
# 3. evaluate it by pixels and by segmenting nuclei,
# 4. compare it with a regression model, and degrade their input until they break,
# 5. (bonus) sample many stains with MC-dropout and ask where the model is unsure.
#
# After a restart, run Part 0 and then any part: each part's first code cell ("start here")
# loads what it needs.
#
# <div class="alert alert-info">
# Blue boxes are tasks: replace the <code>raise NotImplementedError</code> in the cell below
# the box, then run the check cell after it. Yellow boxes are questions to discuss with your
# neighbours. Green boxes are checkpoints.
# </div>

# %% [markdown]
# ## Part 0: setup
#
# *About 10 s on a 2-core CPU.*
#
# **You will learn** which device and problem size suit your machine. Choose a profile with the
# environment variable `PIX2PIXHD_PROFILE`: `course` is the real thing on a GPU; `quick` shrinks
# crops, model and epochs to run every cell on a laptop CPU in minutes; `pretrained` is
# the shipped GAN's recipe (the quick model trained for 15 epochs instead of 2, its L1 term's
# blur 1 pixel instead of 3). Check in the printout that the data and the three models are
# there.

# %%
import itertools
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pix2pixhd import config as configs
from pix2pixhd import logs
from pix2pixhd import (  # pix2pixhd/__init__.py says which module each name comes from
    COURSE_INSTANCE_METRICS, ERROR_CAUSES, SHIPPED, SPECTRAL_BANDS, CheckpointError, Course,
    DatasetNormaliser, Trainer, auroc, band_power_ratio, check_crop_around, check_f1_at_iou,
    check_feature_matching, check_gan_step, check_stain_normalisation, check_std_and_error_maps,
    check_trust_threshold, choose_run, compare_models, count_parameters, discriminator_loss,
    error_causes, estimate_run_seconds, evaluate_predictions, f1_per_threshold,
    feature_matching_loss, find_predictions, gan_loss, image_path, l1_loss, list_fovs,
    load_checkpoint, load_predictor, make_discriminator, make_generator, make_loaders,
    paired_files, perturb_phase, plot_dataset_examples, plot_f1_vs_threshold, plot_instance_errors,
    plot_intensity_histograms, plot_logged_images, plot_mc_samples, plot_metric_distributions,
    plot_nuclei_trust, plot_power_spectra, plot_prediction_grid, plot_predictions,
    plot_reliability, plot_robustness, plot_segmentation_overlay, plot_sparsification,
    plot_stain_maps, plot_training_crops, plot_training_curves, plot_uncertainty_maps,
    predict_folder, predict_image, predict_with_tta, provenance_mismatch, radial_spectra,
    read_dataset_json, read_image, read_images, read_mask, read_nuclei_trust, read_scalars,
    reliability_bins, robustness_table, sample_folder, sample_stains, segment_nuclei,
    show_tensorboard, sparsification_curve, spearman_uncertainty_error, uncertainty_maps,
    write_evaluation, write_image,
)

course = Course.from_environment()  # profile, device, folders; checks the data set
print(course.describe())
DEVICE, PROFILE, SIZES, config = course.device, course.profile, course.sizes, course.config
DATA, RESULTS, RUNS, SOURCE = course.data, course.results, course.runs, course.source
MY_RUN = RUNS / "my_gan"  # the run you train in Part 1 (1.7 may give it another name)
PRETRAINED, TRAINED_ON = course.pretrained, course.trained_on  # the models of Parts 3-5
save_figure, training_batch = course.save_figure, course.training_batch
read_test_fov, predict_test_split = course.read_test_fov, course.predict_test_split

# %% [markdown]
# ## Part 1: data, model and training
#
# *About 3 minutes on a 2-core CPU, most of it the training of 1.7.*
#
# **You will learn** what the images look like, how they are normalised, how Pix2PixHD's
# generator and discriminator are built, which losses train them, how one GAN step updates
# both networks, and what a few minutes of training produce.
#
# ### 1.1 The data
#
# Each field of view (FOV) has a quantitative phase image (input), a Hoechst nuclei image and a
# CellMask membrane image (targets), and nuclei instance masks for testing. Without the real
# A549 images, `data/` holds a built-in synthetic dataset that simulates the microscope
# (`pix2pixhd/synthetic.py`).

# %%
# start here: the dataset's description and a few training images
dataset_info = read_dataset_json(DATA)
print("source:", dataset_info["source"], "| fields of view per split:", dataset_info["counts"])
save_figure(plot_dataset_examples(DATA, split="train", n=3), "data_examples")

# %%
train_fovs = list_fovs(DATA, "train")[:8]
pixels = {channel: np.concatenate([read_image(image_path(DATA, "train", channel, fov)).ravel()
                                   for fov in train_fovs]) for channel in ("phase", "nuclei")}
save_figure(plot_intensity_histograms(pixels, dataset_info["normalisation"]),
            "intensity_histograms")

# %% [markdown]
# <div class="alert alert-warning">
# Questions: in which cells can you guess where the nucleus is from the phase image alone? Is
# the phase contrast of nuclei the same in every cell? What does that mean for a model that must
# predict the Hoechst image from phase? Most Hoechst pixels are dark background: what does
# the long bright tail of the histogram hold?
# </div>

# %% [markdown] tags=["solution"]
# **Answers.** Nuclei are easiest to spot in flat, well-spread cells, where the nucleus is the
# thickest part and its nucleoli add dots of extra phase; in thick cells the whole cell is
# bright in phase and the nucleus hardly stands out. A dividing cell is rounded up and thick,
# but its condensed chromatin is denser than anything else in the cell and shows as a short
# bar, which tells a model which way to draw it. The contrast varies from cell to
# cell (thickness and refractive index vary), so for some cells the phase image does not
# decide where the nucleus ends: the model has to guess, and a regression model will blur
# there. The bright tail of the Hoechst histogram is the nuclei themselves, brightest where
# DNA is condensed (dividing cells) or doubled; the peak near the left is background.

# %% [markdown]
# ### 1.2 Normalisation
#
# We normalise with statistics of the *training split* (in `data/dataset.json`), never with
# constants or test images. The phase image is centred on its median and divided by its
# interquartile range (IQR), statistics that ignore a few extreme pixels. The stain is the
# generator's output, which ends in a `tanh`, so it must live in [-1, 1]: its 0.5th percentile
# `p_low` maps to -1 and its 99.5th percentile `p_high` to +1, linearly. The `tanh` then cannot
# draw anything brighter than `p_high`, yet the pixels above it are whole bright nuclei
# (dividing cells, doubled DNA), up to ten times brighter.
#
# <div class="alert alert-info">
# Task 1.2: write the stain normalisation and its inverse (which you need to measure errors in
# the stain's own units).
# </div>

# %% tags=["task"]
def normalise_stain(image, p_low, p_high):
    """Map [p_low, p_high] linearly onto [-1, 1]."""
    raise NotImplementedError("Task 1.2: map p_low to -1 and p_high to +1, linearly")


def denormalise_stain(normalised, p_low, p_high):
    """The inverse of normalise_stain."""
    raise NotImplementedError("Task 1.2: map -1 back to p_low and +1 back to p_high")


# %% tags=["solution"]
def normalise_stain(image, p_low, p_high):
    """Map [p_low, p_high] linearly onto [-1, 1]."""
    return 2 * (image - p_low) / (p_high - p_low) - 1


def denormalise_stain(normalised, p_low, p_high):
    """The inverse of normalise_stain."""
    return (normalised + 1) / 2 * (p_high - p_low) + p_low


# %%
# check Task 1.2 at this data set's percentiles and at made-up ones, inside and outside the range
stats = read_dataset_json(DATA)["normalisation"]["nuclei"]
p_low, p_high = stats["p_low"], stats["p_high"]
print(check_stain_normalisation(normalise_stain, denormalise_stain, p_low, p_high))

# %%
# what the linear map cannot reach (this cell needs no task: skip Task 1.2 and it still runs)
p_high = read_dataset_json(DATA)["normalisation"]["nuclei"]["p_high"]
train_fovs = list_fovs(DATA, "train")[:8]
nuclei_pixels = np.concatenate([read_image(image_path(DATA, "train", "nuclei", fov)).ravel()
                                for fov in train_fovs])
above = nuclei_pixels > p_high
print(f"{100 * above.mean():.2f} % of the nuclei pixels of {len(train_fovs)} training images lie "
      f"above p_high = {p_high:.0f}, up to {nuclei_pixels.max():.0f} "
      f"({nuclei_pixels.max() / p_high:.1f} x p_high): under this map a tanh cannot reach them")

# %% [markdown]
# The presets, and the shipped models, map stains by asinh instead (`data.stain_map=asinh`):
# $y = -1 + 2\,\mathrm{asinh}((x - p_{low}) / s) / a$ with $s = (p_{high} - p_{low}) / 4$,
# linear near the background and logarithmic above, with $a$ chosen so that the train split's
# 99.999th percentile `p_top` lands at +0.8. On the built-in data no test pixel lies above its
# ceiling. The price: errors near the top shrink, so the GAN's L1 term (1.6) measures them in
# the stain's own units.

# %%
# both maps over the training pixels: nothing above a map's ceiling (+1) can be predicted
stain_maps = {name: DatasetNormaliser.from_dataset(DATA, "phase", ["nuclei"], stain_map=name)
              for name in ("linear", "asinh")}
save_figure(plot_stain_maps(stain_maps, nuclei_pixels), "stain_maps")

# %% [markdown]
# ### 1.3 Loaders: crops and augmentation
#
# Training sees random square crops, phase and stain flipped and rotated alike by a random
# multiple of 90 degrees: a microscope image has no preferred orientation, so these are free
# extra examples. Validation uses a fixed centre crop, comparable between epochs.

# %%
# start here: the loaders of Part 0's config (the profile's crops and batch size)
train_loader, val_loader = make_loaders(config)
batch = next(iter(train_loader))
print({key: tuple(value.shape) for key, value in batch.items() if hasattr(value, "shape")})
print(f"{len(train_loader)} training batches of {config.data.batch_size} per epoch")

save_figure(plot_training_crops(batch["input"], batch["target"]), "training_crops")

# %% [markdown]
# ### 1.4 The generator and the discriminator
#
# ![A conditional GAN: G maps a phase image x to a stain G(x); D scores (x, y) and (x, G(x)) pairs patch by patch](imgs/conditional_gan.svg)
#
# A *conditional* GAN's discriminator sees the phase image and a stain as two channels and
# judges whether the stain belongs to that phase image: a sharp but wrong stain is as easy to
# reject as a blurry one.
#
# **The generator** is coarse-to-fine: a *global generator* G1 (encoder, residual blocks,
# decoder), wrapped for large images by a *local enhancer* G2. Our images need G1 alone
# (`netG="global"`; `model.netG=local` adds G2).
#
# ![Pix2PixHD's coarse-to-fine generator: G1 at half resolution, G2 at full resolution, joined by a sum](imgs/coarse_to_fine_generator.svg)
#
# **The discriminator** is three PatchGANs of the same architecture on the image pair at full,
# half and quarter resolution. Each returns a grid of scores, one per patch: the finest judges
# texture, the coarsest the layout of whole nuclei.

# %%
# start here: the networks of config.model.kind (models.KINDS), and a batch to run them on
generator = make_generator(config)
discriminator = make_discriminator(config)
batch = training_batch()
print(f"generator G1: {count_parameters(generator):,} parameters, "
      f"{config.model.n_downsample_global} downsamplings, {config.model.n_blocks_global} "
      f"residual blocks, dropout p={config.model.dropout_p if config.model.use_dropout else 0}")
print(f"discriminator: {config.model.num_D} scales, {count_parameters(discriminator):,} "
      "parameters")

phase, target = batch["input"], batch["target"]
with torch.no_grad():
    fake = generator(phase)
    features = discriminator(torch.cat([phase, fake], dim=1))
print(f"phase {tuple(phase.shape)} -> virtual stain {tuple(fake.shape)}")
for scale, layers in enumerate(features):
    shapes = ", ".join(str(tuple(f.shape[1:])) for f in layers)
    print(f"D at 1/{2**scale} resolution: {shapes}")

# %% [markdown]
# <div class="alert alert-warning">
# Questions: the last feature of each scale is the grid of patch scores. Why does the
# coarsest scale return the fewest scores, and what does each of them "see"? Why would a
# single score for the whole image be a worse teacher for the generator?
# </div>

# %% [markdown] tags=["solution"]
# **Answers.** Each scale works on a copy of the pair downsampled by 2 more, through the same
# strided layers, so its grid of scores is 2 times coarser in each direction. Each score has a
# receptive field of the same number of pixels *of its input*, which is 2x or 4x larger in the
# original image: the coarsest scores judge whole nuclei and their arrangement, the finest
# judge texture and edges. A single score for the whole image tells the generator only
# "somewhere this looks fake"; a grid says where, so each region of the fake gets its own
# gradient, and many patches per image are many training examples for D.

# %% [markdown]
# ### 1.5 The losses
#
# ![The multi-scale discriminator D1, D2, D3 at full, 1/2 and 1/4 resolution, and feature matching over their features](imgs/multiscale_discriminator.svg)
#
# Pix2PixHD trains with three terms (x: phase, y: real stain, k: discriminator scale):
#
# - **LSGAN, discriminator**: $\frac12 \sum_k \big[(D_k(x,y)-1)^2 + D_k(x,G(x))^2\big]$, each
#   averaged over the patch scores: real pairs should score 1, fake pairs 0.
# - **LSGAN, generator**: $\sum_k (D_k(x,G(x))-1)^2$: the generator wants its fakes scored 1.
# - **Feature matching**, weighted by $\lambda_{feat}$ (10 in the paper, 1 here): the L1 distance
#   between D's intermediate features on the real and on the fake pair, each scale weighted
#   $1/\text{num\_D}$ and each layer $4/(\text{n\_layers\_D}+1)$. The fake must *look the same
#   to D* at every depth, which steadies training.
#
# Least squares, unlike the original GAN's cross-entropy, keeps its gradients when D is confident.
#
# We changed the recipe in three places, each measured (`docs/recipe.md`; Task 1.5's check
# prints this profile's values): the decoder upsamples by nearest-neighbour resizing
# and a 3x3 convolution, as transposed convolutions drew a checkerboard into every nucleus;
# feature matching weighs less, as at weight 10 it blurred texture away; and a fourth term, L1
# between the blurred fake and real stains, keeps each nucleus in place and as bright.
#
# <div class="alert alert-info">
# Task 1.5: write the feature-matching loss. <code>real</code> and <code>fake</code> are lists
# (one per scale) of lists (one per layer) of feature maps; the last entry of each scale is
# the patch scores, which belong to the GAN loss, not to feature matching. The real features
# are targets: no gradient may flow into them.
# </div>

# %% tags=["task"]
def my_feature_matching_loss(real, fake, n_layers_D, num_D):
    """Weighted L1 distance between D's intermediate features on real and fake pairs."""
    raise NotImplementedError(
        "Task 1.5: sum over scales and layers (all but the last of each scale) of "
        "weight * mean |fake - real|, with the real features detached")


# %% tags=["solution"]
def my_feature_matching_loss(real, fake, n_layers_D, num_D):
    """Weighted L1 distance between D's intermediate features on real and fake pairs."""
    loss = 0.0
    layer_weight, scale_weight = 4.0 / (n_layers_D + 1), 1.0 / num_D
    for real_scale, fake_scale in zip(real, fake):
        for real_feature, fake_feature in zip(real_scale[:-1], fake_scale[:-1]):
            distance = (fake_feature - real_feature.detach()).abs().mean()
            loss = loss + scale_weight * layer_weight * distance
    return loss


# %%
# check Task 1.5 against the module's loss, with this profile's discriminator shape and with
# n_layers_D=2 (a layer weight of 4/3), and where the gradient goes
print(check_feature_matching(my_feature_matching_loss, n_layers_D=config.model.n_layers_D,
                             num_D=config.model.num_D))
print(f"profile {PROFILE}: upsample={config.model.upsample}, "
      f"lambda_feat={config.loss.lambda_feat}, lambda_l1={config.loss.lambda_l1} on stains "
      f"blurred by sigma={config.loss.l1_blur_sigma} px in {config.loss.l1_units} units, "
      f"lambda_vgg={config.loss.lambda_vgg}")

# %% [markdown]
# ### 1.6 One training step
#
# A GAN step updates two networks with two losses, in turn. G makes `fake = G(phase)`, then:
#
# 1. **Discriminator step.** D scores the real pair and the pair with `fake.detach()`:
#    detached, the fake is a fixed input, so D's loss trains D alone (otherwise it would push
#    G towards *worse* fakes). Update D. Keep D's features of the real pair, detached: they
#    are G's feature-matching target.
# 2. **Generator step.** Freeze D (`D.requires_grad_(False)`) and score `(phase, fake)` with
#    the *updated* D: the gradient flows through D into G, and none stays in D. G's loss is
#    the sum of this profile's terms, weighted as in 1.5:
#    - `loss/G_GAN`: `gan_loss(D's scores of the fake pair, True)`;
#    - `loss/G_GAN_Feat`: $\lambda_{feat}$ times feature matching against the kept features;
#    - `loss/G_L1` (when $\lambda_{L1} > 0$): $\lambda_{L1}$ times
#      `l1_loss(to_stain_units(fake), to_stain_units(target), l1_blur_sigma)`, in the stain's
#      own units (when `to_stain_units` is None, on the normalised stains). Under the asinh
#      map a nucleus drawn 1.6 times too bright is only about 0.2 normalised units off, but
#      thousands of a.u.;
#    - `loss/G_VGG` (with a VGG network): $\lambda_{VGG}$ times `vgg(fake, target)`.
#
#    Backward their sum once, update G, make D trainable again, and return each term as a
#    plain number (`.item()`) for the Trainer to log.
#
# <div class="alert alert-info">
# Task 1.6: write the two steps with the functions of <code>pix2pixhd.losses</code> imported in
# Part 0 (<code>discriminator_loss</code>, <code>gan_loss</code>,
# <code>feature_matching_loss</code>, <code>l1_loss</code>). The check pairs each of your steps
# with the Trainer's other half, compares them with <code>Trainer.train_step</code> from the
# same weights, and names the function and the line that differ.
# </div>

# %% tags=["task"]
def discriminator_step(D, optimizer_D, phase, target, fake):
    """Update D once on (phase, target) as real and (phase, fake) as fake, (B, 1, H, W) each.

    Returns ({"loss/D_real", "loss/D_fake"} as floats, D's features of the real pair, detached).
    """
    raise NotImplementedError("Task 1.6: D on the real pair and on fake.detach(); update D")


def generator_step(D, optimizer_G, phase, target, fake, real_features, *, lambda_feat,
                   lambda_l1, l1_blur_sigma, n_layers_D, num_D, to_stain_units=None, vgg=None,
                   lambda_vgg=0.0):
    """Update G once through D, frozen, with the sum of its weighted loss terms.

    Returns the terms as floats by tag: "loss/G_GAN", "loss/G_GAN_Feat" (times lambda_feat),
    "loss/G_L1" (times lambda_l1, if lambda_l1 > 0), "loss/G_VGG" (times lambda_vgg, if vgg).
    """
    raise NotImplementedError(
        "Task 1.6: freeze D, D on (phase, fake), G's weighted terms; backward their sum, "
        "update G; unfreeze D")


# %% tags=["solution"]
def discriminator_step(D, optimizer_D, phase, target, fake):
    """Update D once on (phase, target) as real and (phase, fake) as fake, (B, 1, H, W) each.

    Returns ({"loss/D_real", "loss/D_fake"} as floats, D's features of the real pair, detached).
    """
    pred_real = D(torch.cat([phase, target], dim=1))
    pred_fake = D(torch.cat([phase, fake.detach()], dim=1))  # detached: trains D only
    loss_D, loss_D_real, loss_D_fake = discriminator_loss(pred_real, pred_fake)
    optimizer_D.zero_grad(set_to_none=True)
    loss_D.backward()
    optimizer_D.step()
    real_features = [[feature.detach() for feature in scale] for scale in pred_real]
    return {"loss/D_real": loss_D_real.item(), "loss/D_fake": loss_D_fake.item()}, real_features


def generator_step(D, optimizer_G, phase, target, fake, real_features, *, lambda_feat,
                   lambda_l1, l1_blur_sigma, n_layers_D, num_D, to_stain_units=None, vgg=None,
                   lambda_vgg=0.0):
    """Update G once through D, frozen, with the sum of its weighted loss terms.

    Returns the terms as floats by tag: "loss/G_GAN", "loss/G_GAN_Feat" (times lambda_feat),
    "loss/G_L1" (times lambda_l1, if lambda_l1 > 0), "loss/G_VGG" (times lambda_vgg, if vgg).
    """
    D.requires_grad_(False)  # gradients pass through D into G; none stay in D
    pred_fake = D(torch.cat([phase, fake], dim=1))
    terms = {"loss/G_GAN": gan_loss(pred_fake, True),
             "loss/G_GAN_Feat": lambda_feat * feature_matching_loss(
                 real_features, pred_fake, n_layers_D=n_layers_D, num_D=num_D)}
    if lambda_l1 > 0:
        units = to_stain_units or (lambda stain: stain)  # None: the normalised stains as they are
        terms["loss/G_L1"] = lambda_l1 * l1_loss(units(fake), units(target), l1_blur_sigma)
    if vgg is not None:
        terms["loss/G_VGG"] = lambda_vgg * vgg(fake, target)
    optimizer_G.zero_grad(set_to_none=True)
    sum(terms.values()).backward()
    optimizer_G.step()
    D.requires_grad_(True)
    return {tag: term.item() for tag, term in terms.items()}


# %%
# check Task 1.6 against Trainer.train_step on a training batch: this profile's weights, then
# every factor other than 1
print(check_gan_step(discriminator_step, generator_step, config, training_batch()))

# %% [markdown]
# ### 1.7 Train for a while
#
# The `Trainer` (`pix2pixhd/train.py`) computes the same terms as your step, only faster: one D
# pass for the real and fake pairs (instance norm keeps the samples apart), mixed precision on a
# GPU, several GPUs under `torchrun`. Adam with lr 2e-4 and $\beta_1=0.5$, constant and then
# linearly decayed over the last third of the epochs, as in the paper.
#
# **Where your GAN starts.** A few minutes of GAN training from random weights learn where
# nuclei are, not what they look like: such a GAN ends up blurrier than a regression model.
# So on the built-in data (`quick` and `pretrained` profiles) your G starts from the weights
# of the shipped regression model of Part 4 (`train.init_generator`): it already knows where
# the nuclei are, and the adversarial and feature-matching terms only have to add what its
# L1 loss averaged away. Super-resolution GANs are trained this way. D starts from the shipped
# GAN's discriminator when its checkpoint keeps one (`train.init_discriminator`): a critic that
# already knows the real chromatin pushes G towards it from the first step; otherwise D
# starts from scratch. The `course` profile's larger networks, and a membrane target, start
# from random weights.
#
# The cell times a few steps, prints how long the run will take, then trains (`quick`: 2
# epochs of 200 steps, one 256-pixel crop each, about 3 minutes on an idle 2-core CPU). If the
# run exists, it asks whether to resume it or start a new one. In Jupyter it opens TensorBoard
# below; elsewhere run `tensorboard --logdir runs`.
#
# **Another target.** For a virtual *membrane* stain (CellMask), add
# `config = configs.apply_overrides(config, ["data.target_channels=[membrane]"])` after Part 0
# and run 1.3 to 1.7 again under a new run name. A thin membrane loses more to blur. Parts 3-5
# segment nuclei, so only their pixel metrics and spectra apply to a membrane model.

# %%
# start here: train your GAN in MY_RUN (runs/my_gan), after saying how long it will take
epochs = SIZES["epochs"]
MY_RUN, resume = choose_run(MY_RUN)  # never overwrites a run
STARTS = course.part1_start(config)  # the shipped models' G and D where they fit, else []
print("starting from:", "; ".join(STARTS) or "random weights")
train_config = configs.apply_overrides(config, [
    f"train.name={MY_RUN.name}", f"train.checkpoints_dir={MY_RUN.parent}",
    f"train.niter={epochs - max(1, epochs // 3)}", f"train.niter_decay={max(1, epochs // 3)}",
    *STARTS])
try:
    trainer = Trainer(train_config, resume=resume)
except CheckpointError as error:  # a run of another architecture: start a new one beside it
    MY_RUN = next(RUNS / f"{MY_RUN.name}_{n}" for n in range(2, 1000)
                  if not (RUNS / f"{MY_RUN.name}_{n}").exists())
    print(f"cannot resume ({error}); training a new run in {MY_RUN} instead")
    trainer = Trainer(configs.apply_overrides(train_config, [f"train.name={MY_RUN.name}"]))
show_tensorboard(RUNS)
if trainer.epoch < train_config.epochs:
    estimate = estimate_run_seconds(trainer)
    print(f"{estimate['seconds_per_step']:.2f} s per step x {estimate['steps_per_epoch']} steps "
          f"x {estimate['epochs']} epochs, plus validation: about "
          f"{estimate['total_seconds'] / 60:.1f} min here")
    trainer.fit()
print(f"{MY_RUN}: {trainer.epoch} epochs ({trainer.step} steps) done")

# %%
# your run, read from its folder (this works after a restart too, once 1.7 has trained)
my_curves = read_scalars(MY_RUN / "logs")
save_figure(plot_training_curves(my_curves), "my_gan_training")
validation = {tag: my_curves[my_curves.tag == tag].sort_values("step").value
              for tag in (logs.VAL_PSNR, logs.VAL_SSIM)}
print(f"after {len(validation[logs.VAL_PSNR])} epochs: validation PSNR "
      f"{validation[logs.VAL_PSNR].iloc[-1]:.2f} dB, SSIM {validation[logs.VAL_SSIM].iloc[-1]:.3f}")
fov = list_fovs(DATA, "test")[0]
target_channel = config.data.target_channels[0]  # nuclei, unless you chose another target
test_phase = read_image(image_path(DATA, "test", "phase", fov))
test_stain = read_image(image_path(DATA, "test", target_channel, fov))
my_stains = {}
start = load_checkpoint(MY_RUN / "latest.pt")["config"]["train"]["init_generator"]
for name, checkpoint in (("its start", start), ("my GAN", MY_RUN / "latest.pt")):
    if checkpoint:  # a GAN from random weights has no start to show
        generator, _, normaliser = load_predictor(checkpoint, DEVICE)
        my_stains[name] = predict_image(generator, test_phase, normaliser)[0]
size = min(96, *test_phase.shape)  # zoom on the window where the real stain has most nuclei
corners = itertools.product(range(0, test_phase.shape[0] - size + 1, 16),
                            range(0, test_phase.shape[1] - size + 1, 16))
row, col = max(corners, key=lambda rc: np.median(test_stain[rc[0]:rc[0] + size,
                                                            rc[1]:rc[1] + size]))
save_figure(plot_predictions(test_phase, test_stain, my_stains,
                             crop=(slice(row, row + size), slice(col, col + size))),
            "my_gan_prediction")
print("power over the real stain's, this image:\n" + pd.DataFrame(
    {name: {f"{band} band": band_power_ratio(stain, test_stain, band) for band in SPECTRAL_BANDS}
     for name, stain in my_stains.items()}).T.round(2).to_string())

# %% [markdown]
# <div class="alert alert-info">
# Compare your GAN with the regression model it started from, in the zoom and in the three
# bands. What did a few minutes of adversarial training add, and where? Which band is still
# far from 1, and what does that look like in the zoom?
# </div>

# %% [markdown] tags=["solution"]
# **Answers.** Scored on 16 images of another synthetic seed (`docs/recipe.md`), the
# regression start draws 0.81 / 0.16 / 0.13 of the real stain's power in the low / mid / high
# bands: the nuclei in place and about as bright as the real ones, but smooth inside. After
# the `quick` run (2 epochs; seeds 0, 1 and 2) the GAN draws 0.95-1.18 / 0.79-1.02 /
# 0.71-1.25, with about the same nuclei F1 (0.93-0.95 of the real stain's). The zoom shows
# where: the smooth discs have become textured nuclei, with a bright rim, bright specks and
# darker holes, coarser than the real chromatin and not where the real specks are. Some
# nuclei come out brighter than the real ones, which on a single image can push the mid band
# to about 2. A few minutes are enough because both networks start trained: G knows where
# the nuclei are, and D, the shipped GAN's discriminator, already knows real chromatin from
# blur. From random weights, a run this short gave a GAN blurrier than the regression model
# (0.06 / 0.02 / 0.03), and with a fresh D the texture hardly came (`docs/recipe.md`).

# %% [markdown]
# ### 1.8 Change one thing
#
# The cell trains two small GANs from the same weights for 40 steps on 64-pixel crops, one with
# this profile's settings and one with `CHANGE`, and shows both stains of a test image with
# their power in Part 4's three frequency bands over the real stain's (1 is right, below 1
# blur or nothing drawn yet, above 1 texture the real stain lacks).
#
# <div class="alert alert-info">
# Try it: run the cell as it is, with <code>model.upsample=transpose</code> (the original
# Pix2PixHD's transposed convolutions). Which band does the change move, and what in the zoom
# makes that power? Then try <code>loss.lambda_l1=0</code> or <code>loss.lambda_feat=10</code>:
# do 40 steps tell these apart from the recipe?
# </div>

# %%
# start here: two short runs from the same start, differing only in CHANGE
CHANGE = ["model.upsample=transpose"]  # or ["loss.lambda_l1=0"], ["loss.lambda_feat=10"]
STEPS = 40
fov = list_fovs(DATA, "test")[0]
target_channel = config.data.target_channels[0]
test_phase = read_image(image_path(DATA, "test", "phase", fov))
test_stain = read_image(image_path(DATA, "test", target_channel, fov))
short_stains, band_ratios = {}, {}
with tempfile.TemporaryDirectory(prefix="change-one-thing-") as folder:  # nothing is kept
    for name, change in (("this profile", []), (" ".join(CHANGE), CHANGE)):
        short_run = Trainer(configs.apply_overrides(config, [
            f"train.checkpoints_dir={folder}", f"train.name=run_{len(short_stains)}",
            "data.crop_size=64", "data.batch_size=4", *change]))
        for step_batch in itertools.islice(itertools.cycle(short_run.train_loader), STEPS):
            short_run.train_step(step_batch)
        short_run.generator.eval()  # no dropout: the network's own stain, of the whole image
        short_stains[name] = predict_image(short_run.generator, test_phase, short_run.normaliser,
                                           tile_size=max(test_phase.shape))[0]  # no tile seams
        band_ratios[name] = {f"{band} band": band_power_ratio(short_stains[name], test_stain, band)
                             for band in SPECTRAL_BANDS}
size = min(96, *test_phase.shape)
save_figure(plot_predictions(test_phase, test_stain, short_stains,
                             crop=(slice(0, size), slice(0, size))), "change_one_thing")
print(f"power over the real stain's after {STEPS} steps:\n"
      + pd.DataFrame(band_ratios).T.round(2).to_string())

# %% [markdown] tags=["solution"]
# **Answers.** Measured on a 2-core CPU after 40 steps: both GANs have hardly begun to draw
# nuclei (the low band is far below 1 for both), but with transposed convolutions the stain
# already carries a fine, regular grid, most visible inside the nucleus of the zoom, and its
# high-band power was about 3 times the recipe's (0.45 against 0.15 of the real stain's). A
# transposed convolution with a 3x3 kernel and stride 2 adds up a different number of kernel
# taps at even and odd output pixels, so every upsampling stamps a period-2 pattern into the output before anything is learnt, and
# training must fight it for ever after; resizing and then convolving spreads every input
# pixel evenly. Switching off the blurred L1 or raising feature matching to 10 changes where
# and how sharply nuclei are drawn, which takes far longer than a minute to show: the
# ablation in `docs/recipe.md` trained each for many epochs.

# %% [markdown]
# <div class="alert alert-success">
# Checkpoint 1: you have normalised the data, built both networks, written the
# feature-matching loss and the GAN step, and trained a GAN. Its stains are blotchy; the
# pre-trained model of the next parts trained far longer.
# </div>

# %% [markdown]
# ## Part 2: reading the training logs of the pre-trained models
#
# *Seconds on a 2-core CPU.*
#
# **You will learn** to read a GAN's training curves: unlike a regression loss they need not
# fall to zero, because G and D play against each other.
#
# Three models come with the exercise, trained on the same data:
#
# - `checkpoints/pix2pixhd_nuclei`: the **GAN** of Part 1, trained for 15 epochs;
# - `checkpoints/regression_nuclei`: a **regression model**, the same generator trained with an
#   L1 loss alone;
# - `checkpoints/viscy_nuclei`: VisCy's UNeXt2 network with VisCy's own loss (Part 4).
#
# Open their logs (`checkpoints/*/logs`) in TensorBoard, or read the same curves below. Each
# model ships its run's last epoch, the weights you get when you train with the same command.

# %%
# start here: the logs of the two shipped models
show_tensorboard("checkpoints")
gan_curves = read_scalars(SHIPPED["GAN"].parent / "logs")
regression_curves = read_scalars(SHIPPED["regression"].parent / "logs")
save_figure(plot_training_curves(gan_curves), "pretrained_gan_training")
save_figure(plot_training_curves(regression_curves), "pretrained_regression_training")
last_epoch = int(gan_curves[gan_curves.tag == logs.VAL_SSIM].shape[0])
print(f"the shipped GAN holds the weights of epoch {load_checkpoint(SHIPPED['GAN'])['epoch']}; "
      f"its logs run to epoch {last_epoch}")

# %% [markdown]
# Validation scores a 256-pixel centre crop of each validation image once per epoch, Part 3
# the whole 512-pixel test images, with more easy background (for the shipped GAN, several dB
# more PSNR): compare validation numbers only with each other.
#
# The table below reads the noisy curves by numbers: each curve's mean over its first and last
# tenth, and the best validation epoch.

# %%
# each curve's first and last tenth (pix2pixhd/logs.py: logs.trends), and the best epoch
TAGS = (logs.G_GAN, logs.G_GAN_FEAT, *logs.DISCRIMINATOR_TAGS, *logs.D_OUT_TRAIN_TAGS,
        *logs.D_OUT_VAL_TAGS, *logs.VALIDATION_TAGS)
trends = logs.trends(gan_curves, TAGS)
print("GAN:\n" + trends.round(3).to_string())

val_ssim = logs.curve(gan_curves, logs.VAL_SSIM)
best_epoch = int(val_ssim.idxmax()) + 1  # validation runs once per epoch
psnr_gan = logs.curve(gan_curves, logs.VAL_PSNR)
psnr_regression = logs.curve(regression_curves, logs.VAL_PSNR)
print(f"\nGAN: best validation SSIM {val_ssim.max():.3f} at epoch {best_epoch} of "
      f"{len(val_ssim)} (last epoch: {val_ssim.iloc[-1]:.3f})")
higher = "GAN" if psnr_gan.iloc[-1] > psnr_regression.iloc[-1] else "regression"
print(f"final validation PSNR: GAN {psnr_gan.iloc[-1]:.2f} dB, regression "
      f"{psnr_regression.iloc[-1]:.2f} dB; higher: {higher}")
regression_l1 = logs.first_and_last_tenth(logs.curve(regression_curves, logs.G_L1))
print(f"regression L1 loss: first tenth {regression_l1[0]:.4f}, last tenth {regression_l1[1]:.4f}")

# %% [markdown]
# The Trainer also logs, once per epoch, a grid of validation crops (TensorBoard's image tab,
# `val/phase_target_prediction`): phase | real stain | the GAN's prediction, one crop per row.
# The shipped logs keep a few epochs.

# %%
grids = read_images(PRETRAINED["GAN"].parent / "logs")
validation_steps = np.sort(gan_curves[gan_curves.tag == "val/psnr"].step.to_numpy())
epochs = [int(np.searchsorted(validation_steps, step)) + 1 for step, _ in grids]
save_figure(plot_logged_images(
    grids, titles=[f"epoch {epoch} (step {step})" for epoch, (step, _) in zip(epochs, grids)],
    title="GAN validation crops over training: phase | real stain | prediction"),
    "pretrained_gan_validation_grids")

# %% [markdown]
# <div class="alert alert-warning">
# Questions (the table above answers the first part of each):
#
# - Does D's mean score on fakes (`D_out/*_fake`) head for 0? What would it mean if it stayed
#   at 0, and what if real and fake scores met at 0.5?
# - Does feature matching (`loss/G_GAN_Feat`) fall or rise? D keeps changing: can it rise
#   while the generator gets better?
# - Which has the higher validation PSNR, the GAN or the regression model, and does a higher
#   PSNR mean a better virtual stain?
# - Is the last epoch the best by validation SSIM? Which checkpoint would you keep?
# - What would you change if D won too easily (`ndf`, `num_D`, `lambda_feat`, learning rates)?
# - In the grids of validation crops, what changes from the first epoch to the last: the
#   nuclei's places, their outlines, their texture?
# </div>

# %% [markdown] tags=["solution"]
# **Answers.** The numbers are the shipped run's, from the table above.
#
# - D's mean scores stay near 0.5: over the last tenth 0.51 on real and 0.49 on fake training
#   pairs (0.52 and 0.51 on validation pairs). D tells them apart only slightly, yet its losses
#   still fall, so it has not stopped learning: G keeps up with it. Fake scores stuck at 0
#   would mean D rejects every fake with certainty, and G learns little from the adversarial
#   term; real and fake meeting at 0.5 means D cannot tell them apart, because G is excellent
#   or D stopped learning; the stains (Part 3) tell which.
# - Feature matching falls here (0.19 to 0.18), but it compares the fakes with the real pairs
#   *through D's current features*: as D learns sharper features, the same fake can look
#   further away, so it can rise while the images improve. It is a moving target, not a score.
# - The regression model's validation PSNR is higher (30.93 dB against 29.57 dB): it predicts
#   the median of the plausible stains, which minimises pixel errors, while the GAN's detail
#   is scored as error wherever it is not exactly in place. Higher PSNR means closer on
#   average, not more realistic (Part 4 measures sharpness).
# - Validation SSIM is best at epoch 14 (0.942), the last epoch scores 0.941. If you choose a
#   checkpoint, choose it on validation images, never on test images, and not by SSIM, which
#   rewards the smooth median. The shipped GAN is its last epoch, 15: its recipe ends realistic
#   on every seed tried, so there is nothing to choose, and the model you train with the same
#   command is the model you get (`docs/recipe.md`).
# - If D wins too easily: a smaller D (`ndf`, fewer layers or scales), a lower learning rate
#   for D than for G, or a larger `lambda_feat` so that G leans on feature matching.
# - Epoch 1 puts smooth blobs about where the nuclei are, some too large and a dividing cell
#   smeared into a streak; by epoch 8 they sit in place at about the right size, the bright
#   plates of dividing cells come out bright, and a little texture and a stray ring appear;
#   by epoch 15 the nuclei are grainy, as the real stain's. Places are learnt first, then
#   outlines, then texture.

# %% [markdown]
# <div class="alert alert-success">
# Checkpoint 2: you can read from the curves whether D wins outright, which way feature
# matching goes, and whether validation keeps improving.
# </div>

# %% [markdown]
# ## Part 3: evaluating the virtual stain
#
# *Under a minute on a 2-core CPU.*
#
# **You will learn** to judge a virtual stain twice: pixel by pixel against the real stain,
# and by what a biologist does with it, segmenting nuclei.
#
# Pixel metrics (data range from the real stain): PSNR (dB), SSIM (structure, 1 is perfect),
# Pearson r (linear agreement, blind to scale), MAE and NRMSE.
#
# Instance metrics: nuclei are segmented in the virtual stain by smoothing, a global threshold
# (**Li's**, lower than Otsu's, so dim nuclei stay whole) and a watershed that splits touching
# nuclei. Nuclei are matched one to one by their overlap, the IoU (intersection over union). A
# match with IoU at least the threshold is a true positive (TP); an unmatched prediction is a
# false positive (FP), an unmatched true nucleus a false negative (FN). **Precision** =
# TP / (TP + FP), **recall** = TP / (TP + FN), and **F1** = 2 TP / (2 TP + FP + FN), high only
# when both are. The real stain, segmented the same way, sets the best this segmentation can
# reach.

# %%
# start here: the GAN's predictions of the test images, and their scores
fov = list_fovs(DATA, "test")[0]
test_phase, test_stain, true_labels = read_test_fov(fov)
mismatch = provenance_mismatch(PRETRAINED["GAN"], DATA)  # None when trained on this data
if mismatch:
    warnings.warn(mismatch, stacklevel=1)
gan_folder = predict_test_split("GAN")
gan_table = evaluate_predictions(gan_folder, DATA / "test")
gan_summary = write_evaluation(gan_table, RESULTS / "evaluation" / "GAN")
print(f"GAN on {gan_summary['n_images']} test images: PSNR {gan_summary['psnr']:.2f} dB, "
      f"SSIM {gan_summary['ssim']:.3f}, r {gan_summary['pearson']:.3f} (the nuclei's F1 comes "
      "after Task 3.1)")

# %% [markdown]
# <div class="alert alert-info">
# Task 3.1: match one-to-one, as the module does: a true nucleus matches at most one predicted
# nucleus, and a predicted nucleus at most one true one, when their IoU is at least the
# threshold. For thresholds of 0.5 or more, two nuclei can both overlap a third that much only
# when they cut it exactly in halves (IoU exactly 0.5 with each): then one half is a match and
# the other a false positive (or, for two nuclei merged into one, a false negative). Counting
# every pair above the threshold would score such a split nucleus twice, with an F1 of 1.33;
# F1 can never pass 1. Given the dense IoU matrix (true nuclei x predicted nuclei), count true
# positives, false positives and false negatives and return the F1 score.
# </div>

# %% tags=["task"]
def f1_at_iou(iou, threshold=0.5):
    """F1 of nuclei matching from an IoU matrix (n_true, n_pred), threshold >= 0.5."""
    raise NotImplementedError(
        "Task 3.1: match each true nucleus to at most one free predicted nucleus with IoU >= "
        "threshold; count TP, FP and FN, return 2 TP / (2 TP + FP + FN)")


# %% tags=["solution"]
def f1_at_iou(iou, threshold=0.5):
    """F1 of nuclei matching from an IoU matrix (n_true, n_pred), threshold >= 0.5."""
    taken = np.zeros(iou.shape[1], dtype=bool)  # predicted nuclei already matched
    true_positives = 0
    for candidates in iou >= threshold:  # one true nucleus: its pairs above the threshold
        free = np.flatnonzero(candidates & ~taken)
        if free.size:  # at most one match each way
            taken[free[0]] = True
            true_positives += 1
    false_positives = iou.shape[1] - true_positives
    false_negatives = iou.shape[0] - true_positives
    return 2 * true_positives / max(2 * true_positives + false_positives + false_negatives, 1)


# %%
# check Task 3.1 against the module's matching: made-up cases with IoUs exactly at the
# thresholds (where >= and > differ) and nuclei cut in halves, then a test image segmented in
# the GAN's stain
gan_stain = read_image(find_predictions(gan_folder)[fov])
gan_labels = segment_nuclei(gan_stain)
print(check_f1_at_iou(f1_at_iou, {f"{fov} segmented in the GAN's stain": (true_labels,
                                                                          gan_labels)}))

# %% [markdown]
# The course's first part scored segmentations with other metrics of the same matching:
# **accuracy** (StarDist's), TP / (TP + FP + FN) at IoU 0.5; **Dice** and **Jaccard**, pixel
# by pixel, blind to how the masks are cut into objects; **mAP** at IoU 0.5 and 0.75, COCO's
# average precision (here the precision times the share of recall levels reached); and
# **mAR**, the recall averaged over IoU 0.5 ... 0.95.

# %%
print(f"nuclei F1 at IoU 0.5: GAN {gan_summary['f1_iou50']:.3f}, real stain "
      f"{gan_summary['real_stain_f1_iou50']:.3f}")
course_metrics = compare_models({"GAN": gan_summary},
                                columns=("f1_iou50", *COURSE_INSTANCE_METRICS))
print(course_metrics.round(3).to_string())

# %%
# the GAN's stain of this image, segmented (again: the check above stops when Task 3.1 is skipped)
gan_stain = read_image(find_predictions(gan_folder)[fov])
gan_labels = segment_nuclei(gan_stain)
save_figure(plot_segmentation_overlay(gan_stain, true_labels, gan_labels, reference=test_stain,
                                      title=f"{fov}: nuclei in the GAN's virtual stain"),
            "gan_segmentation")
ranked = gan_table.sort_values("f1_iou50").set_index("fov")
shown = list(ranked.index[:2]) + list(ranked.index[-2:])
images = {name: read_test_fov(name) for name in shown}
save_figure(plot_prediction_grid(
    [images[name][0] for name in shown], [images[name][1] for name in shown],
    [read_image(find_predictions(gan_folder)[name]) for name in shown],
    [f"{name} (F1 {ranked.f1_iou50[name]:.2f})" for name in shown],
    title="GAN: the two worst and the two best test images by nuclei F1"), "gan_worst_best")
print(f"F1 over IoU thresholds 0.5 ... 0.95, averaged over the test images: GAN "
      f"{gan_summary['f1_mean']:.3f}, real stain {gan_summary['real_stain_f1_mean']:.3f}")

# %%
# the same four images, every nucleus outlined by what became of it at IoU 0.5
stains = [read_image(find_predictions(gan_folder)[name]) for name in shown]
segmented = [segment_nuclei(stain) for stain in stains]
outcomes = [error_causes(images[name][2], labels) for name, labels in zip(shown, segmented)]
save_figure(plot_instance_errors(
    stains, [images[name][2] for name in shown], segmented, outcomes,
    [f"{name} (F1 {ranked.f1_iou50[name]:.2f})" for name in shown],
    title="GAN: nuclei segmented in the virtual stain, the two worst and the two best images"),
    "gan_errors_worst_best")

# %%
# errors by cause over all test images, for the GAN's stain and the real stain alike
errors = pd.DataFrame({
    "GAN": gan_table[list(ERROR_CAUSES)].sum(),
    "real stain": gan_table[[f"real_stain_{cause}" for cause in ERROR_CAUSES]].sum().to_numpy(),
})
print(f"errors by cause in {len(gan_table)} test images ({int(gan_table.n_true.sum())} true "
      f"nuclei):\n{errors.to_string()}")
for cause, rule in ERROR_CAUSES.items():
    print(f"  {cause}: {rule}")
if "bright_nuclei" in gan_table:  # counted when the data set has a dataset.json
    # recall with a 95 % interval from resampling the test images: how far it could move on
    # another test set of the same size
    for group, which in (("bright", "nuclei brighter than p_high"), ("other", "other nuclei")):
        found, total = gan_table[f"{group}_found"].sum(), gan_table[f"{group}_nuclei"].sum()
        key = f"recall_{group}_nuclei"
        print(f"{which}: {found} of {total} found at IoU 0.5 (recall {gan_summary[key]:.2f}, "
              f"95 % interval {gan_summary[key + '_low95']:.2f}-{gan_summary[key + '_high95']:.2f})")

# %% [markdown]
# <div class="alert alert-warning">
# Questions: which nuclei does the GAN miss or invent in the worst images, and which does it
# draw too large (the outlines and the table of errors by cause, against the real stain)? Does
# it find the brightest nuclei as often as the others, and how sure can you be with so few of
# them? Is its F1 at IoU 0.5 far from the real stain's? Does F1 drop faster with the IoU
# threshold than the real stain's, and why? Which of the course's first-part metrics shows it?
# </div>

# %% [markdown] tags=["solution"]
# **Answers.** Measured on the shipped GAN (the numbers above may change after a retraining).
#
# - **Missed**: 121 of 1,991 true nuclei, and all but one of them touch the image border:
#   slivers cut by the edge, too small and faint to segment. The real stain, segmented the
#   same way, misses 69, also on the border, so many misses are the segmentation's, not the
#   virtual stain's; the GAN's extra misses lie on the border too. The one inside the image
#   is in fov_0009: a nucleus it did not draw.
# - **Invented**: 52, against none for the real stain: small blobs (half of them under 107
#   pixels, a sixth of a typical nucleus) where the GAN put a little stain that the threshold
#   keeps, a few of them on the border.
# - **Too large**: 49, against 28 for the real stain, and half of them (24) lie over the
#   brightest nuclei (one nucleus in twenty is brighter than `p_high`): the GAN draws a
#   dividing cell's plate of chromatin, which is long and thin, as a wider blob. In the figure
#   these, and the shifted outlines, are the yellow pairs. Merges none; splits 2 (the real
#   stain: 8).
# - **The brightest nuclei** are found as often as the others: 88 of 92 (recall 0.96) against
#   0.91. With 92 of them the recall is loose: resampling the 40 test images puts it anywhere
#   in 0.91-0.99 (95 %), the others' in 0.90-0.92. Trained under the linear map, whose `tanh`
#   ceiling sat at `p_high`, an earlier GAN found 13 of them; trained on 128-pixel crops and
#   predicting whole images, the one shipped before found 73 (`docs/results.md`).
# - Precision and recall at IoU 0.5 are 0.94 and 0.91: the GAN loses more by what it leaves
#   out (mostly at the border) than by what it adds (invented, too large).
# - The worst image (fov_0012, F1 0.83) has few nuclei (23), so one missed, one invented and
#   a few shifted or too large outlines at the border cost much; the best (F1 0.97) are
#   nearly all green.
# - F1 at IoU 0.5 is 0.92 against 0.98 for the real stain, and it falls faster with the
#   threshold (mean F1 over 0.5-0.95: 0.59 against 0.78): the GAN places nuclei well but draws
#   their edges from its own idea of a nucleus. Of the course's first-part metrics, mAP shows
#   it best: 0.85 at IoU 0.5 but 0.45 at 0.75, where the real stain keeps 0.96 and 0.88.
#   Accuracy (0.86) is below F1 by definition, and Dice and Jaccard (0.88 and 0.78) score the
#   pixels of the masks, so they see outlines but not merges or splits.

# %% [markdown]
# ### Your own images
#
# The GAN predicts any folder of 2-D phase TIFFs: `predict_folder` here, or from a terminal
#
#     python -m pix2pixhd predict --checkpoint checkpoints/pix2pixhd_nuclei/latest.pt \
#         --input my_phase_images/ --out my_predictions/ --normalise image
#
# Each prediction keeps its input's name, in `<out>/nuclei/`, in the stain's units. Set
# `PIX2PIXHD_OWN_IMAGES` to your folder before starting the notebook; without it, the cell
# below makes a stand-in: two test images exported as 8-bit images (0 to 255), *not* in the
# radians the model was trained on.
#
# By default (`normalise="dataset"`) inputs are scaled by the training images' median and IQR,
# and one far from them (median more than 2 training IQRs away, or IQR over 4 times larger or
# smaller) gets a warning: check your images' units. `normalise="image"` uses each image's own
# median and IQR, losing its absolute level. Here the two hardly differ; neither helps with
# another histogram shape (clipping, a log scale), microscope or cells.

# %%
# start here: predict a folder of your own phase TIFFs (or a stand-in made from test images)
own_images = Path(os.environ.get("PIX2PIXHD_OWN_IMAGES", RESULTS / "own_images_example"))
if "PIX2PIXHD_OWN_IMAGES" not in os.environ:
    own_images.mkdir(parents=True, exist_ok=True)
    for fov in list_fovs(DATA, "test")[:2]:
        phase = read_image(image_path(DATA, "test", "phase", fov))
        write_image(own_images / f"{fov}.tif",
                    255 * (phase - phase.min()) / (phase.max() - phase.min()))
own_predictions = {}
for normalise in ("dataset", "image"):
    folder = RESULTS / "own_predictions" / normalise
    predict_folder(PRETRAINED["GAN"], own_images, folder, device=DEVICE, normalise=normalise)
    own_predictions[normalise] = find_predictions(folder)
first = sorted(own_predictions["image"])[0]
print(f"{len(own_predictions['image'])} images of {own_images} predicted into "
      f"{RESULTS / 'own_predictions'}/<normalise>/nuclei/")
if first in list_fovs(DATA, "test"):  # the stand-in: its real stain is known
    save_figure(plot_predictions(
        read_image(own_images / f"{first}.tif"), read_test_fov(first)[1],
        {name: read_image(found[first]) for name, found in own_predictions.items()},
        titles=["phase exported as 0-255", "real stain", 'normalise="dataset"',
                'normalise="image"']), "own_images")

# %% [markdown]
# <div class="alert alert-success">
# Checkpoint 3: you have scored a virtual stain by pixels and by nuclei, and seen where the
# two disagree.
# </div>

# %% [markdown]
# ## Part 4: GAN against regression
#
# *About 2 minutes on a 2-core CPU.*
#
# **You will learn** what the objective does to a virtual stain, and when a model breaks. The
# regression model is the GAN's generator trained with L1 alone.
#
# The third model is VisCy's (the library of the course's first part): a 2-D UNeXt2 like the
# published VSCyto2D, narrowed from 31 M to 1.6 M parameters to train on a CPU, with VisCy's
# loss, half L1 and half multi-scale structural dissimilarity (MS-DSSIM). Architecture, loss and
# output (linear, not tanh) all differ from ours, so the table compares *recipes*, not single
# ingredients. On real A549 data the VisCy row is the published VSCyto2D itself, its outputs
# mapped to stain units with this dataset's median and IQR.
#
# Your own predictions of the test images (from part 1 of the course, say) join the tables:
# TIFFs in stain units, named like the test images, in `predictions/own/` or in
# `PIX2PIXHD_OWN_PREDICTIONS` (`PIX2PIXHD_OWN_MATCH=sorted` pairs them by order).
#
# Sharpness is measured by the power spectrum (cycles/pixel; a period of 10 pixels is 0.1).
# `band_power_ratio_low`, `_mid` and `_high` are a prediction's power in 0.05-0.15, 0.15-0.30
# and 0.30-0.45 cycles/pixel over the real stain's, from spectra averaged over the test images
# (read as in 1.8). `log_spectral_distance` is the mean |log10| of the ratio of the two spectra
# over 0.02-0.45 cycles/pixel (0 = the same spectrum).

# %%
# start here: every model of Part 0's list that is present predicts and is scored
MODELS = {name: path for name, path in PRETRAINED.items() if path.is_file()}
LABELS = {"GAN": "Pix2PixHD (GAN)", "regression": "regression (L1)",
          "VisCy": "VisCy UNeXt2" if SOURCE == "synthetic" else "VSCyto2D (published)"}
for name, path in MODELS.items():
    print(f"{LABELS[name]}: {path}, {TRAINED_ON[name]}")
predicted, tables, summaries = {}, {}, {}
for name in MODELS:
    predicted[name] = predict_test_split(name)
OWN = Path(os.environ.get("PIX2PIXHD_OWN_PREDICTIONS", "predictions/own"))
OWN_PAIRING = {"allow_missing": True, "match": os.environ.get("PIX2PIXHD_OWN_MATCH", "name")}
if OWN.is_dir():  # your own predictions, in stain units, named like the test fields of view
    predicted["own"] = OWN
    LABELS["own"] = f"your predictions ({OWN})"
for name in predicted:
    pairing = OWN_PAIRING if name == "own" else {}
    tables[name] = evaluate_predictions(predicted[name], DATA / "test", **pairing)
    summaries[name] = write_evaluation(tables[name], RESULTS / "evaluation" / name)
columns = ["psnr", "ssim", "pearson", "f1_iou50", "f1_mean", "band_power_ratio_low",
           "band_power_ratio_mid", "band_power_ratio_high", "log_spectral_distance"]
comparison = compare_models({LABELS[name]: summary for name, summary in summaries.items()},
                            columns=columns)
comparison.to_csv(RESULTS / "comparison.csv")
print(comparison.round(3).to_string())

# %%
save_figure(plot_metric_distributions(tables), "metric_distributions")
save_figure(plot_f1_vs_threshold({name: f1_per_threshold(t) for name, t in tables.items()}),
            "f1_vs_threshold")
save_figure(plot_power_spectra({
    name: radial_spectra(folder, DATA / "test", **(OWN_PAIRING if name == "own" else {}))
    for name, folder in predicted.items()}), "power_spectra")

models = comparison.drop(index="real stain", errors="ignore")
print("highest PSNR:", models["psnr"].idxmax(), "| highest SSIM:", models["ssim"].idxmax(),
      "| highest F1 at IoU 0.5:", models["f1_iou50"].idxmax())
print("spectrum closest to the real stain's (lowest log-spectral distance):",
      models["log_spectral_distance"].idxmin())
for band in ("low", "mid", "high"):
    ratios = models[f"band_power_ratio_{band}"]
    print(f"{band} band power / real stain's: " + ", ".join(
        f"{model} {ratio:.2f}" for model, ratio in ratios.items()))

# %% [markdown]
# ### A closer look
#
# Differences in sharpness hide in a whole field of view: zoom in on one nucleus.
#
# <div class="alert alert-info">
# Task 4.1: write <code>crop_around(centre, size, shape)</code>: the square window of
# <code>size</code> x <code>size</code> pixels centred on <code>centre</code> (row, column),
# moved as little as needed to lie inside an image of <code>shape</code> (height, width),
# even when the centre lies outside it, as a pair of slices (rows, columns) of whole numbers.
# </div>

# %% tags=["task"]
def crop_around(centre, size, shape):
    """(rows, columns) slices of a size x size window around centre, inside an image of shape."""
    raise NotImplementedError(
        "Task 4.1: start at centre - size // 2, clamp to [0, shape - size], return slices")


# %% tags=["solution"]
def crop_around(centre, size, shape):
    """(rows, columns) slices of a size x size window around centre, inside an image of shape."""
    starts = [min(max(int(c) - size // 2, 0), length - size) for c, length in zip(centre, shape)]
    return tuple(slice(start, start + size) for start in starts)


# %%
# check Task 4.1 on windows inside the image, at its edges and corners, around centres outside
# it, of even and odd sizes
print(check_crop_around(crop_around))

# %%
# zoom on the largest nucleus of a test image with your crop_around (do Task 4.1 first)
fov = list_fovs(DATA, "test")[0]
test_phase, test_stain, true_labels = read_test_fov(fov)
largest = np.bincount(true_labels.ravel())[1:].argmax() + 1
centre = np.argwhere(true_labels == largest).mean(axis=0).round().astype(int)
crop = crop_around(centre, min(96, *test_phase.shape), test_phase.shape)
side_by_side = {}
for name, folder in predicted.items():  # your own set may lack this image: then it is left out
    pairs = paired_files(folder, DATA / "test", **(OWN_PAIRING if name == "own" else {}))
    if fov in pairs:
        side_by_side[LABELS[name]] = read_image(pairs[fov][0])
save_figure(plot_predictions(test_phase, test_stain, side_by_side, crop=crop),
            "models_side_by_side")

# %% [markdown]
# <div class="alert alert-warning">
# Questions:
#
# - Which model wins on PSNR and SSIM, and which on sharpness (band power ratios near 1, a low
#   log-spectral distance)? Why do pixel metrics reward the blurry answer?
# - In the zoomed crop, find nuclear texture that a model drew but the real stain lacks. Does
#   such a "hallucination" harm counting nuclei? Measuring DNA content?
# - Which model would you use to segment nuclei, and which to show a biologist a picture?
# - Up to which frequency does each model follow the real stain's spectrum? If a curve stays
#   far above it at the highest frequencies, what in the zoomed crop makes that power (think
#   of transposed convolutions' checkerboard), and how does `band_power_ratio_high` show it?
# </div>

# %% [markdown] tags=["solution"]
# **Answers.** The lines printed under the figures name the winners of this run.
#
# - Pixel metrics reward the model whose prediction is closest *on average*: where the phase
#   image leaves the stain uncertain, the median (L1) or mean (L2) of the plausible stains
#   scores best, and that is a blur. A sharp guess that puts texture slightly off is penalised
#   twice, once where it drew detail and once where the detail really is. So expect the
#   regression model to lead on PSNR and SSIM and the GAN's band power ratios to be closer to
#   1 in the low and mid bands; where the printed numbers say otherwise, the GAN has learnt
#   to put its detail in the right places, or the regression model's spectrum is not as
#   flat as expected.
# - Texture invented inside a true nucleus does not change how many nuclei are found; an
#   invented or missed nucleus does. Measuring DNA content from intensity needs each nucleus's
#   total brightness, which an invented texture can bias: no virtual stain replaces the real
#   one for that.
# - For segmentation, the model with the higher F1 in the table (often the regression model:
#   smooth nuclei with clean edges threshold well); for a picture that looks like a real
#   stain, the one whose spectrum is closest to the real stain's.
# - A model follows the real stain up to where its curve departs from the real stain's; a
#   plateau at high frequencies far above the real stain's is periodic texture (a
#   checkerboard) or noise the generator adds, and `band_power_ratio_high` well above 1
#   measures it. The zoomed crop tells the two apart: a regular grid, or a grainy speckle.
#   The shipped VisCy model (synthetic data) shows the grid kind: a peak near 0.48
#   cycles/pixel, faint lines two pixels apart across each nucleus. Its head rebuilds the
#   image from groups of 2 x 2 pixels (pixel shuffle), and nothing stops it from drawing them
#   unevenly; our generator had such stripes too, until it ended in a fixed low-pass
#   (`docs/recipe.md`). The same head pads zeros at the top and left, and VisCy's first row
#   and column come out as a bright and a dark line (`experiments/edge_context.py`).

# %% [markdown]
# ### When does it break?
#
# `perturb_phase` degrades the phase of a few test images step by step, as another microscope
# might: **blur** (out of focus), an **offset** on every pixel (another background level) and
# **noise** (a shorter exposure), the last two in IQRs of the image. `robustness_table` scores
# the GAN's and the regression model's stains at each step as Part 3 does: nuclei F1 at IoU
# 0.5, and mid-band power over the real stain's.

# %%
# start here: degrade the phase input of a few test images and score both models at each step
predictors = {name: load_predictor(PRETRAINED[name], DEVICE)[::2]  # (generator, normaliser)
              for name in ("GAN", "regression") if PRETRAINED[name].is_file()}
degraded = [read_test_fov(fov) for fov in list_fovs(DATA, "test")[:SIZES["robustness_images"]]]
LEVELS = {"blur_sigma": [0, 1, 2, 4], "offset": [0, 2, 4], "noise": [0, 0.25, 0.5, 1]}
robustness = robustness_table(predictors, degraded, LEVELS)
save_figure(plot_robustness(robustness), "robustness")
print(robustness.set_index(["perturbation", "level", "model"]).f1_iou50.unstack()
      .round(2).to_string())

# %%
# the worst blur and noise: the stains of the first image's degraded input, zoomed on the
# 128-pixel window around its largest nucleus
phase, stain, labels = degraded[0]
centre = np.argwhere(labels == np.bincount(labels.ravel())[1:].argmax() + 1).mean(axis=0)
crop = tuple(slice(start, start + 128) for start in
             (int(np.clip(c - 64, 0, n - 128)) for c, n in zip(centre, labels.shape)))
for kind, levels in LEVELS.items():
    if kind == "offset":  # changes nothing, as the table says
        continue
    worst = perturb_phase(phase, **{kind: levels[-1]})
    save_figure(plot_predictions(
        worst, stain, {name: predict_image(g, worst, n)[0] for name, (g, n) in predictors.items()},
        crop=crop, titles=[f"phase, {kind}={levels[-1]}", "real stain", *predictors]),
        f"broken_{kind}")

# %% [markdown]
# <div class="alert alert-warning">
# Questions: which degradation breaks the models, and which model holds up better? Under blur,
# what happens to the GAN's band power while its F1 falls: what is it drawing? Why does the
# offset change nothing at all (think of the instance norm after the generator's first
# convolution)? What would you add to training so that a model copes with blurred inputs?
# </div>

# %% [markdown] tags=["solution"]
# **Answers.** Measured on the first 3 test images with the shipped models (F1 0.91 for both
# on the clean inputs, 0.98 for the real stain).
#
# - Noise breaks both alike: at a noise of 1 IQR both F1s fall to 0.64 (0.80 at half that).
#   Blur of 4 pixels costs the regression model more (0.77) than the GAN (0.85). The noise
#   zoom shows how: both keep the large nuclei, and both scatter small, dim blobs and broken
#   rings where the noise looked like structure.
# - The GAN's mid-band power falls only from 1.05 to 0.74 of the real stain's under the worst
#   blur: it keeps drawing nuclear texture whether or not the input supports it (in the blur
#   zoom its nuclei come out sharp, textured and brighter than the real ones), so its stain
#   *looks* sharp while it finds fewer nuclei. A realistic-looking stain is no sign of a right
#   one. The regression model's faint texture halves (0.10 to 0.07 under blur, 0.05 under
#   noise): it draws even smoother discs.
# - The offset is removed inside the network: the first convolution turns a constant added to
#   the input into a constant per channel, and instance norm subtracts each channel's mean.
#   The same holds for a change of scale, which is why Part 3's 8-bit stand-in hardly mattered.
# - Augment the training inputs with the degradations you expect (random blur and noise), as
#   the crops are flipped and rotated now, or train on images of the microscope you will use.

# %% [markdown]
# **Bonus: test-time augmentation.** A model can predict all 8 rotations and flips of an
# image, turn the stains back, and average them (`predict_with_tta`).

# %%
# one stain against the mean of 8, for both models, in the same window
averaged = {}
for name, (generator, normaliser) in predictors.items():
    averaged[name] = predict_image(generator, phase, normaliser)[0]
    averaged[f"{name}, mean of 8"] = predict_with_tta(generator, phase, normaliser)[0]
save_figure(plot_predictions(phase, stain, averaged, crop=crop,
                             titles=["phase", "real stain", *averaged]), "test_time_augmentation")
print(pd.DataFrame({name: {f"{band} band": band_power_ratio(prediction, stain, band)
                           for band in SPECTRAL_BANDS} for name, prediction in averaged.items()}
                   ).T.round(2).to_string())

# %% [markdown]
# <div class="alert alert-warning">
# Questions: what does averaging do to the regression model's stain, and what to the GAN's?
# Which of the two would you average, and why not the other?
# </div>

# %% [markdown] tags=["solution"]
# **Answers.** Averaging blurs away whatever depends on the orientation. The GAN draws its
# texture anew in each orientation, the eight textures do not line up, and their mean loses
# it: on the first test image its mid-band power falls from 1.05 to 0.55 of the real stain's
# and its high band from 1.57 to 0.37, while the low band (the nuclei themselves) stays high
# (1.16 to 1.49). The averaged GAN looks like a regression model. The regression stain changes
# little to the eye; its faint fine detail was orientation-dependent too (high band 0.15 to
# 0.07). Average a regression model when a smoother, steadier stain is the goal; not a GAN,
# whose point is one sharp, plausible stain (to use its variety, sample it as in Part 5).

# %% [markdown]
# <div class="alert alert-success">
# Checkpoint 4: you can say in numbers which model agrees best pixel by pixel, which finds
# nuclei best, whose detail is closest to the real stain's, and which breaks first.
# </div>

# %% [markdown]
# ## Part 5 (bonus): many stains for one input with MC-dropout
#
# *About 2.5 minutes on a 2-core CPU.*
#
# **You will learn** to turn one GAN into many plausible stains, and to test whether their
# spread says where the model is wrong.
#
# Dropout in the generator's residual blocks, left on at inference, draws another stain on each
# pass (MC-dropout, Gal and Ghahramani 2016). The per-pixel standard deviation across samples
# is an uncertainty map; the **coefficient of variation** (CV) divides it by the mean, so bright
# and dim nuclei with the same relative spread look alike.

# %%
# start here: the shipped GAN draws many stains for one test image
fov = list_fovs(DATA, "test")[0]
test_phase, test_stain, true_labels = read_test_fov(fov)
n_samples, n_images = SIZES["mc_samples"], SIZES["mc_images"]
gan_generator, _, gan_normaliser = load_predictor(PRETRAINED["GAN"], DEVICE)
samples = sample_stains(gan_generator, gan_normaliser, test_phase, n_samples, seed=0)[:, 0]
print(f"{n_samples} MC-dropout samples of {fov}: {samples.shape} (samples, height, width)")

# %% [markdown]
# <div class="alert alert-info">
# Task 5.1: from the samples (n, H, W), compute the standard deviation map (the sample
# standard deviation over the n draws, as numpy's <code>ddof=1</code>) and the error map of
# their mean, |mean - real stain|, both (H, W) in the stain's units.
# </div>

# %% tags=["task"]
def std_and_error_maps(samples, stain):
    """Per-pixel sample std over the draws (n, H, W) and |mean - stain|, both (H, W)."""
    raise NotImplementedError(
        "Task 5.1: std over axis 0 with ddof=1, and the absolute error of the mean over axis 0")


# %% tags=["solution"]
def std_and_error_maps(samples, stain):
    """Per-pixel sample std over the draws (n, H, W) and |mean - stain|, both (H, W)."""
    return samples.std(axis=0, ddof=1), np.abs(samples.mean(axis=0) - stain)


# %%
# check Task 5.1 against the module's maps: a made-up case of 3 draws, then the GAN's samples
print(check_std_and_error_maps(std_and_error_maps, [(samples, test_stain)]))

# %%
# the module's maps, which your Task 5.1 matches (so this cell runs without it)
maps = uncertainty_maps(samples)
std_map, error_map = maps["std"], np.abs(maps["mean"] - test_stain)

# zoom in on a whole nucleus: the largest one whose window fits inside the image
size = min(96, *test_phase.shape)
nuclei = [(int((true_labels == label).sum()), np.argwhere(true_labels == label).mean(axis=0))
          for label in np.unique(true_labels[true_labels > 0])]
inside = [(area, centre) for area, centre in nuclei
          if all(size / 2 <= c <= n - size / 2 for c, n in zip(centre, test_phase.shape))]
_, centre = max(inside or nuclei, key=lambda nucleus: nucleus[0])
top, left = (int(min(max(round(c) - size // 2, 0), n - size))
             for c, n in zip(centre, test_phase.shape))
crop = (slice(top, top + size), slice(left, left + size))
save_figure(plot_mc_samples(test_phase, samples, test_stain, crop=crop), "mc_samples")
save_figure(plot_uncertainty_maps(maps["mean"], std_map, test_stain, cv=maps["cv"],
                                  spearman=spearman_uncertainty_error(std_map, error_map)),
            "uncertainty_maps")

# %% [markdown]
# Is the spread a useful uncertainty? Three checks, over several test images:
#
# - **Ranking**: the Spearman rank correlation between std and |error| per pixel.
# - **Sparsification**: remove pixels from the most uncertain down and watch the mean error of
#   those left fall; the *oracle* removes the largest errors first. **AUSE** is the area
#   between the two curves: 0 for a perfect ranking.
# - **Calibration**: is the std the right *size*? Pixels are grouped by predicted variance into
#   20 equal groups; in each, the mean squared error should equal the mean variance. **UCE**
#   (uncertainty calibration error) is the average gap, weighted by group size, in squared
#   stain units. The **reliability diagram** draws each group's error against its std.
#
# MC-dropout spreads are usually too narrow, so `sample_folder` scales the std by the one factor
# that gives the lowest UCE on validation images, and scores the test images before and after.

# %%
mc_folder = RESULTS / "mc_dropout"
mc_summary = sample_folder(PRETRAINED["GAN"], DATA / "test", mc_folder, n=n_samples,
                           calibration=DATA / "val", max_images=n_images, device=DEVICE)
mc_table = pd.read_csv(mc_folder / "per_image.csv")
print(mc_table[["fov", "spearman_std_abs_error", "ause", "uce_unscaled", "uce",
                "nuclei_count_mean", "nuclei_count_std", "nuclei_true"]].round(3).to_string())
print(f"std scale fitted on validation images: {mc_summary['std_scale']:.2f}; mean UCE "
      f"{mc_summary['uce_unscaled']:.4g} before and {mc_summary['uce']:.4g} after scaling")
first = mc_table.fov[0]
mean_map = read_image(find_predictions(mc_folder, "mean")[first])
std_first = read_image(find_predictions(mc_folder, "std")[first])
stain_first = read_test_fov(first)[1]
save_figure(plot_sparsification(sparsification_curve(std_first, np.abs(mean_map - stain_first))),
            "sparsification")

# %%
# the reliability diagram of the scored test images, before and after scaling the std
mean_files, std_files = find_predictions(mc_folder, "mean"), find_predictions(mc_folder, "std")
mc_std = np.concatenate([read_image(std_files[fov]).ravel() for fov in mc_table.fov])
mc_error = np.concatenate([(read_image(mean_files[fov]) - read_test_fov(fov)[1]).ravel()
                           for fov in mc_table.fov])
scale = mc_summary["std_scale"]
save_figure(plot_reliability({
    "MC-dropout std": reliability_bins(mc_std**2, mc_error**2),
    f"std x {scale:.2f} (fitted on validation)": reliability_bins((scale * mc_std) ** 2,
                                                                  mc_error**2),
}), "reliability")

# %% [markdown]
# <div class="alert alert-warning">
# Questions:
#
# - Where is the standard deviation high: inside nuclei, at their edges, in the background?
#   Is that where the errors are?
# - Is the fitted scale factor above or below 1, and what does that say about MC-dropout's
#   error bars? How much does it lower the UCE? Which groups of the reliability diagram does
#   it bring to the diagonal, which not, and why can one factor not fix them all?
# - The nuclei count varies between samples: would you report one virtual stain's count?
# - Is a low uncertainty a guarantee that a virtual stain is right? Think of a nucleus the
#   model invents in every sample.
# </div>

# %% [markdown] tags=["solution"]
# **Answers.** The numbers are those printed above.
#
# - The std is highest at the edges of nuclei and on dim or ambiguous nuclei, where the samples
#   disagree on where a nucleus ends or whether it is there; it is low in the background.
#   The errors sit largely in the same places, which is what a positive Spearman correlation
#   and an AUSE well below the random curve's area say.
# - A scale factor above 1 means the raw spread is too narrow: the errors are larger than the
#   std promises, so raw MC-dropout error bars are overconfident (the usual finding); below
#   1, they are too cautious. UCE weighs each group's gap in squared stain units, so the
#   groups with the largest spreads and errors, the brightest nuclei, decide the factor:
#   scaled, the last group comes to the diagonal (for the shipped GAN the factor is about 3.3,
#   and the mean test UCE falls by more than half, from about 3.7e4 to 1.5e4). A factor only
#   slides the curve sideways on the log axes; it cannot change its shape, and the curve is flatter than the
#   diagonal: from the background to the brightest nuclei the std spans more than two
#   decades, the error about two. So, scaled, the other groups (background, edges of nuclei,
#   dim nuclei) still sit up to about three times above the diagonal: there the samples
#   agree more than the model is right. One factor per range of std (or of intensity) would
#   fix the shape; a single factor fixes the overall level only.
# - No: when the count varies between samples by more than a nucleus or two, one virtual
#   stain's count hides that spread; report the mean and the std over samples, or check with
#   the real stain.
# - No. MC-dropout measures how much the model's own guesses vary, not whether they are right:
#   a nucleus the model confidently invents appears in every sample with a low std. It
#   cannot flag inputs unlike the training data either; that needs other checks.

# %% [markdown]
# ### Which virtual nuclei can you trust?
#
# Is each virtual nucleus real? The samples can answer per nucleus. `sample_folder` segmented
# the mean stain (the *virtual nuclei*, saved as label images in `virtual_nuclei/`) and then
# every sample the same way. A nucleus's **trust** is how consistently it comes back: in each
# sample, take its best IoU with any nucleus segmented there, and average over the samples (1:
# drawn with the same outline in every sample; 0: never drawn again). `nuclei_trust.csv` has
# one row per virtual nucleus; `matched` says whether a real nucleus matches it one to one at
# IoU 0.5 or more (0: a false nucleus, invented or drawn too wrong to count).
#
# How well does trust tell the two kinds apart? The **AUROC** is the chance that a random
# matched nucleus has a higher trust than a random unmatched one: 0.5 when trust knows
# nothing, 1 when it separates them perfectly. The baseline is the mean std inside the nucleus
# (lower std, more trusted).

# %%

nuclei = read_nuclei_trust(mc_folder)
trust_auroc = auroc(nuclei.trust, nuclei.matched)
print(f"{len(nuclei)} virtual nuclei in {nuclei.fov.nunique()} test images, "
      f"{(nuclei.matched == 0).sum()} of them unmatched")
print(f"AUROC for telling matched from unmatched nuclei: trust {trust_auroc:.2f}, mean std "
      f"inside the nucleus {auroc(-nuclei.mean_std, nuclei.matched):.2f}")
# the image with the most unmatched nuclei, to see where they are
shown_fov = (nuclei.matched == 0).groupby(nuclei.fov).sum().idxmax()
_, shown_stain, shown_truth = read_test_fov(shown_fov)
shown_labels = read_mask(find_predictions(mc_folder, "virtual_nuclei")[shown_fov])
save_figure(plot_nuclei_trust(nuclei, shown_labels, shown_truth, shown_stain, fov=shown_fov,
                              auroc=trust_auroc), "nuclei_trust")

# %% [markdown]
# <div class="alert alert-info">
# Task 5.2: you will keep only the virtual nuclei whose trust is at least a threshold. For a
# threshold, count what removing the others does: how many false (unmatched) nuclei it
# removes, and how many real (matched) ones it loses.
# </div>

# %% tags=["task"]
def threshold_outcome(nuclei, threshold):
    """(false nuclei removed, real nuclei lost) when the nuclei with trust < threshold go."""
    raise NotImplementedError(
        "Task 5.2: removed = nuclei.trust < threshold; count the removed rows with "
        "matched == 0 and those with matched == 1")


# %% tags=["solution"]
def threshold_outcome(nuclei, threshold):
    """(false nuclei removed, real nuclei lost) when the nuclei with trust < threshold go."""
    removed = nuclei.trust < threshold
    return (int((removed & (nuclei.matched == 0)).sum()),
            int((removed & (nuclei.matched == 1)).sum()))


# %%
# check Task 5.2 on a hand-made table, then what each threshold would do to the test nuclei
print(check_trust_threshold(threshold_outcome))
thresholds = pd.Index([0.5, 0.7, 0.8, 0.9], name="threshold")
outcomes = pd.DataFrame([threshold_outcome(nuclei, t) for t in thresholds], index=thresholds,
                        columns=["false nuclei removed", "real nuclei lost"])
outcomes.insert(1, "false nuclei kept", (nuclei.matched == 0).sum()
                - outcomes["false nuclei removed"])
print(outcomes.to_string())

# %% [markdown]
# <div class="alert alert-warning">
# Questions:
#
# - In the figure, where are the nuclei of low trust: on real nuclei, between them, at the
#   border of the image? Are the unmatched nuclei the ones of low trust?
# - Which threshold would you choose, and what does it cost? Would your answer change if
#   every false nucleus were an expensive mistake (a drug screen counting cells), or if every
#   lost real nucleus were one (tracking every cell in a movie)?
# - Is trust better than the mean std inside the nucleus at telling real nuclei from false
#   ones? Why might a nucleus with a wide pixel spread still be drawn in every sample?
# </div>

# %% [markdown] tags=["solution"]
# **Answers.** The numbers are those of the quick profile (4 test images, 16 samples);
# `docs/results.md` has them for 16 images of two data sets.
#
# - Low trust marks the nuclei whose outline changes from sample to sample, and those are
#   mostly the unmatched ones: here 205 virtual nuclei, 13 unmatched, and trust ranks a
#   matched nucleus above an unmatched one with an AUROC of 0.99. Not all, though: one of the
#   13 has a trust of 0.9 or more. A nucleus the model draws wrongly the same way in every
#   sample keeps a high trust; trust measures agreement, not truth.
# - At 0.8, 7 of the 13 false nuclei go and none of the 192 real ones is lost; at 0.9, 12
#   false and 9 real; at 0.5, only 2 false and none real. Where a false nucleus is the
#   costly mistake (a cell count in a screen), choose a high threshold and accept losing a
#   few per cent of real nuclei; where every real cell matters (tracking), keep a low one, or
#   send the low-trust nuclei to a person instead of removing them.
# - Yes, by far: the mean std inside the nucleus reaches an AUROC of only 0.67. The
#   pixel std is large wherever the stain is bright, likely inside a real, bright nucleus as
#   much as on a false one: a nucleus whose brightness wavers from sample to sample but whose
#   outline does not is drawn in every sample and is real. Trust asks the question a
#   biologist asks (is this object there, with this shape?) instead of how much the
#   intensities vary.

# %% [markdown]
# <div class="alert alert-success">
# Checkpoint 5: you have sampled many stains from one GAN, tested whether their spread
# points at the model's errors, and scored each virtual nucleus by how consistently it comes
# back. Uncertainty you have not checked is decoration.
# </div>

# %% [markdown]
# ## Summary
#
# The numbers of this run, from the files the parts wrote (a part you skipped is named
# instead), also in `results/summary.md`.

# %%
def markdown_table(table):
    """A DataFrame as a Markdown table (3 significant digits)."""
    header = "| " + " | ".join([table.index.name or "", *table.columns]) + " |"
    rule = "|" + "---|" * (len(table.columns) + 1)
    rows = ["| " + " | ".join([str(index), *(f"{v:.3g}" for v in row)]) + " |"
            for index, row in zip(table.index, table.to_numpy())]
    return "\n".join([header, rule, *rows])


lines = [f"# Virtual staining with Pix2PixHD: results ({PROFILE} profile, {DEVICE.type})", ""]
my_logs = MY_RUN / "logs"
if list(my_logs.glob("events.out.tfevents.*")):
    my_curves = read_scalars(my_logs)
    my_psnr = my_curves[my_curves.tag == logs.VAL_PSNR].sort_values("step").value
    my_ssim = my_curves[my_curves.tag == logs.VAL_SSIM].sort_values("step").value
    lines.append(f"Your GAN after {len(my_psnr)} epochs: validation PSNR {my_psnr.iloc[-1]:.2f} "
                 f"dB, SSIM {my_ssim.iloc[-1]:.3f}.")
else:
    lines.append("Your GAN: no training run in this session (Part 1 trains one).")
lines.append("")
if (RESULTS / "comparison.csv").is_file():
    comparison = pd.read_csv(RESULTS / "comparison.csv", index_col="model")
    lines += [f"The models of Part 4 on the test images of `{DATA}`:", "",
              markdown_table(comparison)]
else:
    lines.append("Pre-trained models: not compared in this session (Part 4 compares them).")
lines.append("")
if (RESULTS / "mc_dropout" / "summary.json").is_file():
    mc = pd.read_json(RESULTS / "mc_dropout" / "summary.json", typ="series")
    lines.append(f"MC-dropout ({mc['n_samples']:.0f} samples, {mc['n_images']:.0f} images): "
                 f"Spearman(std, |error|) {mc['spearman_std_abs_error']:.3f}, AUSE "
                 f"{mc['ause']:.3f}, UCE {mc['uce_unscaled']:.4g} before and {mc['uce']:.4g} "
                 f"after scaling the std by {mc['std_scale']:.2f}.")
else:
    lines.append("MC-dropout: not run in this session (Part 5 runs it).")
summary = "\n".join([*lines, ""])
(RESULTS / "summary.md").write_text(summary)
print(summary)
