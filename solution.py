# %% [markdown]
# # Image translation, part 2: virtual staining with a conditional GAN
#
# A phase image shows where cells are and how thick they are; a fluorescence stain shows what
# they are made of. Stains cost dyes, light (which harms living cells) and imaging time. In
# *virtual staining* a neural network learns to predict the stain from the label-free image.
#
# In part 1 of this course a regression model (a U-Net trained with a pixel-wise loss) did
# this. A regression model predicts, for each pixel, the *average* of all stains that are
# plausible for that input: where the input is ambiguous, the average is a blur. Here you
# train a **conditional GAN**, Pix2PixHD (Wang et al., 2018): a generator proposes a stain,
# a discriminator judges whether a (phase, stain) pair looks real, and the two are trained
# against each other. The GAN draws *one plausible* stain: sharp, but possibly invented.
#
# You will
# 0. set up the device and a profile that fits your machine,
# 1. look at the data, build the loaders, the coarse-to-fine generator and the multi-scale
#    discriminator, and train them for a while,
# 2. read the training logs of a pre-trained model,
# 3. evaluate it with pixel metrics and by segmenting nuclei,
# 4. compare it with a regression model,
# 5. (bonus) sample many stains per input with MC-dropout and ask where the model is unsure.
#
# <div class="alert alert-info">
# Blue boxes are tasks: fill in the cells marked <code>TODO</code>. Yellow boxes are
# questions to discuss with your neighbours. Green boxes are checkpoints.
# </div>

# %% [markdown]
# ## Part 0: setup
#
# **You will learn** which device and which problem size suit your machine. The `course`
# profile is the real thing on a GPU; the `quick` profile shrinks crops, model and epochs so
# that every cell runs on a laptop CPU in minutes. Set the environment variable
# `PIX2PIXHD_PROFILE` to choose yourself.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from pix2pixhd import config as configs

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
PROFILE = os.environ.get("PIX2PIXHD_PROFILE", "course" if DEVICE.type == "cuda" else "quick")
DATA = Path(os.environ.get("PIX2PIXHD_DATA", "data"))
RESULTS = Path(os.environ.get("PIX2PIXHD_RESULTS", "results"))
RUNS = Path(os.environ.get("PIX2PIXHD_RUNS", "runs"))
PRETRAINED = Path("checkpoints")
RESULTS.mkdir(exist_ok=True)
torch.manual_seed(0)
np.random.seed(0)
print(f"device {DEVICE}, profile {PROFILE}, data {DATA.resolve()}")


def save_figure(figure, name):
    """Keep every figure under results/ as well as showing it."""
    figure.savefig(RESULTS / f"{name}.png", dpi=110, bbox_inches="tight")
    plt.show()
    plt.close(figure)


# %% [markdown]
# ## Part 1: data, model and training
#
# **You will learn** what the two kinds of image look like, how they are normalised for the
# network, how Pix2PixHD's generator and discriminator are built, which losses train them, and
# what a few minutes of GAN training produce.
#
# ### 1.1 The data
#
# Each field of view (FOV) has a quantitative phase image (input), a Hoechst nuclei image and a
# CellMask membrane image (targets), and for testing the nuclei instance masks. If you have not
# downloaded the real A549 images, `data/` holds the built-in synthetic dataset: a simulation
# of what the microscope records (see `pix2pixhd/synthetic.py`).

# %%
from pix2pixhd.layout import read_dataset_json
from pix2pixhd.viz import plot_dataset_examples

dataset_info = read_dataset_json(DATA)
print("source:", dataset_info["source"], "| fields of view per split:", dataset_info["counts"])
save_figure(plot_dataset_examples(DATA, split="train", n=3), "data_examples")

# %%
from pix2pixhd.layout import list_fovs, read_image, read_mask

train_fovs = list_fovs(DATA, "train")[:8]
figure, axes = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
for ax, channel, unit in zip(axes, ("phase", "nuclei"), ("rad", "a.u.")):
    values = np.concatenate([read_image(DATA / "train" / channel / f"{f}.tif").ravel()
                             for f in train_fovs])
    ax.hist(values, bins=200, color="0.3" if channel == "phase" else "m", log=True)
    stats = dataset_info["normalisation"][channel]
    for key in ("p_low", "median", "p_high"):
        ax.axvline(stats[key], ls="--", lw=1, color="k")
    ax.set(title=f"{channel}: pixel values of {len(train_fovs)} training images "
                 "(dashed: 0.5th percentile, median, 99.5th percentile)",
           xlabel=f"intensity ({unit})", ylabel="pixels (log scale)")
    ax.title.set_fontsize(9)
save_figure(figure, "intensity_histograms")

# %% [markdown]
# <div class="alert alert-warning">
# Questions: in which cells can you guess where the nucleus is from the phase image alone? Is
# the phase contrast of nuclei the same in every cell? What does that mean for a model that must
# predict the Hoechst image from phase? Most Hoechst pixels are dark background: what does
# the long bright tail of the histogram hold?
# </div>
#
# ### 1.2 Normalisation
#
# Networks train best on inputs of a known scale. We normalise with statistics of the
# *training split* (stored in `data/dataset.json`), never with constants and never with test
# images. The phase image is centred on its median and divided by its interquartile range;
# robust statistics ignore the few very bright or dark pixels. The stain is the generator's
# output, which ends in a `tanh`, so it must live in [-1, 1]: its 0.5th percentile `p_low`
# maps to -1 and its 99.5th percentile `p_high` to +1.
#
# <div class="alert alert-info">
# Task 1.1: write the stain normalisation and its inverse (which you need to measure errors in
# the stain's own units).
# </div>

# %% tags=["task"]
def normalise_stain(image, p_low, p_high):
    """Map [p_low, p_high] linearly onto [-1, 1]."""
    return ...  # TODO


def denormalise_stain(normalised, p_low, p_high):
    """The inverse of normalise_stain."""
    return ...  # TODO


# %% tags=["solution"]
def normalise_stain(image, p_low, p_high):
    """Map [p_low, p_high] linearly onto [-1, 1]."""
    return 2 * (image - p_low) / (p_high - p_low) - 1


def denormalise_stain(normalised, p_low, p_high):
    """The inverse of normalise_stain."""
    return (normalised + 1) / 2 * (p_high - p_low) + p_low


# %%
from pix2pixhd.data import Normaliser

normaliser = Normaliser.from_dataset(DATA, "phase", ["nuclei"])
stats = dataset_info["normalisation"]["nuclei"]
example = np.linspace(stats["p_low"], stats["p_high"], 5)
yours = normalise_stain(example, stats["p_low"], stats["p_high"])
print("your normalisation:  ", np.round(yours, 3))
print("the module's:        ", np.round(normaliser.normalise_target(example[None]), 3)[0])
assert np.allclose(denormalise_stain(yours, stats["p_low"], stats["p_high"]), example)

# %% [markdown]
# ### 1.3 Loaders: crops and augmentation
#
# Training sees random square crops; each crop is flipped and rotated by a multiple of 90
# degrees at random (the 8 symmetries of a square), applied identically to the phase crop and
# the stain crop. A microscope image has no preferred orientation, so these are free extra
# examples. Validation uses a fixed centre crop, so the numbers are comparable between epochs.

# %%
from pix2pixhd.data import make_loaders

config = configs.load_config(PROFILE)
config = configs.apply_overrides(config, [f"data.root={DATA}", "data.num_workers=0"])
train_loader, val_loader = make_loaders(config)
batch = next(iter(train_loader))
print({key: tuple(value.shape) for key, value in batch.items() if hasattr(value, "shape")})
print(f"{len(train_loader)} training batches of {config.data.batch_size} per epoch")

figure, axes = plt.subplots(2, 4, figsize=(10, 5))
for column in range(4):
    axes[0, column].imshow(batch["input"][column, 0], cmap="gray")
    axes[1, column].imshow(batch["target"][column, 0], cmap="magma", vmin=-1, vmax=1)
    axes[0, column].set_title(f"crop {column}: phase")
    axes[1, column].set_title("nuclei, normalised")
for ax in axes.flat:
    ax.axis("off")
save_figure(figure, "training_crops")

# %% [markdown]
# ### 1.4 The generator and the discriminator
#
# ![A conditional GAN for virtual staining: the generator G maps a phase image x to a virtual stain G(x); the discriminator D scores (x, y) and (x, G(x)) pairs patch by patch](imgs/conditional_gan.svg)
#
# A *conditional* GAN's discriminator never sees a stain alone: it sees the phase image and a
# stain side by side (two channels) and decides whether the stain belongs to that phase image.
# A sharp but wrong stain is therefore as easy to reject as a blurry one.
#
# **The generator** of Pix2PixHD is coarse-to-fine. The *global generator* G1 is an
# encoder, a stack of residual blocks and a decoder. For large images a *local enhancer* G2
# wraps G1: G1 works on a half-resolution copy and G2 adds detail at full resolution. Here the
# images are small enough for G1 alone (`netG="global"`); set `model.netG=local` to add G2.
#
# ![Pix2PixHD's coarse-to-fine generator: the global generator G1 at half resolution, the local enhancer G2 at full resolution, joined by an element-wise sum](imgs/coarse_to_fine_generator.svg)
#
# **The discriminator** is three PatchGANs with the same architecture on the image pair at
# full, half and quarter resolution. Each returns a grid of scores, one per patch, rather
# than one number: the finest judges texture, the coarsest the layout of whole nuclei.

# %%
from pix2pixhd.checkpoint import channel_counts, discriminator_from_config, generator_from_config
from pix2pixhd.networks import count_parameters

input_nc, output_nc = channel_counts(config)
generator = generator_from_config(config.model, input_nc, output_nc)
discriminator = discriminator_from_config(config.model, input_nc + output_nc)
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
#
# ### 1.5 The losses
#
# ![The multi-scale discriminator D1, D2, D3 at full, 1/2 and 1/4 resolution, and the feature-matching loss over their intermediate features](imgs/multiscale_discriminator.svg)
#
# Pix2PixHD trains with three terms (x: phase, y: real stain, k: discriminator scale):
#
# - **LSGAN, discriminator**: $\frac12 \sum_k \big[(D_k(x,y)-1)^2 + D_k(x,G(x))^2\big]$, each
#   averaged over the patch scores: real pairs should score 1, fake pairs 0.
# - **LSGAN, generator**: $\sum_k (D_k(x,G(x))-1)^2$: the generator wants its fakes scored 1.
# - **Feature matching**, weighted by $\lambda_{feat}=10$: the L1 distance between the
#   discriminator's intermediate features on the real pair and on the fake pair, each scale
#   weighted $1/\text{num\_D}$ and each layer $4/(\text{n\_layers\_D}+1)$. It asks the generator
#   to produce images that *look the same to the discriminator* at every depth, which steadies
#   training far more than the adversarial term alone.
#
# Least squares rather than the original GAN's cross-entropy gives gradients that do not vanish
# when the discriminator is confident, another help for stability.
#
# <div class="alert alert-info">
# Task 1.2: write the feature-matching loss. <code>real</code> and <code>fake</code> are lists
# (one per scale) of lists (one per layer) of feature maps; the last entry of each scale is
# the patch scores, which belong to the GAN loss, not to feature matching. The real features
# are targets: no gradient may flow into them.
# </div>

# %% tags=["task"]
def my_feature_matching_loss(real, fake, n_layers_D, num_D):
    """Weighted L1 distance between D's intermediate features on real and fake pairs."""
    loss = 0.0
    ...  # TODO: loop over scales and layers (all but the last of each scale)
    return loss


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
from pix2pixhd.losses import discriminator_loss, feature_matching_loss, gan_loss

with torch.no_grad():
    real_features = discriminator(torch.cat([phase, target], dim=1))
    fake_features = discriminator(torch.cat([phase, fake], dim=1))
options = {"n_layers_D": config.model.n_layers_D, "num_D": config.model.num_D}
yours = my_feature_matching_loss(real_features, fake_features, **options)
reference = feature_matching_loss(real_features, fake_features, **options)
print(f"feature matching: yours {float(yours):.5f}, the module's {float(reference):.5f}")
assert torch.isclose(torch.as_tensor(yours), reference, rtol=1e-5)

loss_D, loss_D_real, loss_D_fake = discriminator_loss(real_features, fake_features)
print(f"untrained networks on one batch: G_GAN {gan_loss(fake_features, True):.3f}, "
      f"G_GAN_Feat {config.loss.lambda_feat * reference:.3f} (x lambda_feat), "
      f"D_real {loss_D_real:.3f}, D_fake {loss_D_fake:.3f}")

# %% [markdown]
# ### 1.6 Train for a while
#
# The `Trainer` runs the loop of `pix2pixhd/train.py`; read its `train_step`, it is short. Each
# step computes the fake stain, scores the real and the fake pair with the discriminator (on a
# GPU in one pass: instance norm treats each sample alone, so that equals two passes, only
# faster), then updates G with its loss and D with its own. Adam with lr 2e-4 and
# $\beta_1=0.5$, constant and then linearly decayed, as in the paper.
#
# On a CPU (`quick`) this takes about a minute and learns where nuclei are, not what they look
# like; on a GPU (`course`) it runs longer at full size. Watch it live in TensorBoard: in
# Jupyter the next cell opens it below (`%load_ext tensorboard`, then
# `%tensorboard --logdir runs`); elsewhere run `tensorboard --logdir runs` in a terminal and
# open the address it prints.

# %%
from pix2pixhd.train import Trainer

TRAIN_EPOCHS = {"quick": config.epochs, "course": 10}[PROFILE]
config = configs.apply_overrides(config, ["train.name=my_gan", f"train.checkpoints_dir={RUNS}"])


def show_tensorboard(logdir):
    """TensorBoard inside Jupyter; a hint elsewhere (scripts, headless runs)."""
    shell = globals().get("get_ipython", lambda: None)()
    if shell is None or "IPKernelApp" not in shell.config or os.environ.get("PIX2PIXHD_HEADLESS"):
        print(f"to watch the curves: tensorboard --logdir {logdir}")
        return
    shell.run_line_magic("load_ext", "tensorboard")
    shell.run_line_magic("tensorboard", f"--logdir {logdir}")


show_tensorboard(RUNS)
trainer = Trainer(config, overwrite=True)
final = trainer.fit(epochs=TRAIN_EPOCHS)
print(f"after {TRAIN_EPOCHS} epochs ({trainer.step} steps): validation PSNR "
      f"{final['val/psnr']:.2f} dB, SSIM {final['val/ssim']:.3f}")

# %%
from pix2pixhd.logs import read_scalars
from pix2pixhd.viz import plot_predictions, plot_training_curves

my_curves = read_scalars(trainer.run_dir / "logs")
save_figure(plot_training_curves(my_curves), "my_gan_training")

from pix2pixhd.predict import load_predictor, predict_image  # noqa: E402

test_fovs = list_fovs(DATA, "test")
fov = test_fovs[0]
test_phase = read_image(DATA / "test" / "phase" / f"{fov}.tif")
test_stain = read_image(DATA / "test" / "nuclei" / f"{fov}.tif")
my_generator, _, my_normaliser = load_predictor(trainer.run_dir / "latest.pt", DEVICE)
my_prediction = predict_image(my_generator, test_phase, my_normaliser)[0]
save_figure(plot_predictions(test_phase, test_stain, {"my GAN": my_prediction}),
            "my_gan_prediction")

# %% [markdown]
# <div class="alert alert-success">
# Checkpoint 1: you have seen the data and its normalisation, built the coarse-to-fine
# generator and the multi-scale discriminator, written the feature-matching loss and trained
# a GAN. Its first stains are blotchy; the pre-trained model of the next parts trained for
# much longer with exactly this code.
# </div>
#
# ## Part 2: reading the training logs of a pre-trained model
#
# **You will learn** to read a GAN's training curves: unlike a regression loss they do not fall
# to zero, because G and D play against each other.
#
# The model in `checkpoints/pix2pixhd_nuclei` was trained with `python -m pix2pixhd train
# --config pretrained` (the command is in the README) on the same data. Its logs are in
# `checkpoints/pix2pixhd_nuclei/logs`: open them in TensorBoard, or read the same curves below.

# %%
show_tensorboard(PRETRAINED)
gan_curves = read_scalars(PRETRAINED / "pix2pixhd_nuclei" / "logs")
regression_curves = read_scalars(PRETRAINED / "regression_nuclei" / "logs")
save_figure(plot_training_curves(gan_curves), "pretrained_gan_training")
save_figure(plot_training_curves(regression_curves), "pretrained_regression_training")

last = gan_curves.sort_values("step").groupby("tag").value.last()
print(f"end of training: D on real {last['D_out/val_real']:.2f}, D on fake "
      f"{last['D_out/val_fake']:.2f} (validation); val PSNR {last['val/psnr']:.2f} dB")

# %% [markdown]
# <div class="alert alert-warning">
# Questions:
#
# - D's mean score on real pairs stays below 1 and on fakes above 0. What would it mean if
#   D_fake went to 0 and stayed there? And if D_real and D_fake met at 0.5?
# - The feature-matching term falls while the adversarial terms hover. Which of the two
#   carries most of the generator's learning signal?
# - Compare the validation PSNR of the GAN with the regression model's. Which is higher, and
#   does a higher PSNR mean a better virtual stain?
# - Which hyper-parameter would you change if D won too easily? (Think of `ndf`, `num_D`,
#   `lambda_feat`, the learning rates, dropout.)
# </div>
#
# <div class="alert alert-success">
# Checkpoint 2: you can tell a healthy GAN run (D neither wins nor loses outright, feature
# matching falls, validation metrics rise and level off) from a collapsed one.
# </div>
#
# ## Part 3: evaluating the virtual stain
#
# **You will learn** to judge a virtual stain twice: pixel by pixel against the real stain,
# and by what a biologist does with it, segmenting nuclei.
#
# Pixel metrics (data range taken from the real stain): PSNR (dB), SSIM (structure, 1 is
# perfect), Pearson r (linear agreement, blind to scale), MAE and NRMSE. Instance metrics:
# nuclei are segmented in the virtual stain (smoothing, a global threshold, a watershed to split
# touching nuclei) and matched one to one with the ground-truth masks by their overlap (IoU).
# A match above an IoU threshold is a true positive. The same segmentation of the *real*
# stain gives the best a virtual stain could reach with this segmentation.

# %%
from pix2pixhd.evaluate import evaluate_predictions, write_evaluation
from pix2pixhd.predict import predict_folder

MODELS = {"GAN": PRETRAINED / "pix2pixhd_nuclei" / "latest.pt",
          "regression": PRETRAINED / "regression_nuclei" / "latest.pt"}
predicted, tables, summaries = {}, {}, {}
for name, checkpoint in MODELS.items():
    predicted[name] = RESULTS / "predictions" / name
    predict_folder(checkpoint, DATA / "test", predicted[name], device=DEVICE)
tables["GAN"] = evaluate_predictions(predicted["GAN"], DATA / "test")
summaries["GAN"] = write_evaluation(tables["GAN"], RESULTS / "evaluation" / "GAN")
gan_summary = summaries["GAN"]
print(f"GAN on {gan_summary['n_images']} test images: PSNR {gan_summary['psnr']:.2f} dB, "
      f"SSIM {gan_summary['ssim']:.3f}, r {gan_summary['pearson']:.3f}; nuclei F1 at IoU 0.5 "
      f"{gan_summary['f1_iou50']:.3f} (real stain: {gan_summary['real_stain_f1_iou50']:.3f})")

# %% [markdown]
# <div class="alert alert-info">
# Task 3.1: for IoU thresholds of 0.5 or more, a nucleus can overlap at most one other
# nucleus by more than half of their union, so the one-to-one matching is simply "every pair
# above the threshold". Given the dense IoU matrix (true nuclei x predicted nuclei), count true
# positives, false positives and false negatives and return the F1 score.
# </div>

# %% tags=["task"]
def f1_at_iou(iou, threshold=0.5):
    """F1 of nuclei matching from an IoU matrix (n_true, n_pred), threshold >= 0.5."""
    true_positives = ...  # TODO
    false_positives = ...  # TODO
    false_negatives = ...  # TODO
    return 2 * true_positives / max(2 * true_positives + false_positives + false_negatives, 1)


# %% tags=["solution"]
def f1_at_iou(iou, threshold=0.5):
    """F1 of nuclei matching from an IoU matrix (n_true, n_pred), threshold >= 0.5."""
    true_positives = int((iou >= threshold).sum())
    false_positives = iou.shape[1] - true_positives
    false_negatives = iou.shape[0] - true_positives
    return 2 * true_positives / max(2 * true_positives + false_positives + false_negatives, 1)


# %%
from pix2pixhd.metrics import iou_matrix, match_instances
from pix2pixhd.segmentation import segment_nuclei
from pix2pixhd.viz import plot_prediction_grid, plot_segmentation_overlay

true_labels = read_mask(DATA / "test" / "nuclei_masks" / f"{fov}.tif")
gan_stain = read_image(predicted["GAN"] / "nuclei" / f"{fov}.tif")
gan_labels = segment_nuclei(gan_stain)
_, _, iou = iou_matrix(true_labels, gan_labels)
for threshold in (0.5, 0.75):
    module_f1 = match_instances(true_labels, gan_labels, [threshold])["f1"][0]
    print(f"IoU {threshold}: your F1 {f1_at_iou(iou.toarray(), threshold):.3f}, "
          f"the module's {module_f1:.3f}")
save_figure(plot_segmentation_overlay(gan_stain, true_labels, gan_labels,
                                      title=f"{fov}: nuclei in the GAN's virtual stain"),
            "gan_segmentation")

ranked = tables["GAN"].sort_values("f1_iou50")
shown = list(ranked.fov[:2]) + list(ranked.fov[-2:])
save_figure(plot_prediction_grid(
    [read_image(DATA / "test" / "phase" / f"{f}.tif") for f in shown],
    [read_image(DATA / "test" / "nuclei" / f"{f}.tif") for f in shown],
    [read_image(predicted["GAN"] / "nuclei" / f"{f}.tif") for f in shown],
    [f"{f} (F1 {ranked.set_index('fov').f1_iou50[f]:.2f})" for f in shown],
    title="GAN: the two worst and the two best test images by nuclei F1"), "gan_worst_best")

# %% [markdown]
# <div class="alert alert-warning">
# Questions: which nuclei does the GAN miss or invent in the worst images, and what do they
# look like in the phase image? Is the F1 at IoU 0.5 far from the real stain's? Why does F1
# drop faster with the IoU threshold than the real stain's does?
# </div>
#
# <div class="alert alert-success">
# Checkpoint 3: you have scored a virtual stain by pixels and by nuclei, and seen where the
# two disagree.
# </div>
#
# ## Part 4: GAN against regression
#
# **You will learn** what the objective does to a virtual stain. The regression model has
# exactly the GAN's generator, trained with an L1 loss alone (as VisCy's models are trained
# with a pixel loss). Where phase cannot decide between several plausible stains, L1 predicts
# their median: smooth and blurry. The GAN must produce something that looks real to the
# discriminator: sharp, even where it has to guess.
#
# If you have a VisCy model's predictions of these test images as TIFFs (one per field of view,
# named like the phase images), put them in `predictions/viscy/` (or point
# `PIX2PIXHD_VISCY_PREDICTIONS` at them) and they join every table and figure below.
#
# Sharpness is measured by the power spectrum: `hf_power_ratio` is the fraction of a
# prediction's spectral power above 0.1 cycles/pixel (structures smaller than 10 pixels:
# chromatin, nuclear edges) divided by the same fraction in the real stain (1 = as much fine
# detail as the real stain, below 1 = blurrier, above 1 = texture or artefacts the real stain
# does not have). Above about 0.25 cycles/pixel the real stain holds only camera noise.

# %%
from pix2pixhd.evaluate import compare_models, f1_per_threshold, radial_spectra
from pix2pixhd.viz import plot_f1_vs_threshold, plot_metric_distributions, plot_power_spectra

tables["regression"] = evaluate_predictions(predicted["regression"], DATA / "test")
summaries["regression"] = write_evaluation(tables["regression"],
                                           RESULTS / "evaluation" / "regression")
# a VisCy model's predictions of the same test images (TIFFs named like the FOVs) join in
VISCY = Path(os.environ.get("PIX2PIXHD_VISCY_PREDICTIONS", "predictions/viscy"))
if VISCY.is_dir():
    predicted["VisCy"] = VISCY
    tables["VisCy"] = evaluate_predictions(VISCY, DATA / "test")
    summaries["VisCy"] = write_evaluation(tables["VisCy"], RESULTS / "evaluation" / "VisCy")
names = {"GAN": "Pix2PixHD (GAN)", "regression": "regression (L1)", "VisCy": "VisCy"}
comparison = compare_models({names[name]: summary for name, summary in summaries.items()})
comparison.to_csv(RESULTS / "comparison.csv")
print(comparison.round(3).to_string())

save_figure(plot_metric_distributions(tables), "metric_distributions")
save_figure(plot_f1_vs_threshold({name: f1_per_threshold(t) for name, t in tables.items()}),
            "f1_vs_threshold")
save_figure(plot_power_spectra({name: radial_spectra(folder, DATA / "test")
                                for name, folder in predicted.items()}), "power_spectra")

# %%
size = test_phase.shape[0] // 3
crop = (slice(size, 2 * size), slice(size, 2 * size))
save_figure(plot_predictions(
    test_phase, test_stain,
    {name: read_image(folder / "nuclei" / f"{fov}.tif") for name, folder in predicted.items()},
    crop=crop), "gan_vs_regression")

# %% [markdown]
# <div class="alert alert-warning">
# Questions:
#
# - Which model wins on PSNR and SSIM, and which on sharpness? Why do pixel metrics reward the
#   blurry answer?
# - In the zoomed crop, find a nucleus whose texture the GAN drew but the real stain does not
#   have. Is that "hallucination" harmful for counting nuclei? For measuring DNA content?
# - Which model would you use to segment nuclei, and which to show a biologist a picture?
# - In the power spectra, up to which frequency does the GAN follow the real stain? Above it
#   the GAN's curve flattens far above the real stain's noise floor: find what makes that power
#   in the zoomed crop (look for a fine checkerboard, a known artefact of transposed
#   convolutions). What does that do to `hf_power_ratio`?
# </div>
#
# <div class="alert alert-success">
# Checkpoint 4: you can say in numbers how a GAN's virtual stain differs from a regression
# model's: sharper, with a realistic spectrum, at some cost in pixel-wise agreement.
# </div>
#
# ## Part 5 (bonus): many stains for one input with MC-dropout
#
# **You will learn** to turn one GAN into many plausible stains, and to test whether their
# spread says where the model is wrong.
#
# The generator's residual blocks contain dropout. Left on at inference, every pass drops other
# units and draws another stain (MC-dropout, Gal and Ghahramani 2016). The per-pixel standard
# deviation across samples is an uncertainty map. Is it a useful one? Three checks: does it
# rank pixels by their error (Spearman correlation, sparsification curve), and is its size
# right (calibration error after one scale factor fitted on validation images)?

# %%
from pix2pixhd.sampling import calibrate_std_scale, sample_stains
from pix2pixhd.uncertainty import (
    ause,
    evaluate_uncertainty,
    sparsification_curve,
    spearman_uncertainty_error,
    uncertainty_maps,
)
from pix2pixhd.viz import plot_mc_samples, plot_sparsification, plot_uncertainty_maps

MC = {"quick": {"samples": 16, "images": 4}, "course": {"samples": 64, "images": 40}}[PROFILE]
gan_generator, _, gan_normaliser = load_predictor(MODELS["GAN"], DEVICE)
samples = sample_stains(gan_generator, gan_normaliser, test_phase, MC["samples"], seed=0)[:, 0]
maps = uncertainty_maps(samples)
save_figure(plot_mc_samples(test_phase, samples, test_stain, crop=crop), "mc_samples")
rho = spearman_uncertainty_error(maps["std"], np.abs(maps["mean"] - test_stain))
save_figure(plot_uncertainty_maps(maps["mean"], maps["std"], test_stain, cv=maps["cv"],
                                  spearman=rho), "uncertainty_maps")

# %%
std_scale = calibrate_std_scale(gan_generator, gan_normaliser, DATA / "val",
                                n=MC["samples"], max_images=MC["images"])
mc_rows, curves = [], {}
for name in test_fovs[:MC["images"]]:
    phase_image = read_image(DATA / "test" / "phase" / f"{name}.tif")
    stain = read_image(DATA / "test" / "nuclei" / f"{name}.tif")
    stains = sample_stains(gan_generator, gan_normaliser, phase_image, MC["samples"])[:, 0]
    scores = evaluate_uncertainty(stains, stain, read_mask(
        DATA / "test" / "nuclei_masks" / f"{name}.tif"), std_scale=std_scale)
    mc_rows.append({"fov": name, **scores})
    spread = uncertainty_maps(stains)
    curves[name] = sparsification_curve(spread["std"], np.abs(spread["mean"] - stain))

import pandas as pd  # noqa: E402

mc_table = pd.DataFrame(mc_rows)
mc_table.to_csv(RESULTS / "mc_dropout.csv", index=False)
mc_summary = mc_table.drop(columns="fov").mean()
print(mc_table[["fov", "spearman_std_abs_error", "ause", "uce_unscaled", "uce",
                "nuclei_count_mean", "nuclei_count_std", "nuclei_true"]].round(3).to_string())
print(f"std scale fitted on validation images: {std_scale:.2f}")
save_figure(plot_sparsification(curves[test_fovs[0]]), "sparsification")
print(f"AUSE of {test_fovs[0]}: {ause(curves[test_fovs[0]]):.3f}")

# %% [markdown]
# <div class="alert alert-warning">
# Questions:
#
# - Where is the standard deviation high: inside nuclei, at their edges, in the background?
#   Is that where the errors are?
# - The fitted scale factor is above 1. What does that say about MC-dropout's error bars?
# - The nuclei count varies between samples. Would you report a nuclei count from one
#   virtual stain without this spread?
# - Is a low uncertainty a guarantee that a virtual stain is right? Think of a nucleus the
#   model invents in every sample.
# </div>
#
# <div class="alert alert-success">
# Checkpoint 5: you have sampled many stains from one GAN and tested whether their spread
# points at the model's errors. Uncertainty you have checked is useful; uncertainty you have
# not checked is decoration.
# </div>
#
# ## Summary
#
# The numbers of this run, also written to `results/summary.md`.

# %%
def markdown_table(table):
    """A DataFrame as a Markdown table (3 significant digits)."""
    header = "| " + " | ".join([table.index.name or "", *table.columns]) + " |"
    rule = "|" + "---|" * (len(table.columns) + 1)
    rows = ["| " + " | ".join([str(index), *(f"{v:.3g}" for v in row)]) + " |"
            for index, row in zip(table.index, table.to_numpy())]
    return "\n".join([header, rule, *rows])


summary = "\n".join([
    f"# Virtual staining with Pix2PixHD: results ({PROFILE} profile, {DEVICE.type})",
    "",
    f"Your GAN after {TRAIN_EPOCHS} epochs: validation PSNR {final['val/psnr']:.2f} dB, "
    f"SSIM {final['val/ssim']:.3f}.",
    "",
    f"Pre-trained models on {gan_summary['n_images']} test images of `{DATA}`:",
    "",
    markdown_table(comparison),
    "",
    f"MC-dropout ({MC['samples']} samples, {len(mc_table)} images): Spearman(std, |error|) "
    f"{mc_summary['spearman_std_abs_error']:.3f}, AUSE {mc_summary['ause']:.3f}, UCE "
    f"{mc_summary['uce_unscaled']:.4g} before and {mc_summary['uce']:.4g} after scaling the "
    f"std by {std_scale:.2f}.",
    "",
])
(RESULTS / "summary.md").write_text(summary)
print(summary)
