"""VisCy's network and loss inside our package: sizes, weights, loss, checkpoints, training."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from viscy.translation.engine import FcmaeUNet, MixedLoss
from viscy.translation.evaluation_metrics import ms_ssim_25d

from pix2pixhd.checkpoint import CheckpointError, architecture_differences
from pix2pixhd.config import ModelConfig, apply_overrides, load_config
from pix2pixhd.layout import image_path, read_dataset_json, read_image
from pix2pixhd.models import model_kind
from pix2pixhd.predict import load_predictor, predict_folder
from pix2pixhd.sampling import mc_dropout
from pix2pixhd.train import Trainer
from pix2pixhd.vscyto import (
    build_viscy_generator,
    load_viscy_checkpoint,
    ms_ssim_scales,
    viscy_mixed_loss,
    viscy_network_options,
)

TINY_VISCY = ["model.kind=viscy", "model.encoder_blocks=[1,1,1,1]", "model.dims=[8,16,32,64]",
              "model.decoder_conv_blocks=1"]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def viscy_lightning_module(model_config: dict) -> FcmaeUNet:
    return FcmaeUNet(model_config=model_config, loss_function=MixedLoss())


def write_viscy_checkpoint(path, module: FcmaeUNet) -> None:
    """The layout Lightning writes: weights under `model.`, the model_config among hparams."""
    torch.save({"epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.6.6",
                "state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)},
               path)


@pytest.mark.parametrize(("preset", "millions"), [("course", 31.2), ("quick", 3.6),
                                                  ("pretrained", 3.6)])
def test_parameter_count_matches_the_viscy_package_model(preset, millions):
    model = load_config(preset).model
    ours = build_viscy_generator(model, input_nc=1, output_nc=1)
    theirs = viscy_lightning_module(viscy_network_options(model, 1, 1))
    unused_stem = sum(b.numel() for b in ours.model.encoder.stem.conv3d.buffers())  # 2-D input
    assert count(ours) + unused_stem == count(theirs.model)
    assert count(theirs.model) / 1e6 == pytest.approx(millions, abs=0.05)


def test_course_preset_has_vscyto2d_sizes():
    model = load_config("course").model
    assert (model.encoder_blocks, model.dims, model.decoder_conv_blocks,
            model.stem_kernel_size, model.in_stack_depth) == (
        [3, 3, 9, 3], [96, 192, 384, 768], 2, [1, 2, 2], 1)


def test_viscy_options_matter_for_resuming_viscy_runs_only():
    saved_before_viscy = load_config("quick").model  # saved without VisCy options: defaults
    saved_before_viscy.dims = ModelConfig().dims
    gan = load_config("quick").model
    assert architecture_differences(saved_before_viscy, gan,
                                    model_kind("gan").architecture_options) == []
    saved, wanted = ModelConfig(kind="viscy"), load_config("quick").model
    wanted.kind = "viscy"
    assert architecture_differences(saved, wanted, model_kind("viscy").architecture_options) == [
        "dims: [96, 192, 384, 768] in the checkpoint, [32, 64, 128, 256] now"]


def test_generator_maps_2d_phase_to_stains_of_the_same_size(tiny_config):
    config = apply_overrides(tiny_config, TINY_VISCY)
    generator = build_viscy_generator(config.model, 1, 2)
    assert generator.size_multiple == 16
    assert generator(torch.randn(3, 1, 48, 32)).shape == (3, 2, 48, 32)
    with pytest.raises(ValueError, match="divisible by 16"):
        generator(torch.randn(1, 1, 40, 32))


def test_every_trainable_weight_gets_a_gradient_as_ddp_requires(tiny_config):
    generator = build_viscy_generator(apply_overrides(tiny_config, TINY_VISCY).model, 1, 1)
    generator(torch.randn(1, 1, 32, 32)).mean().backward()
    trainable = [name for name, p in generator.named_parameters() if p.requires_grad]
    assert trainable and all(generator.get_parameter(name).grad is not None for name in trainable)
    assert {"model.encoder.stem.conv3d.weight", "model.encoder.stem.conv3d.bias"} <= set(
        generator.state_dict())


def test_stack_depth_other_than_one_is_refused(tiny_config):
    config = apply_overrides(tiny_config, TINY_VISCY + ["model.in_stack_depth=5"])
    with pytest.raises(ValueError, match="in_stack_depth=5"):
        build_viscy_generator(config.model, 1, 1)


def test_viscy_lightning_weights_load_strictly_and_predict_the_same(tiny_config):
    config = apply_overrides(tiny_config, TINY_VISCY)
    theirs = viscy_lightning_module(viscy_network_options(config.model, 1, 2)).eval()
    ours = build_viscy_generator(config.model, 1, 2).eval()
    ours.load_state_dict(theirs.state_dict())  # strict: the same `model.` names
    phase = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(phase), theirs(phase[:, :, None])[:, :, 0], atol=1e-6)


def test_mixed_loss_is_viscys_own_on_images_with_room_for_five_scales():
    generator = torch.Generator().manual_seed(0)
    prediction, target = torch.rand(2, 2, 2, 176, 176, generator=generator).unbind(0)
    expected = MixedLoss(l1_alpha=0.5, ms_dssim_alpha=0.5)(prediction[:, :, None],
                                                          target[:, :, None])
    assert torch.allclose(viscy_mixed_loss(prediction, target), expected)


def test_mixed_loss_on_small_crops_uses_the_scales_that_fit_with_weights_summing_to_one():
    assert [ms_ssim_scales(n, n) for n in (10, 11, 32, 128, 175, 176, 512)] == [0, 1, 2, 4, 4,
                                                                                 5, 5]
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(2, 1, 128, 128, generator=generator)
    prediction = target + 0.1 * torch.rand(2, 1, 128, 128, generator=generator)
    assert viscy_mixed_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    betas = (0.0448, 0.2856, 0.3001, 0.2363)
    weights = tuple(b / sum(betas) for b in betas)
    ms_ssim = ms_ssim_25d(prediction[:, :, None], target[:, :, None], clamp=True, betas=weights)
    expected = 0.5 * F.l1_loss(prediction, target) + 0.5 * (1 - ms_ssim)
    assert viscy_mixed_loss(prediction, target).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="crop_size"):
        viscy_mixed_loss(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))


def test_trainer_trains_viscy_with_the_mixed_loss_and_no_discriminator(tiny_config):
    config = apply_overrides(tiny_config, TINY_VISCY + ["train.lr=2e-3", "train.beta1=0.9"])
    trainer = Trainer(config, loaders=([], []))
    assert trainer.discriminator is None
    generator = torch.Generator().manual_seed(0)
    phase = torch.randn(2, 1, 32, 32, generator=generator)
    batch = {"input": phase, "target": torch.tanh(phase)}
    first = trainer.train_step(batch)
    for _ in range(10):
        last = trainer.train_step(batch)
    assert set(first) == {"loss/G_L1_MSDSSIM"}
    assert last["loss/G_L1_MSDSSIM"] < 0.9 * first["loss/G_L1_MSDSSIM"]


def test_a_trained_viscy_run_resumes_predicts_and_has_no_dropout_to_sample(tiny_config,
                                                                         tiny_dataset, tmp_path):
    config = apply_overrides(tiny_config, TINY_VISCY)
    Trainer(config).fit(epochs=1)
    latest = tmp_path / "checkpoints" / config.train.name / "latest.pt"
    assert Trainer(config, resume=True).epoch == 1
    with pytest.raises(CheckpointError, match="dims"):
        Trainer(apply_overrides(config, ["model.dims=[8,16,32,128]"]), resume=True)
    written = predict_folder(latest, tiny_dataset / "test", tmp_path / "pred")
    assert len(written) == 2 and read_image(written[0]).shape == (64, 64)
    generator, _, _ = load_predictor(latest)
    with pytest.raises(ValueError, match="no dropout"):
        with mc_dropout(generator):
            pass


def test_published_viscy_checkpoint_predicts_nuclei_and_membrane_in_stain_units(
    tiny_dataset, tmp_path
):
    options = {"in_channels": 1, "out_channels": 2, "encoder_blocks": [1, 1, 1, 1],
               "dims": [8, 16, 32, 64], "decoder_conv_blocks": 1, "stem_kernel_size": (1, 2, 2),
               "in_stack_depth": 1, "pretraining": False}
    torch.manual_seed(0)
    module = viscy_lightning_module(options).eval()
    path = tmp_path / "epoch=0-step=0.ckpt"
    write_viscy_checkpoint(path, module)

    written = predict_folder(path, tiny_dataset / "test", tmp_path / "pred")
    fov = written[0].stem
    assert sorted(p.parent.name for p in written) == ["membrane", "membrane", "nuclei", "nuclei"]

    # the reference: per-image median/IQR phase in, median/IQR stain units out (train split's)
    phase = read_image(image_path(tiny_dataset, "test", "phase", fov))
    q1, median, q3 = np.percentile(phase.astype(np.float64), [25, 50, 75])
    with torch.no_grad():
        out = module(torch.from_numpy(((phase - median) / (q3 - q1)).astype(np.float32))[
            None, None, None])[0, :, 0].numpy()
    stats = read_dataset_json(tiny_dataset)["normalisation"]
    for index, channel in enumerate(("nuclei", "membrane")):
        expected = out[index] * stats[channel]["iqr"] + stats[channel]["median"]
        got = read_image(tmp_path / "pred" / channel / f"{fov}.tif")
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3 * stats[channel]["iqr"])


def test_viscy_checkpoint_problems_are_named(tiny_dataset, tmp_path):
    with pytest.raises(CheckpointError, match="download --viscy-model"):
        load_viscy_checkpoint(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "bare.ckpt")
    with pytest.raises(CheckpointError, match="not a VisCy Lightning checkpoint"):
        load_viscy_checkpoint(tmp_path / "bare.ckpt")
    torch.save({"state_dict": {}, "hyper_parameters": {"architecture": "2.5D",
                                                       "model_config": {}}},
               tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="2.5D"):
        load_viscy_checkpoint(tmp_path / "other.ckpt")
    (tmp_path / "flat").mkdir()
    with pytest.raises(CheckpointError, match="dataset"):
        predict_folder(tmp_path / "other.ckpt", tmp_path / "flat", tmp_path / "pred")
