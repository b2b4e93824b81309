"""Repaint the masked region of an image, with a dedicated inpainting model or any unconditional one.

Pixels are RGB (1, 3, H, W) float32 in [0, 1]; masks are (1, 1, H, W) with 1 where the model
paints and 0 where the image is kept. Two paths:

- Dedicated models (latent-diffusion's inpainting_big, conditioning "concat-inpaint"): the UNet
  takes [noisy latent, latent of the masked image, mask at latent size] (3 + 3 + 1 channels).
  The preprocessing follows the reference script: masked image = (1 - mask) image, everything
  mapped to [-1, 1] (the mask to -1/+1), the masked image encoded without quantization, and the
  mask shrunk to latent size by nearest-neighbour sampling.
- Unconditional models (the default one included): RePaint. At every DDIM step the latent outside
  the mask is replaced by the image's own latent noised to that step. Here the mask is shrunk by
  max-pooling, so any painted pixel marks its latent cell and thin strokes are repainted.

Either way the decoded result is composited onto the input, so pixels outside the mask are the
input's, exactly. `mask_blur` feathers the seam inward only, never outside the mask.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .checkpoints.native import ModelBundle
from .diffusion.denoiser import EpsDenoiser
from .diffusion.pipeline import image_noise
from .diffusion.samplers import sample_ddim, sample_ddim_repaint
from .diffusion.schedule import make_alphas_cumprod
from .errors import ModelError
from .latents import decode
from .runtime.device import Runtime


@dataclass
class InpaintSettings:
    steps: int = 50
    eta: float = 0.0
    seed: int = 0
    num_images: int = 1
    resample: int = 1  # RePaint: how often each step is done (1 = no jumps back)
    mask_blur: float = 0.0  # pixels of inward feathering of the composite


def check_can_inpaint(bundle: ModelBundle) -> str:
    """Return "dedicated" or "repaint", or raise ModelError for models that cannot inpaint."""
    if bundle.upscaler is not None or bundle.unet is None or bundle.autoencoder is None:
        raise ModelError(f"{bundle.path}: not a latent-diffusion model; inpainting needs an autoencoder and a UNet")
    if bundle.conditioning == "concat-inpaint":
        return "dedicated"
    if bundle.conditioning == "none" and bundle.unet.config.num_classes is None:
        return "repaint"
    raise ModelError(f"{bundle.path}: a {bundle.conditioning}-conditioned model; inpaint runs inpainting models "
                     "(inpainting_big) and unconditional models")


def size_multiple(bundle: ModelBundle) -> int:
    """Image sides must be multiples of this: the autoencoder's factor times the UNet's."""
    return bundle.autoencoder.downsample_factor * bundle.unet.config.downsample_factor


def latent_mask_any(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """(1, 1, H, W) {0, 1} -> (1, 1, H / f, W / f): a cell is painted if any of its pixels is."""
    return F.max_pool2d(mask, factor)


def feathered(mask: torch.Tensor, blur: float) -> torch.Tensor:
    """Return a soft mask: 0 outside `mask`, ramping up to 1 inside it over about `blur` pixels."""
    if blur <= 0:
        return mask
    radius = max(1, int(round(2 * blur)))
    coords = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(coords**2) / (2 * blur**2))
    kernel = kernel / kernel.sum()
    keep = 1 - mask
    padded = F.pad(keep, (radius, radius, radius, radius), mode="replicate")
    blurred = F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
    return mask * (1 - blurred).clamp(0, 1)


def composite(image: torch.Tensor, painted: torch.Tensor, mask: torch.Tensor, blur: float) -> torch.Tensor:
    """(1 - m) image + m painted with m the feathered mask; outside the mask the result is `image` exactly."""
    soft = feathered(mask, blur)
    out = image * (1 - soft) + painted * soft
    return torch.where(mask > 0, out, image)


def pad_to(x: torch.Tensor, multiple: int, mode: str) -> torch.Tensor:
    pad_h, pad_w = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    if not (pad_h or pad_w):
        return x
    if mode == "constant":
        return F.pad(x, (0, pad_w, 0, pad_h))
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def dedicated_inputs(autoencoder, image: torch.Tensor, mask: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Build the 4 conditioning channels of inpainting_big: [latent of the masked image (3), mask (1)].

    As the reference script: masked = (1 - mask) image in [0, 1], then image, mask and masked
    image all map to [-1, 1] (x 2 - 1), so the mask channel is -1/+1. The masked image is encoded
    without quantization or scaling; the mask goes to latent size by nearest-neighbour sampling.
    """
    masked = (1 - mask) * image
    with torch.no_grad(), runtime.autocast():
        c = autoencoder.encode((masked * 2 - 1).to(runtime.device)).float()
    m = F.interpolate((mask * 2 - 1).to(runtime.device), size=c.shape[-2:])
    return torch.cat([c, m], dim=1)


@torch.no_grad()
def inpaint(bundle: ModelBundle, runtime: Runtime, image: torch.Tensor, mask: torch.Tensor,
            settings: InpaintSettings, on_step: Callable[[int], None] | None = None
            ) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (index, composited pixels (1, 3, H, W) in [0, 1]) for each of settings.num_images.

    Image k draws all its noise from a generator seeded with settings.seed + k.
    """
    path = check_can_inpaint(bundle)
    h, w = image.shape[-2:]
    multiple = size_multiple(bundle)
    padded_image = pad_to(image, multiple, "replicate")
    padded_mask = pad_to(mask, multiple, "constant")  # padding is "keep": nothing to paint there
    unet = runtime.prepare(bundle.unet)
    autoencoder = runtime.prepare(bundle.autoencoder)
    alphas_cumprod = make_alphas_cumprod(bundle.schedule)
    f = autoencoder.downsample_factor
    latent_shape = (unet.config.out_channels, padded_image.shape[-2] // f, padded_image.shape[-1] // f)

    if path == "dedicated":
        concat = dedicated_inputs(autoencoder, padded_image, padded_mask, runtime)
    else:
        with runtime.autocast():
            known = autoencoder.encode((padded_image * 2 - 1).to(runtime.device)).float() * bundle.scale_factor
        cells = latent_mask_any(padded_mask, f).to(runtime.device)

    for k in range(settings.num_images):
        generator = torch.Generator().manual_seed(settings.seed + k)

        def noise(generator: torch.Generator = generator) -> torch.Tensor:
            return image_noise([generator], latent_shape, runtime.device)

        x = noise()
        callback = (lambda i, total: on_step(1)) if on_step else None
        if path == "dedicated":
            denoiser = EpsDenoiser(unet, alphas_cumprod, concat=concat, autocast=runtime.autocast())
            z = sample_ddim(denoiser, x, alphas_cumprod, settings.steps, eta=settings.eta, noise=noise,
                            callback=callback)
        else:
            denoiser = EpsDenoiser(unet, alphas_cumprod, autocast=runtime.autocast())
            z = sample_ddim_repaint(denoiser, x, alphas_cumprod, settings.steps, settings.eta, noise, known, cells,
                                    resample=settings.resample, callback=callback)
        pixels = decode(autoencoder, z / bundle.scale_factor, runtime, label=f"image {k}")
        painted = ((pixels + 1) / 2)[..., :h, :w]
        yield k, composite(image, painted, mask, settings.mask_blur)


def mask_box(mask: torch.Tensor, padding: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the painted pixels, grown by padding and clamped to the image."""
    rows = mask[0, 0].any(dim=1).nonzero()
    cols = mask[0, 0].any(dim=0).nonzero()
    h, w = mask.shape[-2:]
    top, bottom = max(0, int(rows[0]) - padding), min(h, int(rows[-1]) + 1 + padding)
    left, right = max(0, int(cols[0]) - padding), min(w, int(cols[-1]) + 1 + padding)
    return top, left, bottom, right


def working_size(bundle: ModelBundle, height: int, width: int) -> tuple[int, int]:
    """Scale (height, width) so the longer side is the model's native size, in multiples it accepts."""
    native = bundle.unet.config.image_size * bundle.autoencoder.downsample_factor
    multiple = size_multiple(bundle)
    ratio = native / max(height, width)
    return (max(multiple, round(height * ratio / multiple) * multiple),
            max(multiple, round(width * ratio / multiple) * multiple))


def inpaint_cropped(bundle: ModelBundle, runtime: Runtime, image: torch.Tensor, mask: torch.Tensor,
                    settings: InpaintSettings, padding: int, on_step: Callable[[int], None] | None = None
                    ) -> Iterator[tuple[int, torch.Tensor]]:
    """Inpaint only the box around the mask, resized to the model's native size, and paste it back."""
    from .upscaling import resample

    top, left, bottom, right = mask_box(mask, padding)
    region = image[..., top:bottom, left:right]
    region_mask = mask[..., top:bottom, left:right]
    size = working_size(bundle, bottom - top, right - left)
    small = resample(region, size)
    # Any painted pixel keeps its mark when the mask shrinks (area average above zero).
    small_mask = (F.interpolate(region_mask, size=size, mode="area") > 0).float()
    inner = InpaintSettings(**{**settings.__dict__, "mask_blur": 0.0})
    for k, painted in inpaint(bundle, runtime, small, small_mask, inner, on_step):
        back = resample(painted, (bottom - top, right - left))
        out = image.clone()
        out[..., top:bottom, left:right] = composite(region, back, region_mask, settings.mask_blur)
        yield k, out
