"""VisCy's network and loss inside our package: sizes, weights, loss, checkpoints, training."""

import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("viscy")  # the `viscy` extra; without it these tests are skipped

from viscy.translation.engine import FcmaeUNet, MixedLoss  # noqa: E402
from viscy.translation.evaluation_metrics import ms_ssim_25d  # noqa: E402
from viscy.unet.networks.fcmae import FullyConvolutionalMAE  # noqa: E402

from pix2pixhd.checkpoint import CheckpointError, architecture_differences  # noqa: E402
from pix2pixhd.config import ModelConfig, apply_overrides, load_config  # noqa: E402
from pix2pixhd.layout import (  # noqa: E402
    image_path,
    read_dataset_json,
    read_image,
    write_image,
)
from pix2pixhd.models import model_kind  # noqa: E402
from pix2pixhd.predict import load_predictor, predict_folder  # noqa: E402
from pix2pixhd.sampling import mc_dropout  # noqa: E402
from pix2pixhd.train import Trainer  # noqa: E402
from pix2pixhd.vscyto import (  # noqa: E402
    build_viscy_generator,
    infer_viscy_options,
    load_viscy_checkpoint,
    ms_ssim_scales,
    viscy_mixed_loss,
    viscy_network_options,
)
from tests.viscy_checkpoints import (  # noqa: E402
    VSCYTO2D_TINY,
    fcmae_checkpoint,
    vsunet_checkpoint,
)

TINY_VISCY = ["model.kind=viscy", "model.encoder_blocks=[1,1,1,1]", "model.dims=[8,16,32,64]",
              "model.decoder_conv_blocks=1"]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def viscy_lightning_module(model_config: dict) -> FcmaeUNet:
    return FcmaeUNet(model_config=model_config, loss_function=MixedLoss())


@pytest.mark.parametrize(("preset", "millions"), [("course", 31.2), ("quick", 3.6),
                                                  ("pretrained", 3.6)])
def test_parameter_count_matches_the_viscy_package_model(preset, millions):
    model = load_config(preset).model
    with torch.device("meta"):  # shapes only: counting needs no weights drawn
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


@pytest.mark.parametrize("saved_by", [vsunet_checkpoint, fcmae_checkpoint])
def test_published_viscy_checkpoint_predicts_nuclei_and_membrane_in_stain_units(
    tiny_dataset, tmp_path, saved_by
):
    path = tmp_path / "epoch=0-step=0.ckpt"
    module = saved_by(path)
    has_hyper = "hyper_parameters" in torch.load(path, weights_only=True)
    assert has_hyper == (saved_by is fcmae_checkpoint)

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


def test_a_checkpoint_without_hyper_parameters_equals_viscys_own_predict_step(tmp_path):
    """VSUNet saved by Lightning (the published VSCyto2D's layout): the options come from the
    weights, and the output is VisCy's predict_step's on the same normalised input."""
    module = vsunet_checkpoint(tmp_path / "vscyto2d.ckpt")
    generator, config = load_viscy_checkpoint(tmp_path / "vscyto2d.ckpt")
    assert (config.model.dims, config.model.encoder_blocks, config.data.target_channels) == (
        [8, 16, 32, 64], [1, 1, 1, 1], ["nuclei", "membrane"])
    phase = torch.randn(1, 1, 1, 64, 96, generator=torch.Generator().manual_seed(1))
    module.on_predict_start()
    with torch.no_grad():
        theirs = module.predict_step({"source": phase}, 0)[:, :, 0]
        ours = generator(phase[:, :, 0])
    assert (ours - theirs).abs().max().item() <= 1e-4


@pytest.mark.parametrize("options", [
    VSCYTO2D_TINY,
    {**VSCYTO2D_TINY, "in_channels": 2, "out_channels": 1, "encoder_blocks": [2, 1, 3],
     "dims": [8, 16, 24], "decoder_conv_blocks": 2},
    {**VSCYTO2D_TINY, "stem_kernel_size": [5, 4, 4], "in_stack_depth": 5, "out_channels": 3},
    {**VSCYTO2D_TINY, "stem_kernel_size": [1, 4, 4], "in_stack_depth": 3},
])
def test_options_are_read_from_the_weights_names_and_shapes(options):
    torch.manual_seed(0)
    weights = FullyConvolutionalMAE(**options).state_dict()
    assert infer_viscy_options(weights, "x.ckpt") == options


def test_an_in_stack_depth_the_weights_leave_open_is_named_with_its_option():
    options = {**VSCYTO2D_TINY, "stem_kernel_size": [2, 4, 4], "in_stack_depth": 4,
               "out_channels": 5}  # 4 x 5 outputs per pixel: a depth of 5 with 4 outputs fits
    weights = FullyConvolutionalMAE(**options).state_dict()
    with pytest.raises(CheckpointError, match="in_stack_depth .*--viscy-config in_stack_depth"):
        infer_viscy_options(weights, "x.ckpt")
    assert infer_viscy_options(weights, "x.ckpt", given={"in_stack_depth": 4}) == options


@pytest.mark.parametrize("dims", [["a", 16, 32, 64], [-8, 16, 32, 64], 8])
def test_non_numeric_or_negative_sizes_in_a_ckpt_give_one_line(tmp_path, dims, tiny_dataset,
                                                               capsys):
    from pix2pixhd.cli import main

    path = tmp_path / "bad.ckpt"
    fcmae_checkpoint(path)
    state = torch.load(path, weights_only=True)
    state["hyper_parameters"]["model_config"]["dims"] = dims
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"bad\.ckpt: model_config dims=") as error:
        load_viscy_checkpoint(path)
    assert "\n" not in str(error.value)
    assert main(["predict", "--checkpoint", str(path), "--input", str(tiny_dataset / "test"),
                 "--out", str(tmp_path / "pred")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_weights_of_another_network_are_refused_by_name(tmp_path):
    torch.save({"state_dict": {"model.down.0.weight": torch.zeros(1)}}, tmp_path / "unet.ckpt")
    with pytest.raises(CheckpointError, match="not VisCy's 2-D UNeXt2 / FCMAE"):
        load_viscy_checkpoint(tmp_path / "unet.ckpt")


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


def test_a_phase_folder_without_a_dataset_is_predicted_in_viscys_units(tiny_dataset, tmp_path):
    """No dataset.json: the outputs stay in VisCy's median/IQR units, and units.json says so."""
    module = vsunet_checkpoint(tmp_path / "vscyto2d.ckpt")
    folder = tmp_path / "phase_only"
    phase = read_image(image_path(tiny_dataset, "test", "phase", "fov_0000"))
    write_image(folder / "well_A1.tiff", phase)
    written = predict_folder(tmp_path / "vscyto2d.ckpt", folder, tmp_path / "pred")
    assert sorted(p.relative_to(tmp_path / "pred").as_posix() for p in written) == [
        "membrane/well_A1.tiff", "nuclei/well_A1.tiff"]
    q1, median, q3 = np.percentile(phase.astype(np.float64), [25, 50, 75])
    with torch.no_grad():
        expected = module(torch.from_numpy(((phase - median) / (q3 - q1)).astype(np.float32))[
            None, None, None])[0, 0, 0].numpy()
    np.testing.assert_allclose(read_image(tmp_path / "pred" / "nuclei" / "well_A1.tiff"),
                               expected, atol=1e-4)
    units = json.loads((tmp_path / "pred" / "units.json").read_text())
    assert units["units"] == "viscy"


def test_a_ckpt_is_normalised_per_image_whatever_normalise_says(tiny_dataset, tmp_path, caplog):
    vsunet_checkpoint(tmp_path / "vscyto2d.ckpt")
    outputs = {}
    for normalise in ("dataset", "image"):
        with caplog.at_level(logging.INFO, logger="pix2pixhd.predict"):
            written = predict_folder(tmp_path / "vscyto2d.ckpt", tiny_dataset / "test",
                                     tmp_path / normalise, normalise=normalise)
        outputs[normalise] = [read_image(p) for p in written]
        units = json.loads((tmp_path / normalise / "units.json").read_text())
        assert units["units"] == "stain"
    for dataset, image in zip(outputs["dataset"], outputs["image"], strict=True):
        np.testing.assert_array_equal(dataset, image)
    assert "normalise='image' does not apply" in caplog.text


def test_the_command_line_passes_model_config_entries_and_evaluates_viscy_units(
    tiny_dataset, tmp_path
):
    """predict --viscy-config passes model_config entries; a folder without a dataset is
    predicted in VisCy's units, and evaluate then leaves PSNR empty and keeps Pearson r. A
    network of 3-D stacks is refused by name."""
    from pix2pixhd.cli import main

    options = {**VSCYTO2D_TINY, "stem_kernel_size": [2, 2, 2], "in_stack_depth": 2}
    vsunet_checkpoint(tmp_path / "deep.ckpt", options)
    with pytest.raises(CheckpointError, match="stacks of 2 planes"):
        load_viscy_checkpoint(tmp_path / "deep.ckpt")

    vsunet_checkpoint(tmp_path / "v.ckpt")
    phase_only = tmp_path / "phase_only"
    for fov in ("fov_0000", "fov_0001"):
        write_image(phase_only / f"{fov}.tif",
                    read_image(image_path(tiny_dataset, "test", "phase", fov)))
    assert main(["predict", "--checkpoint", str(tmp_path / "v.ckpt"), "--input",
                 str(phase_only), "--out", str(tmp_path / "pred"), "--viscy-config",
                 "out_channels=2"]) == 0
    assert json.loads((tmp_path / "pred" / "units.json").read_text())["units"] == "viscy"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--data",
                 str(tiny_dataset / "test"), "--out", str(tmp_path / "eval")]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["psnr"] is None and summary["pearson"] is not None
