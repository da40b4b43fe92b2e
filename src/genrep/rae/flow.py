"""Flow matching in the RAE latent: the maths of stage 2 (docs/papers.md s1.10-s1.12).

Pure functions, separate from the network (as DiT keeps its diffusion maths apart). Conventions:

- Interpolant ``x_t = (1 - t) x + t eps``: ``t = 0`` is data, ``t = 1`` is pure noise.
- The network predicts the velocity ``v = d x_t / dt = eps - x``; the loss is the MSE to it.
- Training times ``t ~ logit-normal(0, 1)``, i.e. ``sigmoid(N(0, 1))``.
- Dimension-dependent schedule shift: ``alpha = sqrt(m / n)``, ``m = C*h*w`` of the latent,
  ``n = 4096``; *every* time, the training draws and the sampler grid alike, is mapped
  ``t' = alpha t / (1 + (alpha - 1) t)``. The model only ever sees shifted times.
- Sampling integrates the ODE ``dx/dt = v`` from ``t = 1`` (noise) down to ``shift(t_end)`` on
  :func:`reference_grid` (Euler, 50 points, or Heun), optionally with classifier-free guidance in
  a guidance interval or with AutoGuidance (``v = v_guide + s (v_main - v_guide)``, s = 1.42 at 256px).

Reference code (bytetriper/RAE, ``stage2/transport``) facts that these functions reproduce:

- The shift is applied after drawing ``t`` in training and to the uniform sampling grid alike.
- Its ODE grid is ``shift(1 - linspace(0, 0.999, num_steps))``: ``num_steps`` *points* (so
  ``num_steps - 1`` steps), stopping at ``shift(1e-3)`` (0.0069 for alpha = 6.93), not at 0, in
  float32: :func:`reference_grid`, the grid ``genrep rae sample`` uses (:func:`time_grid` is the
  same shape in float64 with the end given in the shifted scale, for convergence studies).
- Its logit-normal draw is truncated to ``t <= 0.999`` before the shift, which removes a mass of
  ~3e-12 of N(0, 1); :func:`sample_logit_normal` does not truncate.
- The guidance interval is tested as ``t_min <= t <= t_max`` on the shifted time the model receives,
  default (0, 1), i.e. always on. The released AutoGuidance configs (256px s = 1.42, 512px s = 1.5)
  keep that default, so AutoGuidance runs at every step there.
"""

from __future__ import annotations

import math
from typing import Callable, TypeVar

import torch
from torch import Tensor

# --- schedule shift -----------------------------------------------------------------------------


def shift_alpha(latent_shape: tuple[int, int, int], base_dim: int = 4096) -> float:
    """Shift factor ``alpha = sqrt(m / n)``, ``m = C*h*w`` of the actual latent, ``n = base_dim``.

    docs/papers.md s1.11 and s4.2: 768x16x16 (DINOv2-B, 256px) gives sqrt(196608 / 4096) = 6.93; 320x4x4 gives 1.12.
    """
    if len(latent_shape) != 3:
        raise ValueError(f"latent_shape must be (C, h, w), got {tuple(latent_shape)}")
    c, h, w = (int(s) for s in latent_shape)
    return math.sqrt(c * h * w / base_dim)


def shift_time(t: Tensor, alpha: float) -> Tensor:
    """Shifted time ``t' = alpha t / (1 + (alpha - 1) t)`` (docs/papers.md s1.11).

    Keeps 0 and 1 fixed, is increasing, and for ``alpha > 1`` moves every time towards the noise end
    (``t' >= t``). ``alpha = 1`` is the identity.
    """
    return alpha * t / (1 + (alpha - 1) * t)


_Time = TypeVar("_Time", Tensor, float)


def unshift_time(t_shifted: _Time, alpha: float) -> _Time:
    """Inverse of :func:`shift_time`: ``t = t' / (alpha - (alpha - 1) t')``."""
    return t_shifted / (alpha - (alpha - 1) * t_shifted)


# --- interpolant and training objective -----------------------------------------------------------


def _per_sample(t: Tensor, x: Tensor) -> Tensor:
    """``t`` of shape [B] (or a scalar) viewed as [B, 1, ..., 1] to broadcast against ``x``."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t if t.dim() == 0 else t.reshape(-1, *([1] * (x.dim() - 1)))


def interpolate(x: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """Linear interpolant ``x_t = (1 - t) x + t eps`` (docs/papers.md s1.10), ``t`` of shape [B]; t = 1 is noise."""
    t = _per_sample(t, x)
    return (1 - t) * x + t * noise


def velocity_target(x: Tensor, noise: Tensor) -> Tensor:
    """Regression target ``v = d x_t / dt = eps - x`` (docs/papers.md s1.10)."""
    return noise - x


def sample_logit_normal(
    batch: int, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None, device=None
) -> Tensor:
    """``t = sigmoid(z)``, ``z ~ N(mean, std^2)``, shape [batch] (docs/papers.md s1.10: logit-normal(0, 1))."""
    if device is None and generator is not None:
        device = generator.device
    z = torch.randn(batch, generator=generator, device=device)
    return torch.sigmoid(z * std + mean)


def training_times(batch: int, alpha: float, generator: torch.Generator | None = None, device=None) -> Tensor:
    """Training times: logit-normal(0, 1) draws mapped through :func:`shift_time` with ``alpha``."""
    return shift_time(sample_logit_normal(batch, generator=generator, device=device), alpha)


def flow_matching_loss(
    model_fn: Callable[[Tensor, Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    alpha: float,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """Flow-matching loss ``E_{t, eps} || v_hat(x_t, t, y) - (eps - x) ||^2``, averaged over all elements.

    ``t`` comes from :func:`training_times` (shifted logit-normal) and ``eps ~ N(0, I)``, both drawn with
    ``generator`` (on its device) and moved to ``x``'s device, unless given. ``model_fn(x_t, t, y)``
    returns the velocity.
    """
    device = generator.device if generator is not None else x.device
    if t is None:
        t = training_times(x.shape[0], alpha, generator=generator, device=device)
    t = t.to(x.device, x.dtype)
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    noise = noise.to(x.device, x.dtype)
    v_hat = model_fn(interpolate(x, noise, t), t, y)
    return torch.mean((v_hat - velocity_target(x, noise)) ** 2)


# --- sampling -----------------------------------------------------------------------------------------


def time_grid(steps: int, alpha: float, t_end: float = 0.0) -> Tensor:
    """``steps + 1`` times from 1 down to ``t_end``: uniform, then shifted with :func:`shift_time`.

    The uniform grid runs from 1 to ``unshift_time(t_end)`` so that, after the shift, the grid ends
    exactly at ``t_end`` (a time in the shifted scale the model sees). The default ``t_end = 0`` integrates
    all the way to data. The reference stops at ``shift_time(1e-3, alpha)`` instead, with
    ``num_steps - 1`` steps (module docstring). float64, so that both endpoints are exact.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0.0 <= t_end < 1.0:
        raise ValueError(f"t_end must be in [0, 1), got {t_end}")
    u_end = unshift_time(t_end, alpha)
    grid = shift_time(torch.linspace(1.0, u_end, steps + 1, dtype=torch.float64), alpha)
    grid[0], grid[-1] = 1.0, t_end
    return grid


def reference_grid(points: int, alpha: float, t_end: float = 1e-3) -> Tensor:
    """The sampler's time grid, exactly the reference's (``stage2/transport/integrators.py`` ``ode``):
    ``shift(1 - linspace(0, 1 - t_end, points))`` in float32, i.e. ``points`` times (``points - 1``
    solver steps) from 1 down to ``shift(t_end)``. The reference's ``t_end`` is 1/1000
    (``transport.py`` ``check_interval``), so its 50-point grid at 256 px ends at 0.0069;
    ``t_end = 0`` integrates all the way to the data."""
    if points < 2:
        raise ValueError(f"the grid needs at least 2 points, got {points}")
    if not 0.0 <= t_end < 1.0:
        raise ValueError(f"t_end must be in [0, 1), got {t_end}")
    t = 1 - torch.linspace(0.0, 1.0 - t_end, points)
    return alpha * t / (1 + (alpha - 1) * t)


def _times(t: float, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)


@torch.no_grad()
def euler_sample(velocity_fn: Callable[[Tensor, Tensor], Tensor], noise: Tensor, grid: Tensor) -> Tensor:
    """Euler for ``dx/dt = v`` from ``grid[0] = 1`` (``x = noise``) to ``grid[-1]``.

    ``x_{k+1} = x_k + (t_{k+1} - t_k) v(x_k, t_k)``, with ``t_{k+1} < t_k``; ``velocity_fn(x, t)`` gets
    ``t`` as a [B] tensor. One evaluation per step.
    """
    x = noise
    ts = [float(t) for t in grid]
    for t_cur, t_next in zip(ts[:-1], ts[1:]):
        x = x + (t_next - t_cur) * velocity_fn(x, _times(t_cur, x))
    return x


@torch.no_grad()
def heun_sample(velocity_fn: Callable[[Tensor, Tensor], Tensor], noise: Tensor, grid: Tensor) -> Tensor:
    """Heun (2nd order) for ``dx/dt = v`` from ``grid[0] = 1`` (noise) to ``grid[-1]``, as torchdiffeq's
    fixed-grid ``heun2`` that the reference's ``sampling_method: heun2`` runs.

    ``h = t_{k+1} - t_k``, ``v1 = v(x_k, t_k)``, ``v2 = v(x_k + h v1, t_k + h)``,
    ``x_{k+1} = x_k + h (v1 / 2 + v2 / 2)``; the step and the second time are computed in the grid's
    dtype in that order (as torchdiffeq does), so that a float32 grid reproduces it exactly. As in
    EDM (Karras et al. 2022), a step that ends at exactly ``t = 0`` is a plain Euler step: the velocity
    at ``t = 0`` is never evaluated (it is singular for a point-mass data distribution and barely
    trained); the reference grid ends at ``t > 0``, where every step is a Heun step.
    """
    x = noise
    for k in range(len(grid) - 1):
        t_cur, t_next = grid[k], grid[k + 1]
        h = t_next - t_cur
        v_cur = velocity_fn(x, _times(float(t_cur), x))
        if float(t_next) == 0.0:
            x = x + float(h) * v_cur
        else:
            v_next = velocity_fn(x + float(h) * v_cur, _times(float(t_cur + h), x))
            x = x + float(h) * (v_cur * 0.5 + v_next * 0.5)
    return x


# --- guidance -----------------------------------------------------------------------------------------


def cfg_velocity(v_cond: Tensor, v_uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance ``v = v_u + s (v_c - v_u)``, in the reference's order of operations
    (``DDT.py`` ``forward_with_cfg``)."""
    return v_uncond + scale * (v_cond - v_uncond)


def guidance_active(t: Tensor | float, interval: tuple[float, float]) -> bool | Tensor:
    """Whether guidance applies at ``t``: ``lo <= t <= hi`` (guidance interval, Kynkaanniemi et al. 2024).

    ``t`` is the shifted flow time the model receives, with ``t = 1`` pure noise and ``t = 0`` data
    (the reference's convention and test). A float gives a bool, a tensor a bool tensor of its shape.
    """
    lo, hi = interval
    if not lo <= hi:
        raise ValueError(f"guidance interval must be (lo, hi) with lo <= hi, got {interval}")
    if isinstance(t, Tensor):
        return (t >= lo) & (t <= hi)
    return lo <= t <= hi


def autoguidance_velocity(v_main: Tensor, v_guide: Tensor, scale: float) -> Tensor:
    """AutoGuidance ``v = v_guide + s (v_main - v_guide)`` (docs/papers.md s1.12: s = 1.42 at 256px,
    guide = a smaller/earlier model, DiT^DH-S), in the reference's order of operations (``DDT.py``
    ``forward_with_autoguidance``)."""
    return v_guide + scale * (v_main - v_guide)


def make_guided_velocity(
    model: Callable[[Tensor, Tensor, Tensor], Tensor],
    y: Tensor,
    *,
    guidance: str = "none",
    scale: float = 1.0,
    interval: tuple[float, float] = (0.0, 1.0),
    guide_model: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
    null_class: int | None = None,
) -> Callable[[Tensor, Tensor], Tensor]:
    """The ``velocity_fn(x, t)`` for :func:`euler_sample` / :func:`heun_sample`; ``model(x, t, y)``, t of shape [B].

    - ``"none"``: ``model(x, t, y)``.
    - ``"cfg"``: conditional and unconditional (label ``null_class``) predictions from *one* call on the
      doubled batch, combined with :func:`cfg_velocity` where ``t`` is in ``interval``; the conditional
      prediction elsewhere.
    - ``"autoguidance"``: :func:`autoguidance_velocity` of ``model`` and ``guide_model`` (both
      class-conditional, same ``x, t, y``) where ``t`` is in ``interval``; ``model`` elsewhere. The
      reference's AutoGuidance configs use the default interval (0, 1), i.e. guidance at every step.

    The extra forward pass is skipped when no sample of the batch is inside the interval, or when
    ``scale == 1`` (guidance is then the identity); the result is the same.
    """
    if guidance not in ("none", "cfg", "autoguidance"):
        raise ValueError(f"unknown guidance '{guidance}' (none, cfg, autoguidance)")
    if guidance == "cfg" and null_class is None:
        raise ValueError("cfg needs null_class, the label of the unconditional (dropped) class")
    if guidance == "autoguidance" and guide_model is None:
        raise ValueError("autoguidance needs guide_model")

    def plain(x: Tensor, t: Tensor) -> Tensor:
        return model(x, t, y)

    if guidance == "none" or scale == 1.0:
        return plain

    def guided(x: Tensor, t: Tensor) -> Tensor:
        active = guidance_active(t, interval)
        assert isinstance(active, Tensor)  # t is a tensor
        if not bool(active.any()):
            return model(x, t, y)
        if guidance == "cfg":
            assert null_class is not None  # checked above
            y_null = torch.full_like(y, null_class)
            v_cond, v_uncond = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y_null])).chunk(2)
            v_guided = cfg_velocity(v_cond, v_uncond, scale)
        else:
            assert guide_model is not None  # checked above
            v_cond = model(x, t, y)
            v_guided = autoguidance_velocity(v_cond, guide_model(x, t, y), scale)
        return torch.where(active.reshape(-1, *([1] * (v_cond.dim() - 1))), v_guided, v_cond)

    return guided


def class_balanced_labels(n: int, num_classes: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` labels in shuffled order where every class appears ``floor(n/K)`` or ``ceil(n/K)`` times.

    ADM-style class-balanced sampling for FID (docs/papers.md s1.14). The ``n mod K`` extra labels go to distinct,
    randomly chosen classes (the reference requires ``K | n`` and draws any remainder with replacement).
    """
    if n < 0 or num_classes < 1:
        raise ValueError(f"need n >= 0 and num_classes >= 1, got n={n}, num_classes={num_classes}")
    device = generator.device if generator is not None else None
    base = torch.arange(num_classes, device=device).repeat(n // num_classes)
    extra = torch.randperm(num_classes, generator=generator, device=device)[: n % num_classes]
    labels = torch.cat([base, extra])
    return labels[torch.randperm(n, generator=generator, device=device)]
