"""The one interface samplers call: predicted noise and denoised latents at a timestep.

A denoiser hides how the UNet is conditioned (nothing, concatenated channels, class labels) and
which precision it runs in, so samplers only see latents x_t (B, C, H, W) and integer timesteps.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..models.unet import UNetModel


@dataclass
class EpsDenoiser:
    """Wraps an epsilon-predicting UNet trained on the discrete schedule `alphas_cumprod`."""

    unet: UNetModel
    alphas_cumprod: torch.Tensor  # (num_timesteps,) float64 on the CPU
    concat: torch.Tensor | None = None  # (B, C_extra, H, W), appended after x on channels
    class_labels: torch.Tensor | None = None  # (B,) int64
    context: torch.Tensor | None = None  # (B, L, context_dim) for cross-attention UNets
    # Classifier-free guidance: eps = eps_u + guidance_scale (eps_c - eps_u), where eps_u is predicted from
    # uncond_context (B, L, context_dim). Off when uncond_context is None.
    uncond_context: torch.Tensor | None = None
    guidance_scale: float = 1.0
    autocast: contextlib.AbstractContextManager | None = None

    def eps(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """Return the predicted noise for x_t at timestep t, in float32."""
        model_input = x if self.concat is None else torch.cat([x, self.concat.to(x.dtype)], dim=1)
        context = self.context
        guided = self.uncond_context is not None
        if guided:
            # One batch of [unconditional, conditional], as latent-diffusion's sampler builds it.
            model_input = torch.cat([model_input, model_input])
            context = torch.cat([self.uncond_context, self.context])
        timesteps = torch.full((model_input.shape[0],), t, device=x.device, dtype=torch.long)
        with self.autocast if self.autocast is not None else contextlib.nullcontext():
            extra = {} if context is None else {"context": context}
            out = self.unet(model_input, timesteps, self.class_labels, **extra).float()
        if guided:
            eps_uncond, eps_cond = out.chunk(2)
            return eps_uncond + self.guidance_scale * (eps_cond - eps_uncond)
        return out

    def __call__(self, x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (eps, denoised): the noise estimate and the implied x_0 = (x - sqrt(1 - a) eps) / sqrt(a)."""
        eps = self.eps(x, t)
        a = float(self.alphas_cumprod[t])
        denoised = (x - (1 - a) ** 0.5 * eps) / a**0.5
        return eps, denoised
