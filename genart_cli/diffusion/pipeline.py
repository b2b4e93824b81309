"""Unconditional sampling: noise -> sampler calling the denoiser around the UNet -> decode.

Image k of a run starts from its own generator seeded with seed + k, and draws its per-step noise
from that generator too, so it is the same whatever the batch size. All noise is drawn on the CPU
in float32, so a seed gives the same starting noise on every device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from ..checkpoints.native import ModelBundle
from ..errors import ModelError
from ..latents import decode
from ..runtime.device import Runtime
from .denoiser import EpsDenoiser
from .samplers import SAMPLERS
from .schedule import make_alphas_cumprod


@dataclass
class SampleSettings:
    steps: int = 50
    eta: float = 0.0
    seed: int = 0
    sampler: str = "ddim"
    num_images: int = 1
    batch_size: int = 1


def check_can_sample(bundle: ModelBundle) -> None:
    if bundle.unet is None or bundle.autoencoder is None:
        found = "an autoencoder only" if bundle.unet is None else "a UNet without an autoencoder"
        raise ModelError(f"{bundle.path}: contains {found}; `genart sample` needs a file with both")
    if bundle.conditioning != "none" or bundle.unet.config.num_classes is not None:
        raise ModelError(f"{bundle.path}: a {bundle.conditioning}-conditioned model; `genart sample` runs "
                         "unconditional models only")


def image_noise(generators: list[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Draw one (C, H, W) standard normal sample per generator; return (B, C, H, W) on `device`."""
    return torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators]).to(device)


def sample(bundle: ModelBundle, runtime: Runtime, settings: SampleSettings,
           on_step: Callable[[int], None] | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (image index, pixels (3, H, W) in [-1, 1] on the CPU) for each requested image."""
    check_can_sample(bundle)
    if settings.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {settings.sampler!r}; choose from {', '.join(SAMPLERS)}")
    unet = bundle.unet.to(runtime.device)
    autoencoder = bundle.autoencoder.to(runtime.device)
    alphas_cumprod = make_alphas_cumprod(bundle.schedule)
    cfg = unet.config
    latent_shape = (cfg.out_channels, cfg.image_size, cfg.image_size)
    sampler = SAMPLERS[settings.sampler]

    for start in range(0, settings.num_images, settings.batch_size):
        indices = list(range(start, min(start + settings.batch_size, settings.num_images)))
        generators = [torch.Generator().manual_seed(settings.seed + k) for k in indices]
        x = image_noise(generators, latent_shape, runtime.device)
        denoiser = EpsDenoiser(unet, alphas_cumprod, autocast=runtime.autocast())
        with torch.no_grad():
            z = sampler(
                denoiser, x, alphas_cumprod, settings.steps, eta=settings.eta,
                noise=lambda: image_noise(generators, latent_shape, runtime.device),
                callback=lambda i, total: on_step(len(indices)) if on_step else None,
            )
        label = f"image {indices[0]}" if len(indices) == 1 else f"images {indices[0]} to {indices[-1]}"
        pixels = decode(autoencoder, z / bundle.scale_factor, runtime, label=label)
        yield from zip(indices, pixels)
