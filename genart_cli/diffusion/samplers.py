"""Samplers over the discrete DDPM schedule. Each takes a denoiser and x_T and returns x_0.

Every sampler has the same leading parameters: (denoiser, x, alphas_cumprod, steps), then
`noise` (a function giving per-step noise shaped like x), then `callback(i, total)` for progress.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def ddim_timesteps(steps: int, num_timesteps: int = 1000) -> list[int]:
    """Return the DDIM timesteps in increasing order: 0, c, 2c, ... plus 1, with c = T // steps.

    This is latent-diffusion's uniform spacing (diffusers: "leading" with steps_offset 1). For steps
    that do not divide T, latent-diffusion keeps one extra step; here there are exactly `steps`.
    """
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be between 1 and {num_timesteps}, got {steps}")
    stride = num_timesteps // steps
    # The +1 offset would run past the schedule's end only when steps == num_timesteps.
    offset = 1 if (steps - 1) * stride + 1 < num_timesteps else 0
    return [i * stride + offset for i in range(steps)]


def ddim_step(denoiser, x: torch.Tensor, t: int, a: float, a_prev: float, eta: float,
              noise: Callable[[], torch.Tensor] | None) -> torch.Tensor:
    """Take one DDIM update from x_t (cumulative alpha a) to x_prev (a_prev)."""
    sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)) ** 0.5

    eps, denoised = denoiser(x, t)

    d = (1 - a_prev - sigma**2) ** 0.5 * eps  # direction pointing to x_t
    x = a_prev**0.5 * denoised + d
    if sigma > 0:
        if noise is None:
            raise ValueError("eta > 0 needs a noise source")
        x = x + sigma * noise()
    return x


def step_alphas(timesteps: list[int], alphas_cumprod: torch.Tensor) -> list[tuple[int, float, float]]:
    """(t, alpha_t, alpha_prev) from the last timestep down; the last step lands on alphas_cumprod[0],
    as latent-diffusion's sampler does."""
    steps = []
    for i, t in enumerate(reversed(timesteps)):
        prev_t = timesteps[len(timesteps) - 2 - i] if i < len(timesteps) - 1 else 0
        steps.append((t, float(alphas_cumprod[t]), float(alphas_cumprod[prev_t])))
    return steps


def sample_ddim(denoiser, x: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int, eta: float = 0.0,
                noise: Callable[[], torch.Tensor] | None = None,
                callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12). eta = 0 is deterministic, eta = 1 matches DDPM's variance."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be between 0 and 1, got {eta}")
    schedule = step_alphas(ddim_timesteps(steps, len(alphas_cumprod)), alphas_cumprod)
    for i, (t, a, a_prev) in enumerate(schedule):
        x = ddim_step(denoiser, x, t, a, a_prev, eta, noise)
        if callback is not None:
            callback(i + 1, len(schedule))
    return x


def sample_ddim_repaint(denoiser, x: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int, eta: float,
                        noise: Callable[[], torch.Tensor], known: torch.Tensor, mask: torch.Tensor,
                        resample: int = 1, callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """DDIM that keeps the known latent outside the mask (RePaint, Lugmayr et al. 2022).

    known: clean latents x_0 (B, C, h, w); mask: (B or 1, 1, h, w), 1 where the model paints.
    After each step the region outside the mask is replaced by `known` noised to that step. With
    resample > 1 the result is noised back one step and the step redone, resample times in all,
    so the painted region can adapt to the known one.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be between 0 and 1, got {eta}")
    schedule = step_alphas(ddim_timesteps(steps, len(alphas_cumprod)), alphas_cumprod)
    a_first = schedule[0][1]
    x = mask * x + (1 - mask) * (a_first**0.5 * known + (1 - a_first) ** 0.5 * noise())
    for i, (t, a, a_prev) in enumerate(schedule):
        for r in range(resample):
            painted = ddim_step(denoiser, x, t, a, a_prev, eta, noise)
            known_noised = a_prev**0.5 * known + (1 - a_prev) ** 0.5 * noise()
            x_prev = mask * painted + (1 - mask) * known_noised
            if r < resample - 1:
                # Noise back from a_prev to a: q(x_t | x_prev) = N(sqrt(a / a_prev) x_prev, 1 - a / a_prev).
                x = (a / a_prev) ** 0.5 * x_prev + (1 - a / a_prev) ** 0.5 * noise()
        x = x_prev
        if callback is not None:
            callback(i + 1, len(schedule))
    return x


SAMPLERS = {"ddim": sample_ddim}
