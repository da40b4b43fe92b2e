import numpy as np
import pytest
import torch
from scipy import stats as sps

from genrep.rae.noise import add_latent_noise, sample_sigma
from genrep.rae.stats import EPS, LatentStats, RunningStats


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
