import numpy as np
import pytest
import torch
from scipy import stats as sps

from genrep.core.errors import UserError
from genrep.rae.noise import add_latent_noise, sample_sigma
from genrep.rae.stats import EPS, LatentStats, RunningStats, stats_from_reference


def test_streaming_stats_equal_the_full_batch_formula_for_any_batching():
    torch.manual_seed(0)
    z = torch.randn(103, 4, 2, 2) * torch.linspace(0.5, 3, 16).view(4, 2, 2) + 5
    whole = RunningStats((4, 2, 2))
    whole.update(z)
    pieces = RunningStats((4, 2, 2))
    for chunk in torch.split(z, 17):
        pieces.update(chunk)
    expected_mean = z.double().mean(0)
    expected_var = z.double().var(0, unbiased=False)
    for r in (whole, pieces):
        assert r.count == 103
        assert torch.allclose(r.mean, expected_mean, atol=1e-12)
        assert torch.allclose(r.var, expected_var, atol=1e-10)


def test_normalise_formula_and_round_trip():
    mean, var = torch.randn(3, 2, 2), torch.rand(3, 2, 2) + 0.1
    st = LatentStats(mean, var)
    z = torch.randn(5, 3, 2, 2)
    assert torch.allclose(st.normalize(z), (z - mean) / torch.sqrt(var + 1e-5))
    assert torch.allclose(st.denormalize(st.normalize(z)), z, atol=1e-6)
    assert EPS == 1e-5


def test_normalised_latents_have_zero_mean_unit_variance():
    z = torch.randn(4000, 2, 1, 1) * torch.tensor([3.0, 0.2]).view(2, 1, 1) + torch.tensor([1.0, -4.0]).view(2, 1, 1)
    r = RunningStats((2, 1, 1))
    r.update(z)
    zn = r.result().normalize(z)
    assert torch.allclose(zn.mean(0), torch.zeros(2, 1, 1), atol=1e-5)
    assert torch.allclose(zn.var(0, unbiased=False), torch.ones(2, 1, 1), atol=1e-3)


def test_stats_survive_a_state_dict():
    st = LatentStats(torch.randn(2, 1, 1), torch.rand(2, 1, 1))
    st2 = LatentStats(torch.zeros(2, 1, 1), torch.ones(2, 1, 1))
    st2.load_state_dict(st.state_dict())
    assert torch.equal(st2.mean, st.mean) and torch.equal(st2.var, st.var)


def test_sigma_distributions_match_the_paper_and_the_reference_code():
    g = torch.Generator().manual_seed(0)
    tau = 0.8
    half_normal = sample_sigma(20000, tau, "abs-normal", generator=g).numpy()
    uniform = sample_sigma(20000, tau, "uniform", generator=g).numpy()
    # |N(0, tau^2)| is the half-normal with scale tau; tau * U(0, 1) is uniform on [0, tau]
    assert sps.kstest(half_normal, sps.halfnorm(scale=tau).cdf).pvalue > 0.01
    assert sps.kstest(uniform, sps.uniform(0, tau).cdf).pvalue > 0.01
    # and each is told apart from the other
    assert sps.kstest(half_normal, sps.uniform(0, tau).cdf).pvalue < 1e-6
    assert half_normal.mean() == pytest.approx(tau * np.sqrt(2 / np.pi), rel=0.03)
    assert uniform.max() <= tau and half_normal.max() > tau


def test_noise_is_per_sample_and_off_at_tau_zero():
    z = torch.zeros(6, 16, 4, 4)
    assert add_latent_noise(z, 0.0) is z
    g = torch.Generator().manual_seed(1)
    noisy = add_latent_noise(z, 0.8, "uniform", generator=g)
    per_sample_std = noisy.flatten(1).std(1)
    assert per_sample_std.max() <= 0.8 * 1.2 and per_sample_std.std() > 0.01  # sigmas differ per sample
    with pytest.raises(ValueError, match="unknown noise distribution"):
        sample_sigma(2, 0.8, "gamma")


def test_noise_defaults_to_the_reference_codes_uniform_sigma_in_its_token_layout():
    z = torch.randn(3, 4, 2, 2)
    g = torch.Generator().manual_seed(3)
    noisy = add_latent_noise(z, 0.8, generator=g)  # default: sigma = tau * U(0, 1)
    g = torch.Generator().manual_seed(3)
    sigma = torch.rand(3, 1, 1, generator=g) * 0.8  # rae.py:73-76 on tokens [B, h*w, C]
    tokens = z.flatten(2).transpose(1, 2)
    expected = (tokens + sigma * torch.randn(tokens.shape, generator=g)).transpose(1, 2).reshape(3, 4, 2, 2)
    assert torch.equal(noisy, expected)


def test_reference_statistics_broadcast_and_default_like_the_reference():
    c, h, w = 3, 2, 2
    mean, var = torch.randn(c, h, w), torch.rand(c, h, w) + 0.1
    st = stats_from_reference({"mean": mean, "var": var, "count": 5}, (c, h, w), "stat.pt")
    z = torch.randn(4, c, h, w)
    assert torch.equal(st.normalize(z), (z - mean) / torch.sqrt(var + 1e-5))  # rae.py:91-94
    per_channel = stats_from_reference({"mean": mean[:, :1, :1][None], "var": var[:, :1, :1]}, (c, h, w), "s")
    assert per_channel.mean.shape == (c, h, w)
    assert torch.equal(per_channel.normalize(z), (z - mean[:, :1, :1]) / torch.sqrt(var[:, :1, :1] + 1e-5))
    only_mean = stats_from_reference({"mean": mean}, (c, h, w), "s")  # absent var: 1, as rae.py:93
    assert torch.equal(only_mean.normalize(z), (z - mean) / torch.sqrt(torch.tensor(1 + 1e-5)))
    none = stats_from_reference(None, (c, h, w), "s")  # no statistics file: no normalisation
    assert torch.equal(none.normalize(z), z) and torch.equal(none.denormalize(z), z)


@pytest.mark.parametrize(
    "payload, message",
    [
        ([1, 2], "stat.pt: not a statistics file"),
        ({"mean": torch.zeros(4, 2, 2)}, "stat.pt: 'mean' has shape \\[4, 2, 2\\]"),
        ({"var": torch.zeros(3)}, "stat.pt: 'var' has shape \\[3\\]"),
        ({"mean": torch.zeros(3, 2, 2, dtype=torch.long)}, "stat.pt: 'mean' is not a floating-point tensor"),
    ],
)
def test_bad_reference_statistics_are_one_line_user_errors(payload, message):
    with pytest.raises(UserError, match=message):
        stats_from_reference(payload, (3, 2, 2), "stat.pt")
