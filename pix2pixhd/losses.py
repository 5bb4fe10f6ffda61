"""The Pix2PixHD objective, as pure functions over the discriminator's per-scale outputs.

A discriminator output is `list[list[Tensor]]`: one list per scale (finest first) holding the
features of each layer, the last one the patch prediction (B, 1, h, w), a logit. The weights are
those of the original implementation (NVIDIA/pix2pixHD): the GAN terms are summed over scales,
the discriminator loss is half the sum of its real and fake terms, and the feature-matching loss
is averaged so that its scale does not grow with num_D or n_layers_D. The caller multiplies by
lambda_feat, lambda_l1, lambda_vgg.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from pix2pixhd.config import GAN_MODES

log = logging.getLogger(__name__)

Predictions = list[list[Tensor]]


def gan_loss(predictions: Predictions, target_is_real: bool, mode: str = "lsgan") -> Tensor:
    """Adversarial loss of the last feature (patch logits) of every scale, summed over scales.

    lsgan: mean squared distance to 1 (real) or 0 (fake), as Pix2PixHD.
    vanilla: binary cross-entropy on the logits (the original's sigmoid + BCE, fused for stability).
    """
    if mode not in GAN_MODES:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(GAN_MODES)}")
    if not predictions:
        raise ValueError("predictions is empty: expected one list of features per scale")
    target = 1.0 if target_is_real else 0.0
    total = predictions[0][-1].new_zeros(())
    for features in predictions:
        logits = features[-1]
        labels = torch.full_like(logits, target)
        if mode == "lsgan":
            total = total + F.mse_loss(logits, labels)
        else:
            total = total + F.binary_cross_entropy_with_logits(logits, labels)
    return total


class DiscriminatorLoss(NamedTuple):
    """The discriminator's loss (what is minimised) and its two terms (what is logged)."""

    total: Tensor
    real: Tensor
    fake: Tensor


def discriminator_loss(
    real_predictions: Predictions, fake_predictions: Predictions, mode: str = "lsgan"
) -> DiscriminatorLoss:
    """0.5 * (loss on real as real + loss on fake as fake), as the original.

    `fake_predictions` must come from a detached generator output, so that this loss trains the
    discriminator only.
    """
    real = gan_loss(real_predictions, True, mode)
    fake = gan_loss(fake_predictions, False, mode)
    return DiscriminatorLoss(0.5 * (real + fake), real, fake)


def feature_matching_loss(
    real: Predictions,
    fake: Predictions,
    n_layers_D: int,
    num_D: int,
) -> Tensor:
    """L1 distance between the discriminator's intermediate features of real and fake images.

    Sum over scales and over every layer but the last (the prediction) of
    (1 / num_D) * (4 / (n_layers_D + 1)) * mean |fake - real|. The real features are detached:
    the generator learns to match them, they are not moved towards the fake. Not multiplied by
    lambda_feat (10 in the paper): the caller does that.
    """
    if len(real) != len(fake) or len(real) != num_D:
        raise ValueError(
            f"{len(real)} real and {len(fake)} fake scales for num_D={num_D}; "
            "pass the num_D the discriminator was built with"
        )
    layer_weight = 4.0 / (n_layers_D + 1)
    scale_weight = 1.0 / num_D
    total = fake[0][0].new_zeros(())
    for real_features, fake_features in zip(real, fake, strict=True):
        if len(real_features) != n_layers_D + 2 or len(fake_features) != n_layers_D + 2:
            raise ValueError(
                f"a scale has {len(real_features)} real and {len(fake_features)} fake features; "
                f"a discriminator with n_layers_D={n_layers_D} gives {n_layers_D + 2}"
            )
        for real_feature, fake_feature in zip(real_features[:-1], fake_features[:-1], strict=True):
            distance = F.l1_loss(fake_feature, real_feature.detach())
            total = total + scale_weight * layer_weight * distance
    return total


def l1_loss(fake: Tensor, real: Tensor, blur_sigma: float = 0.0) -> Tensor:
    """Mean absolute pixel difference (B, C, H, W): the regression baseline's whole objective.

    blur_sigma > 0 compares the two images after the same Gaussian blur (sigma in pixels):
    where the nuclei are and how bright they are still count, texture finer than the blur
    hardly does, so the GAN's L1 term stops pulling that texture towards the blurry mean.
    """
    if blur_sigma > 0:
        fake, real = gaussian_blur(fake, blur_sigma), gaussian_blur(real, blur_sigma)
    return F.l1_loss(fake, real)


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Gaussian blur (B, C, H, W) with reflected borders, the kernel cut at 3 sigma."""
    radius = max(1, math.ceil(3 * sigma))
    return torchvision.transforms.functional.gaussian_blur(images, 2 * radius + 1, sigma)


# --- VGG perceptual loss ---------------------------------------------------------------------

VGG19_FILE = "vgg19-dcbb9e9d.pth"
"""File name of torchvision's ImageNet VGG19 weights (VGG19_Weights.IMAGENET1K_V1)."""
VGG_SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))
"""`vgg19().features` index ranges ending at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1."""
VGG_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
"""Deeper features count more: the original's weights."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGLoss(nn.Module):
    """Perceptual loss of Pix2PixHD: weighted L1 between frozen VGG19 features of fake and real.

    Images (B, C, H, W) in [-1, 1]; each channel is compared on its own as a grey image (repeated
    to RGB, mapped to ImageNet normalisation), so any number of stains works. The weights are read
    from a local torchvision VGG19 file; this package never downloads anything.
    """

    def __init__(self, weights_path: str | Path) -> None:
        super().__init__()
        features = _load_vgg19_features(weights_path)
        self.slices = nn.ModuleList(nn.Sequential(*features[a:b]) for a, b in VGG_SLICES)
        self.requires_grad_(False)
        self.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGLoss:
        """Stays in eval mode: the VGG is a fixed measuring instrument, not a model to train."""
        return super().train(False)

    def _to_vgg_input(self, images: Tensor) -> Tensor:
        """(B, C, H, W) in [-1, 1] -> (B * C, 3, H, W) ImageNet-normalised grey images."""
        grey = images.reshape(-1, 1, *images.shape[-2:])
        rgb = ((grey + 1.0) / 2.0).expand(-1, 3, -1, -1)
        return (rgb - self.mean) / self.std

    def _features(self, images: Tensor) -> list[Tensor]:
        x = self._to_vgg_input(images)
        features = []
        for block in self.slices:
            x = block(x)
            features.append(x)
        return features

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        fake_features = self._features(fake)
        real_features = self._features(real)
        total = fake.new_zeros(())
        for weight, f, r in zip(VGG_WEIGHTS, fake_features, real_features, strict=True):
            total = total + weight * F.l1_loss(f, r.detach())
        return total


def _load_vgg19_features(weights_path: str | Path) -> nn.Sequential:
    """`vgg19().features` with the weights of a local file: torchvision's full VGG19 state dict
    (features.* and classifier.*) or one holding only the features.* entries."""
    path = Path(weights_path) if str(weights_path) else None
    if path is None or not path.is_file():
        where = f"at {path}" if path else "(loss.vgg_weights is empty)"
        raise FileNotFoundError(
            f"VGG19 weights not found {where}. This package never downloads weights: copy "
            f"torchvision's ImageNet VGG19 file ({VGG19_FILE}, VGG19_Weights.IMAGENET1K_V1; "
            f"torch keeps it in ~/.cache/torch/hub/checkpoints/ where it was downloaded before) "
            "to that path and set loss.vgg_weights to it, or set loss.lambda_vgg=0"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    features_state = {
        key[len("features."):]: value for key, value in state.items() if key.startswith("features.")
    }
    if not features_state:
        raise ValueError(
            f"{path} has no 'features.*' entries; expected torchvision's VGG19 state dict "
            f"({VGG19_FILE})"
        )
    with torch.device("meta"):  # the shapes only: the 120M classifier weights are never made
        features = torchvision.models.vgg19(weights=None).features
    features = features.to_empty(device="cpu")
    try:
        features.load_state_dict(features_state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path} is not a VGG19 state dict: {error}") from error
    log.info("VGG19 perceptual loss: weights from %s", path)
    return features
