import pytest

from pix2pixhd.config import (
    PRESETS,
    ConfigError,
    apply_overrides,
    from_dict,
    load_config,
    save_config,
    to_dict,
)


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
