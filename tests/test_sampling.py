import pytest
import torch
from torch import nn

from pix2pixhd.networks import build_generator
from pix2pixhd.sampling import mc_dropout, mc_dropout_samples


def tiny_generator(**options):
    torch.manual_seed(0)
    settings = dict(ngf=4, n_downsample_global=2, n_blocks_global=1, use_dropout=True,
                    dropout_p=0.5)
    return build_generator(**(settings | options))


@pytest.fixture
def generator():
    return tiny_generator()


@pytest.fixture
def phase():
    return torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))


def test_batched_samples_are_reproducible_with_a_seed_and_differ_with_another(generator, phase):
    first = mc_dropout_samples(generator, phase, 6, seed=3, batch_size=4, progress=False)
    again = mc_dropout_samples(generator, phase, 6, seed=3, batch_size=4, progress=False)
    other = mc_dropout_samples(generator, phase, 6, seed=4, batch_size=4, progress=False)
    assert first.shape == (6, 1, 32, 32)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_batched_and_sequential_samples_agree_in_distribution(generator, phase):
    # two independent batched draws show how far two estimates differ by sampling noise alone;
    # batched against sequential must differ no more than that
    n = 64
    batched = mc_dropout_samples(generator, phase, n, seed=0, batch_size=16, progress=False)
    repeat = mc_dropout_samples(generator, phase, n, seed=1, batch_size=16, progress=False)
    sequential = mc_dropout_samples(generator, phase, n, seed=2, batch_size=1, progress=False)
    for statistic in (lambda s: s.mean(0), lambda s: s.std(0)):
        noise = (statistic(batched) - statistic(repeat)).abs().mean()
        difference = (statistic(batched) - statistic(sequential)).abs().mean()
        assert noise > 0
        assert difference < 1.5 * noise


def test_sampling_leaves_the_global_rng_unchanged(generator, phase):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    mc_dropout_samples(generator, phase, 4, seed=7, batch_size=2, progress=False)
    mc_dropout_samples(generator, phase, 4, seed=7, batch_size=1, progress=False)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_samples_are_reproducible_and_leave_the_cuda_rng_unchanged(generator, phase):
    generator = generator.cuda()
    torch.cuda.manual_seed(5)
    before = torch.cuda.get_rng_state()
    first = mc_dropout_samples(generator, phase, 4, seed=3, batch_size=2, progress=False)
    again = mc_dropout_samples(generator, phase.cuda(), 4, seed=3, batch_size=2, progress=False)
    assert first.device.type == "cuda"
    assert torch.equal(first, again)
    assert torch.equal(torch.cuda.get_rng_state(), before)


def test_samples_differ_while_the_eval_forward_is_deterministic(generator, phase):
    samples = mc_dropout_samples(generator, phase, 8, progress=False)
    assert samples.std(0).mean() > 1e-3
    assert not torch.allclose(samples[0], samples[1])
    generator.eval()
    with torch.no_grad():
        assert torch.equal(generator(phase), generator(phase))


@pytest.mark.parametrize("start_in_training", [True, False])
def test_mc_dropout_turns_on_only_dropout_and_restores_every_mode(generator, start_in_training):
    generator.train(start_in_training)
    generator.model[0].training = not start_in_training  # a mixed state must come back as it was
    before = {name: m.training for name, m in generator.named_modules()}
    with mc_dropout(generator):
        for module in generator.modules():
            assert module.training == isinstance(module, nn.Dropout)
    assert {name: m.training for name, m in generator.named_modules()} == before


def test_mc_dropout_restores_modes_after_an_error(generator):
    generator.train()
    with pytest.raises(RuntimeError, match="inside"), mc_dropout(generator):
        raise RuntimeError("inside")
    assert all(module.training for module in generator.modules())


def test_batch_norm_keeps_its_running_statistics_while_sampling(phase):
    generator = tiny_generator(norm="batch").train()
    before = {k: v.clone() for k, v in generator.state_dict().items() if "running" in k}
    mc_dropout_samples(generator, phase, 4, progress=False)
    after = generator.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in before.items())


def test_generator_without_dropout_raises_a_clear_error(phase):
    generator = tiny_generator(use_dropout=False)
    with pytest.raises(ValueError, match="use_dropout"):
        mc_dropout_samples(generator, phase, 2, progress=False)
    with pytest.raises(ValueError, match="use_dropout"), mc_dropout(generator):
        pass


def test_odd_sizes_are_padded_and_cropped_back(generator):
    phase = torch.randn(1, 1, 30, 27)
    samples = mc_dropout_samples(generator, phase, 5, batch_size=2, progress=False)
    sequential = mc_dropout_samples(generator, phase, 3, batch_size=1, multiple=4,
                                    progress=False)
    assert samples.shape == (5, 1, 30, 27)
    assert sequential.shape == (3, 1, 30, 27)


def test_a_phase_without_its_batch_axis_is_rejected(generator):
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        mc_dropout_samples(generator, torch.randn(1, 32, 32), 2, progress=False)


def _identity_normaliser():
    from pix2pixhd.normalisation import DatasetNormaliser

    stats = {"phase": {"median": 0.0, "iqr": 1.0, "p_low": -1.0, "p_high": 1.0},
             "nuclei": {"median": 0.0, "iqr": 1.0, "p_low": -1.0, "p_high": 1.0}}
    return DatasetNormaliser("phase", ["nuclei"], stats)


def test_large_images_are_sampled_in_tiles_no_larger_than_the_tile_size(generator):
    import numpy as np

    from pix2pixhd.sampling import sample_stains

    sides = []
    generator.register_forward_pre_hook(lambda module, args: sides.append(args[0].shape[-2:]))
    phase = np.random.default_rng(0).standard_normal((100, 70)).astype(np.float32)
    stains = sample_stains(generator, _identity_normaliser(), phase, 3, batch_size=3,
                           tile_size=48, overlap=8)
    assert stains.shape == (3, 1, 100, 70) and np.isfinite(stains).all()
    assert len(sides) == 3 * 2 and max(max(side) for side in sides) == 48
    sides.clear()
    small = sample_stains(generator, _identity_normaliser(), phase[:40, :40], 3, seed=5,
                          batch_size=3, tile_size=48, overlap=8)
    assert len(sides) == 1  # an image within the tile size goes through whole, as before
    whole = mc_dropout_samples(generator, torch.from_numpy(phase[:40, :40])[None, None], 3,
                               seed=5, batch_size=3, progress=False)
    assert np.allclose(small, whole.numpy(), atol=1e-6)


def test_tiles_keep_the_spread_of_the_samples_in_their_overlaps():
    """Blending sample i of two tiles (independent draws) would shrink the std in overlaps."""
    import numpy as np

    from pix2pixhd.sampling import sample_stains

    pass_through = nn.Conv2d(1, 1, 1)
    nn.init.ones_(pass_through.weight)
    nn.init.zeros_(pass_through.bias)
    coin = nn.Sequential(pass_through, nn.Dropout(0.5))  # each pixel 0 or 2: std 1
    coin.size_multiple = 1
    stains = sample_stains(coin, _identity_normaliser(), np.ones((8, 96), np.float32), 400,
                           batch_size=100, tile_size=32, overlap=12)
    std_per_column = stains[:, 0].std(axis=0, ddof=1).mean(axis=0)
    assert std_per_column.min() > 0.9, std_per_column.round(2)


def test_every_sample_is_mapped_to_stain_units_before_any_spread_is_taken(generator):
    """Under the asinh map a spread in normalised units means more stain where the mean is
    bright, so `sample_stains` maps each sample back (by hand here); the std maps of
    `sample_folder` are taken over these."""
    import numpy as np

    from pix2pixhd.normalisation import DatasetNormaliser
    from pix2pixhd.sampling import sample_stains

    stats = {"phase": {"median": 5.0, "iqr": 2.0},
             "nuclei": {"p_low": 100.0, "p_high": 300.0, "p_top": 1100.0}}
    normaliser = DatasetNormaliser("phase", ["nuclei"], stats, stain_map="asinh")
    raw_phase = np.random.default_rng(1).normal(5.0, 2.0, (32, 32)).astype(np.float32)
    stains = sample_stains(generator, normaliser, raw_phase, 6, seed=3, batch_size=4)
    normalised = mc_dropout_samples(generator, torch.from_numpy(
        (raw_phase - 5.0) / 2.0)[None, None], 6, seed=3, batch_size=4, progress=False).numpy()
    # each sample by hand: s = 50 and a = 2 asinh(20) / 1.8
    by_hand = 100 + 50 * np.sinh((normalised + 1) / 2 * (2 * np.arcsinh(20) / 1.8))
    np.testing.assert_allclose(stains, by_hand, rtol=1e-5)
