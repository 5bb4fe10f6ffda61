import logging
import time

import pytest
import torch

from pix2pixhd import config_files
from pix2pixhd.checkpoint import load_checkpoint
from pix2pixhd.cli import main
from pix2pixhd.config import (
    PRESETS,
    Config,
    ConfigError,
    apply_overrides,
    from_dict,
    load_config,
    save_config,
    saved_config,
    to_dict,
    validate,
)
from pix2pixhd.models import MAX_PARAMETERS
from pix2pixhd.train import Trainer


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_survives_a_yaml_round_trip(name, tmp_path):
    config = load_config(name)
    save_config(config, tmp_path / "run.yaml")
    assert to_dict(load_config(tmp_path / "run.yaml")) == to_dict(config)


def test_course_preset_is_the_course_gpu_configuration():
    model = load_config("course").model
    assert (model.netG, model.ngf, model.n_downsample_global, model.n_blocks_global) == (
        "global", 64, 4, 9)
    assert (model.ndf, model.num_D, model.use_dropout) == (32, 3, True)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_map_stains_by_asinh_and_a_config_without_the_option_is_linear(name):
    """Checkpoints written before data.stain_map existed were trained with the linear map."""
    assert load_config(name).data.stain_map == "asinh"
    values = to_dict(load_config(name))
    del values["data"]["stain_map"]
    assert from_dict(values).data.stain_map == "linear"


def test_overrides_parse_values_by_the_field_type():
    config = apply_overrides(
        load_config("quick"),
        ["train.lr=1e-4", "model.ngf=32", "model.use_dropout=false",
         "data.target_channels=nuclei,membrane", "loss.lambda_feat=5"],
    )
    assert config.train.lr == pytest.approx(1e-4)
    assert config.model.ngf == 32
    assert config.model.use_dropout is False
    assert config.data.target_channels == ["nuclei", "membrane"]
    assert isinstance(config.loss.lambda_feat, float)


def test_overrides_leave_the_original_untouched():
    config = load_config("quick")
    apply_overrides(config, ["model.ngf=48"])
    assert config.model.ngf == 16


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.ngff=3", "model.ngff"),
        ("modle.ngf=3", "modle"),
        ("model.ngf=abc", "model.ngf expects int"),
        ("model.ngf", "section.key=value"),
        ("model.use_dropout=3", "model.use_dropout expects bool"),
        ("model.kind=diffusion", "not one of gan, regression"),
        ("data.stain_map=log", "not one of linear, asinh"),
        ("train.save_every=0", "train.save_every=0 must be at least 1"),
        ("train.niter=-3", "train.niter=-3 must be at least 0"),
        ("data.batch_size=0", "data.batch_size=0 must be at least 1"),
        ("train.name=..", "train.name '..' is not a plain name"),
        ("train.name=../escape", "train.name '../escape' is not a plain name"),
        ("train.name=/abs/path", "train.name '/abs/path' is not a plain name"),
        ("data.target_channels=[../../../x]", "data.target_channels '../../../x' is not a plain"),
    ],
)
def test_bad_overrides_name_the_option(override, words):
    with pytest.raises(ConfigError, match=words):
        apply_overrides(load_config("quick"), [override])


def test_unknown_yaml_keys_are_refused():
    with pytest.raises(ConfigError, match="train.epochz"):
        from_dict({"train": {"epochz": 3}})


def test_missing_config_file_says_what_is_accepted(tmp_path):
    with pytest.raises(ConfigError, match="quick"):
        load_config(tmp_path / "nope.yaml")


def test_a_config_file_that_is_not_a_mapping_is_named(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- data\n- model\n")
    with pytest.raises(ConfigError, match="list.yaml holds a list, not a mapping"):
        load_config(path)
    path.write_text("train: 3\n")
    with pytest.raises(ConfigError, match="section 'train' holds 3, not a mapping"):
        load_config(path)


def test_channel_names_read_from_a_checkpoint_are_checked():
    """A checkpoint's config goes through from_dict, so its names are checked like options."""
    with pytest.raises(ConfigError, match="not a plain name"):
        from_dict({"data": {"target_channels": ["../../../x"]}})


# --- bounds beside each field -------------------------------------------------------------


@pytest.mark.parametrize(
    "override, words",
    [
        ("loss.l1_blur_sigma=-4", "loss.l1_blur_sigma=-4.0 must be at least 0"),
        ("loss.l1_blur_sigma=-1", "loss.l1_blur_sigma=-1.0 must be at least 0"),
        ("model.dropout_p=3.0", "model.dropout_p=3.0 must be at least 0 and below 1"),
        ("train.lr=-1", "train.lr=-1.0 must be above 0"),
        ("train.lr=0", "train.lr=0.0 must be above 0"),
        ("train.beta2=1", "train.beta2=1.0 must be at least 0 and below 1"),
        ("train.seed=-1", "train.seed=-1 must be at least 0 and at most 4294967295"),
        (f"train.seed={2**70}", f"train.seed={2**70} must be at least 0 and at most"),
        ("train.lr=.nan", "train.lr=nan must be a finite number"),
        ("train.lr=nan", "train.lr=nan must be a finite number"),
        ("loss.lambda_feat=.inf", "loss.lambda_feat=inf must be a finite number"),
        ("loss.lambda_feat=ten", "loss.lambda_feat expects float, got 'ten'"),
        ("model.dims=[32,-64,128,256]", "model.dims entry=-64 must be at least 1"),
    ],
)
def test_bounds_beside_each_field_refuse_values_out_of_range(override, words):
    with pytest.raises(ConfigError, match=words):
        apply_overrides(load_config("quick"), [override])


def test_a_number_written_as_a_string_is_read_as_one():
    """YAML reads 1e-4 (no dot) as a string; a float field takes it as the number it spells."""
    assert apply_overrides(load_config("quick"), ["train.lr=1e-4"]).train.lr == 1e-4
    assert from_dict({"loss": {"lambda_l1": "20"}}).loss.lambda_l1 == 20.0


def _blur_sigma_in_a_preset():
    config = load_config("quick")
    config.loss.l1_blur_sigma = -4
    return config


@pytest.mark.parametrize("entry", ["preset", "file", "set", "dict", "trainer"])
def test_every_way_in_runs_the_same_validation(entry, tmp_path, monkeypatch):
    """Presets, YAML files, --set, checkpoint dicts and the Trainer all call `validate`."""
    words = "loss.l1_blur_sigma=-4.0 must be at least 0"
    with pytest.raises(ConfigError, match=words):
        if entry == "preset":
            monkeypatch.setitem(PRESETS, "broken", _blur_sigma_in_a_preset)
            load_config("broken")
        elif entry == "file":
            (tmp_path / "run.yaml").write_text("loss:\n  l1_blur_sigma: -4\n")
            load_config(tmp_path / "run.yaml")
        elif entry == "set":
            apply_overrides(load_config("quick"), ["loss.l1_blur_sigma=-4"])
        elif entry == "dict":
            from_dict({"loss": {"l1_blur_sigma": -4}})
        else:
            config = apply_overrides(load_config("quick"), [
                f"train.checkpoints_dir={tmp_path}", "train.name=refused"])
            config.loss.l1_blur_sigma = -4  # changed by assignment, as a notebook might
            Trainer(config, loaders=([], []))
    assert not (tmp_path / "refused").exists()


def test_a_config_file_with_a_bad_value_is_named(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  dropout_p: 3.0\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: model\.dropout_p=3\.0 must be"):
        load_config(path)


# --- options that must agree --------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["data.crop_size=100"], r"data\.crop_size=100 is not a multiple of 8 "
         r"\(2\*\*model\.n_downsample_global\).*use data\.crop_size=96 or 104"),
        (["data.val_crop_size=100"], r"data\.val_crop_size=100 is not a multiple of 8"),
        (["model.netG=local", "data.crop_size=136"],
         r"data\.crop_size=136 is not a multiple of 16 \(2\*\*\(model\.n_downsample_global \+ "
         r"model\.n_local_enhancers\)\)"),
        (["model.kind=viscy", "data.crop_size=40"],
         r"data\.crop_size=40 is not a multiple of 16 \(model\.stem_kernel_size"),
        (["model.kind=viscy", "model.dims=[8,16,32]"],
         "model.dims has 3 entries and model.encoder_blocks 4"),
        (["data.crop_size=16"], r"data\.crop_size=16 leaves 4 pixels to the coarsest of "
         r"model\.num_D=3 discriminator scales.*model\.num_D"),
        (["data.target_channels=[phase]"], "includes the input channel 'phase'"),
        (["data.target_channels=nuclei,nuclei"], "names nuclei more than once"),
        (["data.target_channels=[]"], "data.target_channels is empty"),
        (["loss.lambda_vgg=1"], "loss.lambda_vgg=1.0 needs the VGG19 weights"),
    ],
)
def test_options_that_must_agree_name_the_one_to_change(overrides, words):
    with pytest.raises(ConfigError, match=words):
        apply_overrides(load_config("quick"), overrides)


def test_a_regression_model_takes_crops_its_discriminator_free_generator_can():
    """D's scales limit the crop of the GAN only."""
    config = apply_overrides(load_config("quick"), ["model.kind=regression",
                                                    "data.crop_size=16"])
    assert config.data.crop_size == 16


@pytest.mark.parametrize(
    "override, words",
    [
        ("loss.l1_blur_sigma=-1", "loss.l1_blur_sigma=-1.0 must be at least 0"),
        ("data.target_channels=[phase]", "includes the input channel 'phase'"),
        ("data.target_channels=nuclei,nuclei", "names nuclei more than once"),
    ],
)
def test_train_refuses_a_bad_option_in_one_line_before_it_writes(override, words, tmp_path,
                                                                  capsys):
    runs = tmp_path / "runs"
    assert main(["train", "--data", str(tmp_path / "data"), "--checkpoints-dir", str(runs),
                 "--set", override]) == 2
    error = capsys.readouterr().err
    assert words in error and error.count("\n") == 1
    assert not runs.exists()


# --- options the chosen kind does not use -------------------------------------------------


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_options_the_kind_ignores_get_one_warning_line(caplog):
    with caplog.at_level(logging.WARNING, logger="pix2pixhd.config"):
        apply_overrides(load_config("quick"), [
            "model.kind=regression", "loss.lambda_feat=5", "model.ndf=8", "model.ngf=8"])
    (line,) = _warnings(caplog)
    assert line == ("model.kind=regression does not use model.ndf=8, loss.lambda_feat=5.0; "
                    "these values are ignored")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pix2pixhd.config"):
        apply_overrides(load_config("quick"), ["model.kind=viscy", "model.ngf=32"])
    assert _warnings(caplog) == [
        "model.kind=viscy does not use model.ngf=32; these values are ignored"]


def test_presets_and_their_own_values_do_not_warn(caplog, tmp_path):
    """Only a value someone chose warns: not a preset's, nor one a --set left as it was."""
    with caplog.at_level(logging.WARNING, logger="pix2pixhd.config"):
        for name in PRESETS:
            config = apply_overrides(load_config(name), ["model.kind=regression"])
            save_config(config, tmp_path / "regression.yaml")
            load_config(tmp_path / "regression.yaml")
    assert _warnings(caplog) == []


def test_a_file_that_sets_an_ignored_option_warns(caplog, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  kind: regression\n  num_D: 2\n")
    with caplog.at_level(logging.WARNING, logger="pix2pixhd.config"):
        load_config(path)
    assert _warnings(caplog) == [
        "model.kind=regression does not use model.num_D=2; these values are ignored"]


# --- network sizes before allocation ------------------------------------------------------


@pytest.mark.parametrize(
    "override, option",
    [
        ("model.n_downsample_global=40", "model.n_downsample_global=40"),
        ("model.ngf=100000", "model.ngf=100000"),
        ("model.n_blocks_global=1000000000", "model.n_blocks_global=1000000000"),
        ("model.num_D=1000000000", "model.num_D=1000000000"),
        ("model.n_layers_D=1000000000", "model.n_layers_D=1000000000"),
    ],
)
def test_networks_beyond_the_parameter_bound_are_refused_before_allocation(override, option):
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"{option}.*beyond the bound of 1e\+09"):
        apply_overrides(load_config("quick"), [override])
    assert time.perf_counter() - started < 10  # arithmetic, not a network built


def test_a_viscy_network_beyond_the_bound_is_refused():
    with pytest.raises(ConfigError, match=r"model\.encoder_blocks=\[10000000, .*VisCy network"):
        apply_overrides(load_config("quick"), ["model.kind=viscy",
                                               "model.encoder_blocks=[10000000,3,9,3]"])


def test_activations_beyond_the_bound_name_the_crop_and_batch():
    with pytest.raises(ConfigError, match=r"data\.crop_size=8192 and data\.batch_size=4 make "
                       r"about \d+ GB of activations.*bound of 64 GB"):
        apply_overrides(load_config("quick"), ["data.crop_size=8192", "data.batch_size=4"])
    assert apply_overrides(load_config("course"), []).data.crop_size == 512  # about 4 GB


@pytest.mark.parametrize(
    "model, words",
    [
        ({"ngf": 100000}, "model.ngf=100000"),
        ({"n_blocks_global": 10**9}, "model.n_blocks_global=1000000000"),
        ({"n_blocks_global": 1e9}, "model.n_blocks_global expects int"),
    ],
)
def test_a_crafted_checkpoint_is_refused_before_its_network_is_built(model, words, tmp_path):
    path = tmp_path / "crafted.pt"
    torch.save({"generator": {}, "config": {"model": model}}, path)
    with pytest.raises(ConfigError, match=rf"crafted\.pt: .*{words}"):
        load_checkpoint(path)


def test_a_checkpoint_whose_config_is_a_list_is_named(tmp_path):
    path = tmp_path / "listed.pt"
    torch.save({"generator": {}, "config": ["data", "model"]}, path)
    with pytest.raises(ConfigError, match=r"listed\.pt holds a config that is a list, not a"):
        load_checkpoint(path)
    with pytest.raises(ConfigError, match="holds a config that is a str"):
        saved_config("model", "elsewhere.pt")


def test_the_size_bound_allows_the_largest_original_generator():
    """The original's local enhancer at ngf 64 on four downsamplings: 730 M parameters."""
    config = apply_overrides(load_config("course"), ["model.netG=local", "data.crop_size=256",
                                                     "data.batch_size=1"])
    assert validate(config) is config
    assert MAX_PARAMETERS == 1_000_000_000


# --- YAML: limited aliases and depth, values never shown whole -----------------------------


def _alias_bomb(levels: int = 9) -> str:
    """About 400 bytes of YAML: a list of lists whose aliases describe 9**levels items."""
    stages = ["&a0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        stages.append(f"&a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    return f"[{', '.join(stages)}]"


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    """Shown whole in an error message, this value once took 27 s and 2.8 GB."""
    path = tmp_path / "bomb.yaml"
    path.write_text(f"model:\n  dims: {_alias_bomb()}\n")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb\.yaml uses more than 16 YAML aliases"):
        load_config(path)
    with pytest.raises(ConfigError, match="the value of model.dims uses more than 16 YAML"):
        apply_overrides(load_config("quick"), [f"model.dims={_alias_bomb()}"])
    assert time.perf_counter() - started < 5


def test_deeply_nested_yaml_is_refused_without_a_recursion_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("model:\n  dims: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match=r"deep\.yaml nests values more than 16 levels deep"):
        load_config(path)
    with pytest.raises(ConfigError, match="nests values more than 16 levels"):
        apply_overrides(load_config("quick"), ["model.dims=" + "[" * 5000 + "]" * 5000])


@pytest.mark.parametrize(
    "values",
    [
        {"model": {"dims": [[list(range(100))] * 100] * 100}},  # shared lists: a million items
        {"train": {"name": "x" * 1_000_000}},  # too long for a folder name
        {"data": {"batch_size": "y" * 1_000_000}},
        {"z" * 1_000_000: {}},
    ],
)
def test_messages_never_show_a_huge_value_whole(values):
    with pytest.raises(ConfigError) as error:
        from_dict(values)
    assert len(str(error.value)) < 400


def test_defaults_are_valid_and_validate_returns_the_config():
    config = Config()
    assert validate(config) is config
    assert config_files.MAX_YAML_ALIASES == 16


def test_a_saved_run_with_a_removed_option_at_its_off_value_still_loads():
    """Runs saved while train.ema_decay existed hold it at 0.0 (off): nothing it did is lost."""
    from pix2pixhd.config import ConfigError, from_dict, load_config, to_dict

    saved = to_dict(load_config("quick"))
    saved["train"]["ema_decay"] = 0.0
    saved["loss"]["r1_gamma"] = 0.0
    assert from_dict(saved) == load_config("quick")
    saved["train"]["ema_decay"] = 0.999
    with pytest.raises(ConfigError, match=r"train.ema_decay = 0.999: the option was removed"):
        from_dict(saved)
