"""Unconditional sampling: noise -> sampler calling the denoiser around the UNet -> decode.

Image k of a run starts from its own generator seeded with seed + k, and draws its per-step noise
from that generator too, so it is the same whatever the batch size. All noise is drawn on the CPU
in float32, so a seed gives the same starting noise on every device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

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
    # Class-conditional models: image k gets class_labels[k % len(class_labels)].
    class_labels: tuple[int, ...] = ()
    guidance_scale: float = 1.0


def check_can_sample(bundle: ModelBundle) -> None:
    if bundle.upscaler is not None:
        raise ModelError(f"{bundle.path}: an upscaler, not a diffusion model; use it with `genart upscale`")
    if bundle.unet is None or bundle.autoencoder is None:
        found = "an autoencoder only" if bundle.unet is None else "a UNet without an autoencoder"
        raise ModelError(f"{bundle.path}: contains {found}; `genart sample` needs a file with both")
    if bundle.conditioning not in ("none", "crossattn"):
        raise ModelError(f"{bundle.path}: a {bundle.conditioning}-conditioned model; `genart sample` runs "
                         "unconditional and class-conditional models")


def class_count(bundle: ModelBundle) -> int | None:
    """Number of class labels a class-conditional bundle takes, or None for unconditional models."""
    if bundle.class_embedder is not None:
        return bundle.class_embedder.num_embeddings
    return bundle.unet.config.num_classes


def check_class_settings(bundle: ModelBundle, settings: SampleSettings) -> None:
    classes = class_count(bundle)
    if classes is None:
        if settings.class_labels or settings.guidance_scale != 1.0:
            raise ValueError(f"{bundle.name} is unconditional: drop --class-label and --guidance-scale")
        return
    if not settings.class_labels:
        raise ValueError(f"{bundle.name} is class-conditional: pass --class-label (0 to {classes - 1})")
    bad = [c for c in settings.class_labels if not 0 <= c < classes]
    if bad:
        raise ValueError(f"class label {bad[0]} is outside 0 to {classes - 1}")
    if settings.guidance_scale != 1.0 and (bundle.class_embedder is None or classes != 1001):
        # cin256-v2 trained class 1000 as "no class"; without such a class there is no
        # unconditional prediction to guide against.
        raise ValueError(f"{bundle.name} has no unconditional class; --guidance-scale needs a model with 1001 "
                         "classes such as cin256-v2")


def conditioning_for(bundle: ModelBundle, settings: SampleSettings, indices: list[int],
                     device: torch.device) -> dict:
    """EpsDenoiser fields for the images `indices`: class labels or cross-attention contexts."""
    classes = class_count(bundle)
    if classes is None:
        return {}
    labels = torch.tensor([settings.class_labels[k % len(settings.class_labels)] for k in indices], device=device)
    if bundle.class_embedder is None:
        return {"class_labels": labels}
    embedder = bundle.class_embedder.to(device)
    fields = {"context": embedder(labels)[:, None, :]}  # (B, 1, context_dim)
    if settings.guidance_scale != 1.0:
        fields["uncond_context"] = embedder(torch.full_like(labels, classes - 1))[:, None, :]
        fields["guidance_scale"] = settings.guidance_scale
    return fields


def image_noise(generators: list[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Draw one (C, H, W) standard normal sample per generator; return (B, C, H, W) on `device`."""
    return torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators]).to(device)


def denoise(unet, alphas_cumprod: torch.Tensor, runtime: Runtime, settings: SampleSettings,
            generators: list[torch.Generator], latent_shape: tuple[int, int, int],
            concat: torch.Tensor | None = None, on_step: Callable[[int], None] | None = None,
            conditioning: dict | None = None) -> torch.Tensor:
    """Run the sampler from fresh noise for one batch; return latents z_0 (B, C, h, w).

    `concat` (B, C_extra, h, w) is appended to the latent on channels at every step (bsr_sr's
    low-resolution image in [-1, 1]).
    """
    x = image_noise(generators, latent_shape, runtime.device)
    denoiser = EpsDenoiser(unet, alphas_cumprod, concat=concat, autocast=runtime.autocast(), **(conditioning or {}))
    with torch.no_grad():
        return SAMPLERS[settings.sampler](
            denoiser, x, alphas_cumprod, settings.steps, eta=settings.eta,
            noise=lambda: image_noise(generators, latent_shape, runtime.device),
            callback=lambda i, total: on_step(len(generators)) if on_step else None,
        )


def check_sampler(settings: SampleSettings) -> None:
    if settings.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {settings.sampler!r}; choose from {', '.join(SAMPLERS)}")


def sample(bundle: ModelBundle, runtime: Runtime, settings: SampleSettings,
           on_step: Callable[[int], None] | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (image index, pixels (3, H, W) in [-1, 1] on the CPU) for each requested image."""
    check_can_sample(bundle)
    check_sampler(settings)
    check_class_settings(bundle, settings)
    unet = runtime.prepare(bundle.unet)
    autoencoder = runtime.prepare(bundle.autoencoder)
    alphas_cumprod = make_alphas_cumprod(bundle.schedule)
    cfg = unet.config
    latent_shape = (cfg.out_channels, cfg.image_size, cfg.image_size)

    for start in range(0, settings.num_images, settings.batch_size):
        indices = list(range(start, min(start + settings.batch_size, settings.num_images)))
        generators = [torch.Generator().manual_seed(settings.seed + k) for k in indices]
        conditioning = conditioning_for(bundle, settings, indices, runtime.device)
        with torch.no_grad():
            z = denoise(unet, alphas_cumprod, runtime, settings, generators, latent_shape, on_step=on_step,
                        conditioning=conditioning)
        label = f"image {indices[0]}" if len(indices) == 1 else f"images {indices[0]} to {indices[-1]}"
        pixels = decode(autoencoder, z / bundle.scale_factor, runtime, label=label)
        yield from zip(indices, pixels)


def check_can_super_resolve(bundle: ModelBundle) -> None:
    if bundle.unet is None or bundle.autoencoder is None or bundle.conditioning != "concat-lowres":
        raise ModelError(f"{bundle.path}: not a latent-diffusion super-resolution model (found "
                         f"{bundle.conditioning} conditioning); pass a bsr_sr-type checkpoint, whose UNet "
                         "takes the low-resolution image after the latent")


def super_resolve(bundle: ModelBundle, runtime: Runtime, lowres: torch.Tensor, settings: SampleSettings,
                  on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Upscale lowres (B, 3, h, w) in [-1, 1] with a concat-conditioned model such as bsr_sr.

    The latent has the low-resolution image's size, so the output is (B, 3, f h, f w) in [-1, 1]
    with f the autoencoder's factor (4 for bsr_sr). Sides that are not a multiple of the UNet's
    downsampling are padded by edge replication and cropped back. Image k of the batch draws its
    noise from a generator seeded with settings.seed + k.
    """
    check_can_super_resolve(bundle)
    check_sampler(settings)
    unet = runtime.prepare(bundle.unet)
    autoencoder = runtime.prepare(bundle.autoencoder)
    alphas_cumprod = make_alphas_cumprod(bundle.schedule)
    multiple = 2 ** (len(unet.config.channel_mult) - 1)
    h, w = lowres.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h or pad_w:
        lowres = F.pad(lowres, (0, pad_w, 0, pad_h), mode="replicate")
    latent_shape = (unet.config.out_channels, h + pad_h, w + pad_w)
    generators = [torch.Generator().manual_seed(settings.seed + k) for k in range(lowres.shape[0])]
    concat = lowres.to(runtime.device, torch.float32)
    z = denoise(unet, alphas_cumprod, runtime, settings, generators, latent_shape, concat=concat, on_step=on_step)
    pixels = decode(autoencoder, z / bundle.scale_factor, runtime, label="upscaled image")
    f = autoencoder.downsample_factor
    return pixels[..., : h * f, : w * f]
