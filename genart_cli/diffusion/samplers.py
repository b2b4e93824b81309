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


def sample_ddim(denoiser, x: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int, eta: float = 0.0,
                noise: Callable[[], torch.Tensor] | None = None,
                callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12). eta = 0 is deterministic, eta = 1 matches DDPM's variance."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be between 0 and 1, got {eta}")
    timesteps = ddim_timesteps(steps, len(alphas_cumprod))
    for i, t in enumerate(reversed(timesteps)):
        prev_t = timesteps[len(timesteps) - 2 - i] if i < len(timesteps) - 1 else None
        a = float(alphas_cumprod[t])
        # The last step lands on alphas_cumprod[0], as latent-diffusion's sampler does.
        a_prev = float(alphas_cumprod[prev_t]) if prev_t is not None else float(alphas_cumprod[0])
        sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)) ** 0.5

        eps, denoised = denoiser(x, t)

        d = (1 - a_prev - sigma**2) ** 0.5 * eps  # direction pointing to x_t
        x = a_prev**0.5 * denoised + d
        if sigma > 0:
            if noise is None:
                raise ValueError("eta > 0 needs a noise source")
            x = x + sigma * noise()

        if callback is not None:
            callback(i + 1, len(timesteps))
    return x


SAMPLERS = {"ddim": sample_ddim}
