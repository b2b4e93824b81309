"""The discrete DDPM noise schedule that latent-diffusion models are trained with.

x_t = sqrt(alphas_cumprod[t]) * x_0 + sqrt(1 - alphas_cumprod[t]) * noise, for t in [0, num_timesteps).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass
class ScheduleConfig:
    num_timesteps: int = 1000
    linear_start: float = 0.0015
    linear_end: float = 0.0195
    # "linear" is latent-diffusion's name: betas are the squares of a linspace of square roots
    # (diffusers calls the same curve "scaled_linear").
    beta_schedule: str = "linear"

    def __post_init__(self):
        if self.beta_schedule != "linear":
            raise ValueError(f"unsupported beta_schedule {self.beta_schedule!r}; only 'linear' is implemented")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ScheduleConfig":
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown schedule config fields: {', '.join(unknown)}")
        return cls(**values)


def make_betas(cfg: ScheduleConfig) -> torch.Tensor:
    """Return betas (num_timesteps,) in float64."""
    root = torch.linspace(cfg.linear_start**0.5, cfg.linear_end**0.5, cfg.num_timesteps, dtype=torch.float64)
    return root**2


def make_alphas_cumprod(cfg: ScheduleConfig) -> torch.Tensor:
    """Return alphas_cumprod (num_timesteps,) in float64: the product of (1 - beta) up to each t."""
    return torch.cumprod(1.0 - make_betas(cfg), dim=0)
