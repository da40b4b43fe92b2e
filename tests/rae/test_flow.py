import math

import pytest
import torch
from scipy import stats as sps
from scipy.special import logit

from genrep.rae.flow import (
    autoguidance_velocity,
    cfg_velocity,
    class_balanced_labels,
    euler_sample,
    flow_matching_loss,
    guidance_active,
    heun_sample,
    interpolate,
    make_guided_velocity,
    sample_logit_normal,
    shift_alpha,
    shift_time,
    time_grid,
    training_times,
    unshift_time,
    velocity_target,
)

# --- schedule shift -------------------------------------------------------------------------------


def test_shift_alpha_values_from_the_paper_and_small_latents():
    assert shift_alpha((768, 16, 16)) == pytest.approx(math.sqrt(196608 / 4096))
    assert shift_alpha((768, 16, 16)) == pytest.approx(6.928, abs=1e-3)
    assert shift_alpha((320, 4, 4)) == pytest.approx(1.118, abs=1e-3)
    assert shift_alpha((1280, 4, 4)) == pytest.approx(2.236, abs=1e-3)
    assert shift_alpha((1280, 7, 7)) == pytest.approx(3.9, abs=0.05)
    assert shift_alpha((64, 8, 8)) == 1.0
    with pytest.raises(ValueError):
        shift_alpha((768, 256))


@pytest.mark.parametrize("alpha", [1.118, 2.236, 6.93])
def test_shift_time_endpoints_monotone_towards_noise_and_inverse(alpha):
    t = torch.linspace(0, 1, 10001, dtype=torch.float64)
    s = shift_time(t, alpha)
    assert s[0] == 0 and s[-1] == pytest.approx(1.0, abs=1e-15)
    assert torch.all(s[1:] > s[:-1])
    assert torch.all(s[1:-1] > t[1:-1])  # more time spent near the noise end
    assert torch.allclose(s[1:-1] / (alpha - (alpha - 1) * s[1:-1]), t[1:-1], atol=1e-12)
    assert torch.allclose(unshift_time(s, alpha), t, atol=1e-12)
    assert shift_time(0.5, alpha) == pytest.approx(alpha / (1 + alpha))


def test_alpha_one_is_the_identity():
    t = torch.rand(1000, dtype=torch.float64)
    assert torch.equal(shift_time(t, 1.0), t)


# --- interpolant and loss ---------------------------------------------------------------------------


def test_interpolant_endpoints_and_velocity_is_its_time_derivative():
    g = torch.Generator().manual_seed(0)
    x, eps = (
        torch.randn(5, 3, 2, 2, generator=g, dtype=torch.float64),
        torch.randn(5, 3, 2, 2, generator=g, dtype=torch.float64),
    )
    assert torch.equal(interpolate(x, eps, torch.zeros(5)), x)
    assert torch.equal(interpolate(x, eps, torch.ones(5)), eps)
    t, h = torch.rand(5, generator=g, dtype=torch.float64) * 0.8 + 0.1, 1e-6
    fd = (interpolate(x, eps, t + h) - interpolate(x, eps, t - h)) / (2 * h)
    assert torch.allclose(fd, velocity_target(x, eps), atol=1e-8)
    # per-sample times: sample i uses t[i]
    x_t = interpolate(x, eps, t)
    assert torch.allclose(x_t[2], (1 - t[2]) * x[2] + t[2] * eps[2])


def test_loss_of_the_oracle_is_zero_and_loss_uses_the_generator_draws():
    x = torch.randn(16, 4, 2, 2, dtype=torch.float64)
    y = torch.zeros(16, dtype=torch.long)
    oracle = lambda x_t, t, y: (x_t - x) / t.view(-1, 1, 1, 1)  # eps - x recovered from x_t
    assert flow_matching_loss(oracle, x, y, alpha=2.0, generator=torch.Generator().manual_seed(1)) < 1e-20

    seen = {}

    def zero_model(x_t, t, y):
        seen["t"], seen["x_t"] = t, x_t
        return torch.zeros_like(x_t)

    loss = flow_matching_loss(zero_model, x, y, alpha=2.0, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t = training_times(16, 2.0, generator=g).double()
    eps = torch.randn(x.shape, generator=g, dtype=torch.float64)
    assert torch.allclose(seen["t"], t) and torch.allclose(seen["x_t"], interpolate(x, eps, t))
    assert loss == pytest.approx(((eps - x) ** 2).mean().item(), rel=1e-12)


# --- time distributions -------------------------------------------------------------------------------


@pytest.mark.parametrize("mean,std", [(0.0, 1.0), (0.5, 0.7)])
def test_logit_normal_matches_its_cdf(mean, std):
    t = sample_logit_normal(20000, mean, std, generator=torch.Generator().manual_seed(0)).double().numpy()
    assert t.min() > 0 and t.max() < 1
    assert sps.kstest(t, lambda u: sps.norm.cdf(logit(u), mean, std)).pvalue > 0.01


def test_training_times_are_shifted_logit_normal():
    alpha = 6.93
    t = training_times(20000, alpha, generator=torch.Generator().manual_seed(0)).double().numpy()
    shifted_cdf = lambda u: sps.norm.cdf(logit(unshift_time(u, alpha)))
    assert sps.kstest(t, shifted_cdf).pvalue > 0.01
    assert sps.kstest(t, lambda u: sps.norm.cdf(logit(u))).pvalue < 1e-6  # the unshifted law is rejected
    assert t.mean() > 0.75  # most training time near the noise end


# --- time grid and samplers ---------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 2.236, 6.93])
def test_time_grid_is_the_shifted_uniform_grid(alpha):
    grid = time_grid(50, alpha)
    assert grid.shape == (51,) and grid[0] == 1.0 and grid[-1] == 0.0
    assert torch.all(grid[1:] < grid[:-1])
    assert torch.allclose(grid, shift_time(torch.linspace(1, 0, 51, dtype=torch.float64), alpha), atol=1e-12)
    # a positive end point is hit exactly; the reference grid is shift(1 - linspace(0, 0.999, num_steps))
    t_end = shift_time(1e-3, alpha)
    ref = shift_time(1 - torch.linspace(0, 0.999, 50, dtype=torch.float64), alpha)
    grid = time_grid(49, alpha, t_end=t_end)
    assert grid[-1] == t_end and torch.allclose(grid, ref, atol=1e-12)


def gaussian_flow(m, s):
    """Exact FM velocity and solution for data N(m, s^2): x_t ~ N(mu_t, sig_t^2), x(t) = mu_t + sig_t eps."""
    sig = lambda t: torch.sqrt((1 - t) ** 2 * s**2 + t**2)

    def v(x, t):
        t = t.view(-1, *([1] * (x.dim() - 1))).to(x)
        return -m + (t - (1 - t) * s**2) / sig(t) ** 2 * (x - (1 - t) * m)

    return v, lambda eps, t: (1 - t) * m + sig(torch.tensor(t, dtype=eps.dtype)) * eps


@pytest.mark.parametrize("sampler,order", [(euler_sample, 1), (heun_sample, 2)])
def test_sampler_convergence_order_on_the_exact_gaussian_flow(sampler, order):
    m, s = 0.7, 0.3
    v, exact = gaussian_flow(m, s)
    eps = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for alpha, steps in ((1.0, (16, 32, 64)), (6.93, (64, 128, 256))):  # uniform and shifted grids
        errors = [(sampler(v, eps, time_grid(n, alpha)) - exact(eps, 0.0)).abs().max().item() for n in steps]
        for coarse, fine in zip(errors[:-1], errors[1:]):
            assert 2**order * 0.8 < coarse / fine < 2**order * 1.25
    # the samplers land on the data distribution N(m, s^2)
    assert errors[-1] < (0.05 if order == 1 else 0.005)
    # stopping early lands on the path marginal at t_end
    out = sampler(v, eps, time_grid(200, 2.0, t_end=0.2))
    assert torch.allclose(out, exact(eps, 0.2), atol=0.01)


@pytest.mark.parametrize("sampler", [euler_sample, heun_sample])
def test_point_mass_velocity_reaches_the_point_exactly(sampler):
    x0 = torch.tensor([[1.5, -2.0, 0.25]], dtype=torch.float64)
    v = lambda x, t: (x - x0) / t.view(-1, 1)  # exact FM velocity for data = {x0}; singular at t = 0
    eps = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for grid in (time_grid(5, 1.0), time_grid(7, 6.93)):
        out = sampler(v, eps, grid)
        assert torch.isfinite(out).all() and torch.allclose(out, x0.expand(8, 3), atol=1e-12)


def test_heun_uses_two_evaluations_per_step_but_none_at_t_zero():
    calls = []
    v = lambda x, t: calls.append(t[0].item()) or -x
    heun_sample(v, torch.ones(2, 1), time_grid(4, 1.0))
    assert len(calls) == 7 and 0.0 not in calls
    calls.clear()
    heun_sample(v, torch.ones(2, 1), time_grid(4, 1.0, t_end=0.1))
    assert len(calls) == 8
    calls.clear()
    euler_sample(v, torch.ones(2, 1), time_grid(4, 1.0))
    assert calls == pytest.approx([1.0, 0.75, 0.5, 0.25])


# --- guidance -------------------------------------------------------------------------------------------


def test_cfg_and_autoguidance_formulas():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 3, 2, 2, generator=g), torch.randn(4, 3, 2, 2, generator=g)
    # the reference's order of operations, bit for bit (DDT.py forward_with_cfg / forward_with_autoguidance)
    assert torch.equal(cfg_velocity(a, b, 4.0), b + 4.0 * (a - b))
    assert torch.equal(autoguidance_velocity(a, b, 1.42), b + 1.42 * (a - b))
    assert torch.equal(cfg_velocity(a, b, 0.0), b)
    assert torch.allclose(cfg_velocity(a, b, 1.0), a, atol=1e-6)  # s = 1 is the conditional prediction
    assert torch.allclose(autoguidance_velocity(a, b, 1.0), a, atol=1e-6)


def test_guidance_interval_is_inclusive_in_flow_time():
    assert guidance_active(0.5, (0.2, 0.8)) and guidance_active(0.2, (0.2, 0.8))
    assert not guidance_active(0.9, (0.2, 0.8)) and not guidance_active(0.1, (0.2, 0.8))
    t = torch.tensor([0.0, 0.2, 0.5, 0.8, 1.0])
    assert guidance_active(t, (0.2, 0.8)).tolist() == [False, True, True, True, False]
    assert guidance_active(t, (0.0, 1.0)).all()


class CountingModel(torch.nn.Module):
    """v = W x + e[y] + t, with W a tiny nn.Linear over channels; records every call's batch size."""

    def __init__(self, num_classes=5, channels=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = torch.nn.Linear(channels, channels)
        self.emb = torch.nn.Embedding(num_classes + 1, channels)  # last row: the null class
        self.batches = []

    def forward(self, x, t, y):
        self.batches.append(x.shape[0])
        return self.lin(x) + self.emb(y) + t.view(-1, 1)


def test_make_guided_velocity_none_cfg_and_autoguidance():
    model, guide = CountingModel(seed=0), CountingModel(seed=1)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 4])
    t_in, t_out = torch.full((4,), 0.5), torch.full((4,), 0.9)
    with torch.no_grad():
        v_c, v_u, v_g = model(x, t_in, y), model(x, t_in, torch.full_like(y, 5)), guide(x, t_in, y)
        model.batches.clear(), guide.batches.clear()

        assert torch.equal(make_guided_velocity(model, y)(x, t_in), v_c)
        model.batches.clear()

        cfg = make_guided_velocity(model, y, guidance="cfg", scale=3.0, interval=(0.1, 0.7), null_class=5)
        assert torch.allclose(cfg(x, t_in), v_u + 3.0 * (v_c - v_u), atol=1e-5)
        assert model.batches == [8]  # cond and uncond batched in one call
        assert torch.allclose(cfg(x, t_out), model(x, t_out, y))  # outside the interval: conditional
        assert model.batches[1] == 4  # and no unconditional pass there
        t_mixed = torch.tensor([0.5, 0.9, 0.5, 0.9])
        mixed = cfg(x, t_mixed)
        assert torch.allclose(mixed[0], (v_u + 3.0 * (v_c - v_u))[0], atol=1e-5)
        assert torch.allclose(mixed[1], model(x, t_mixed, y)[1])

        model.batches.clear()
        ag = make_guided_velocity(model, y, guidance="autoguidance", scale=1.42, guide_model=guide)
        assert torch.allclose(ag(x, t_in), v_g + 1.42 * (v_c - v_g), atol=1e-5)
        assert model.batches == [4] and guide.batches == [4]
        ag_iv = make_guided_velocity(
            model, y, guidance="autoguidance", scale=1.42, interval=(0.0, 0.7), guide_model=guide
        )
        assert torch.allclose(ag_iv(x, t_out), model(x, t_out, y)) and guide.batches == [4]
        unit = make_guided_velocity(model, y, guidance="autoguidance", scale=1.0, guide_model=guide)
        assert torch.equal(unit(x, t_in), v_c) and guide.batches == [4]

    with pytest.raises(ValueError):
        make_guided_velocity(model, y, guidance="cfg", scale=2.0)
    with pytest.raises(ValueError):
        make_guided_velocity(model, y, guidance="autoguidance", scale=2.0)
    with pytest.raises(ValueError):
        make_guided_velocity(model, y, guidance="cgf")


def test_cfg_sampling_calls_the_model_once_per_euler_step():
    model = CountingModel()
    y = torch.tensor([0, 3])
    fn = make_guided_velocity(model, y, guidance="cfg", scale=1.5, interval=(0.0, 0.5), null_class=5)
    out = euler_sample(fn, torch.randn(2, 3), time_grid(10, 1.0))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    assert model.batches == [2] * 5 + [4] * 5  # t = 1.0 .. 0.6 unguided, 0.5 .. 0.1 guided


# --- labels ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,k", [(1000, 10), (1003, 10), (7, 10), (50, 1)])
def test_class_balanced_labels(n, k):
    labels = class_balanced_labels(n, k, generator=torch.Generator().manual_seed(0))
    assert labels.shape == (n,) and labels.dtype == torch.long
    counts = torch.bincount(labels, minlength=k)
    assert counts.sum() == n and counts.max() - counts.min() <= 1
    assert counts.min() == n // k and (counts > 0).sum() == min(n, k)
    again = class_balanced_labels(n, k, generator=torch.Generator().manual_seed(0))
    assert torch.equal(labels, again)


def test_class_balanced_labels_are_shuffled():
    a = class_balanced_labels(1000, 10, generator=torch.Generator().manual_seed(0))
    b = class_balanced_labels(1000, 10, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a, b) and not torch.equal(a, a.sort().values)
