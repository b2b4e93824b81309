"""Upscale images of any size: feed-forward networks tile by tile, latent diffusion with blended tiles.

Pixels here are RGB (1, 3, H, W) float32 in [0, 1], the range the feed-forward networks were
trained on. The latent-diffusion path maps them to [-1, 1] itself. The output is exactly
(s H, s W) for the model's scale s: inputs are padded by edge replication to what the model
needs and the result is cropped back, never resized.

Tiles. A feed-forward tile is cut with `overlap` pixels of context on each side and only its own
part is kept, so with overlap at least the network's receptive radius the result equals the
untiled one. Latent diffusion has no such radius (attention spans the whole tile), so its UNet
runs on overlapping latent windows whose predictions are blended with linear ramps at every
step, and the decoder's tiles are blended the same way, which leaves no visible seam.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .checkpoints.native import ModelBundle
from .diffusion.denoiser import EpsDenoiser
from .diffusion.pipeline import SampleSettings, check_can_super_resolve, check_sampler, image_noise
from .diffusion.samplers import SAMPLERS
from .diffusion.schedule import make_alphas_cumprod
from .errors import ModelError, NumericalError
from .imaging.resize import imresize
from .latents import decode
from .models.esrgan import input_multiple, receptive_radius
from .runtime.device import Runtime

# Input tile side for --tile auto: keeps the peak memory of one tile well under 2 GiB in fp32.
AUTO_TILE = {"srvgg": 512, "rrdbnet": 256, "ldm": 128}
# Default tile context for feed-forward models: the receptive radius, capped. SRVGGNetCompact's
# radius (num_conv + 2, 18 for the bundled model) fits, so its tiles are exact; RRDBNet x4plus
# would need 350 pixels, which would make a 256-pixel tile cost as much as a 956-pixel one.
MAX_DEFAULT_OVERLAP = 32


@dataclass
class Tiling:
    tile: int | None = None  # input pixels per tile side; None: the whole image at once
    overlap: int | None = None  # input pixels of context per side; None: the model's default


def auto_tiling(bundle: ModelBundle, tile: int | None = None, overlap: int | None = None) -> Tiling:
    """Return the Tiling for a --tile value: None picks the model's AUTO_TILE side, 0 turns tiles off."""
    if tile is None:
        tile = AUTO_TILE[bundle.upscaler.config.arch if bundle.upscaler is not None else "ldm"]
    return Tiling(tile=tile or None, overlap=overlap)


def model_scale(bundle: ModelBundle) -> int:
    """Return the upscaler's own scale; raise ModelError for a model that does not upscale."""
    if bundle.upscaler is not None:
        return bundle.upscaler.config.scale
    if bundle.unet is None or bundle.autoencoder is None or bundle.conditioning != "concat-lowres":
        kind = "an autoencoder" if bundle.unet is None else f"a {bundle.conditioning}-conditioned diffusion model"
        if bundle.conditioning == "none" and bundle.unet is not None:
            kind = "an unconditional diffusion model"
        raise ModelError(f"{bundle.path}: {kind}, not an upscaler; pass Real-ESRGAN or ESRGAN weights or a "
                         "latent-diffusion super-resolution (bsr_sr) checkpoint, or leave out --model for the "
                         "bundled upscaler")
    return bundle.autoencoder.downsample_factor


def describe(bundle: ModelBundle) -> str:
    if bundle.upscaler is not None:
        config = bundle.upscaler.config
        return f"{config.arch} x{config.scale}"
    return f"latent diffusion x{model_scale(bundle)}"


def windows(size: int, tile: int) -> list[tuple[int, int]]:
    """Split [0, size) into consecutive (start, end) pieces of at most `tile`."""
    return [(start, min(start + tile, size)) for start in range(0, size, tile)]


@torch.no_grad()
def upscale_feedforward(bundle: ModelBundle, rgb: torch.Tensor, runtime: Runtime, tiling: Tiling,
                        on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1] -> (1, 3, s H, s W) in [0, 1], on the CPU."""
    model = runtime.prepare(bundle.upscaler)
    config = model.config
    scale = config.scale
    h, w = rgb.shape[-2:]
    multiple = input_multiple(config)
    tile = tiling.tile or max(h, w)
    tile = -(-tile // multiple) * multiple
    overlap = min(receptive_radius(config), MAX_DEFAULT_OVERLAP) if tiling.overlap is None else tiling.overlap
    overlap = -(-overlap // multiple) * multiple
    # Pad the whole image once, so that every tile (with its context) has sides the model accepts.
    pad_h, pad_w = -h % multiple, -w % multiple
    image = F.pad(rgb, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else rgb
    H, W = image.shape[-2:]
    out = torch.zeros(1, 3, H * scale, W * scale)
    pieces = [(r, c) for r in windows(H, tile) for c in windows(W, tile)]
    for k, ((top, bottom), (left, right)) in enumerate(pieces):
        # Context beyond the tile, clamped to the image: the image edge is the network's edge too.
        t0, b0 = max(0, top - overlap), min(H, bottom + overlap)
        l0, r0 = max(0, left - overlap), min(W, right + overlap)
        with runtime.autocast():
            result = model(image[..., t0:b0, l0:r0].to(runtime.device)).float()
        if not torch.isfinite(result).all():
            raise NumericalError("the upscaler produced NaN or Inf; with --precision fp16 or bf16, try fp32")
        result = result[..., (top - t0) * scale:(bottom - t0) * scale, (left - l0) * scale:(right - l0) * scale]
        out[..., top * scale:bottom * scale, left * scale:right * scale] = result.cpu()
        if on_tile:
            on_tile(k + 1, len(pieces))
    return out[..., : h * scale, : w * scale].clamp(0, 1)


def ramp_weights(height: int, width: int, ramp: int) -> torch.Tensor:
    """(1, 1, height, width) weights rising linearly over `ramp` cells from each edge, never zero."""
    def axis(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float32)
        return torch.minimum(i + 1, n - i).clamp(max=ramp) / ramp if ramp > 0 else torch.ones(n)
    return (axis(height)[:, None] * axis(width)[None, :])[None, None]


def overlapping_windows(size: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Windows of side `tile` (or size, if smaller) that overlap by at least `overlap`, covering [0, size)."""
    if size <= tile:
        return [(0, size)]
    stride = max(1, tile - overlap)
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return [(s, s + tile) for s in starts]


@dataclass
class TiledDenoiser:
    """An EpsDenoiser that runs the UNet on overlapping latent windows and blends the noise estimates."""

    inner: EpsDenoiser
    tile: int  # latent cells per window side (a multiple of the UNet's downsampling)
    overlap: int

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.inner.alphas_cumprod

    def __call__(self, x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = x.shape[-2:]
        eps = torch.zeros_like(x)
        total = torch.zeros(1, 1, h, w, device=x.device)
        concat = self.inner.concat
        for top, bottom in overlapping_windows(h, self.tile, self.overlap):
            for left, right in overlapping_windows(w, self.tile, self.overlap):
                window = EpsDenoiser(self.inner.unet, self.inner.alphas_cumprod,
                                     concat=concat[..., top:bottom, left:right] if concat is not None else None,
                                     autocast=self.inner.autocast)
                weight = ramp_weights(bottom - top, right - left, self.overlap).to(x.device)
                eps[..., top:bottom, left:right] += weight * window.eps(x[..., top:bottom, left:right], t)
                total[..., top:bottom, left:right] += weight
        eps = eps / total
        a = float(self.alphas_cumprod[t])
        return eps, (x - (1 - a) ** 0.5 * eps) / a**0.5


@torch.no_grad()
def decode_blended(autoencoder, z: torch.Tensor, runtime: Runtime, tile: int, overlap: int) -> torch.Tensor:
    """Decode latents (1, C, h, w) window by window, blending overlaps with ramps; (1, 3, f h, f w) in [-1, 1]."""
    f = autoencoder.downsample_factor
    h, w = z.shape[-2:]
    out = torch.zeros(1, 3, h * f, w * f)
    total = torch.zeros(1, 1, h * f, w * f)
    for top, bottom in overlapping_windows(h, tile, overlap):
        for left, right in overlapping_windows(w, tile, overlap):
            # latents.decode redoes a NaN window in fp32 and raises if that fails too.
            pixels = decode(autoencoder, z[..., top:bottom, left:right], runtime, label="upscaled image")
            weight = ramp_weights((bottom - top) * f, (right - left) * f, overlap * f)
            out[..., top * f:bottom * f, left * f:right * f] += weight * pixels
            total[..., top * f:bottom * f, left * f:right * f] += weight
    return out / total


@torch.no_grad()
def upscale_latent_diffusion(bundle: ModelBundle, rgb: torch.Tensor, runtime: Runtime, settings: SampleSettings,
                             tiling: Tiling, on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1] -> (1, 3, f H, f W) in [0, 1] with a bsr_sr-type model, DDIM."""
    check_can_super_resolve(bundle)
    check_sampler(settings)
    unet = runtime.prepare(bundle.unet)
    autoencoder = runtime.prepare(bundle.autoencoder)
    multiple = 2 ** (len(unet.config.channel_mult) - 1)
    h, w = rgb.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    lowres = rgb * 2 - 1  # the low-resolution image in [-1, 1], at latent size
    if pad_h or pad_w:
        lowres = F.pad(lowres, (0, pad_w, 0, pad_h), mode="replicate")
    lh, lw = lowres.shape[-2:]
    tile = max(multiple, (tiling.tile or 10**9) // multiple * multiple)  # None: the whole latent at once
    overlap = min(tile // 2, tiling.overlap if tiling.overlap is not None else tile // 4)

    alphas_cumprod = make_alphas_cumprod(bundle.schedule)
    generators = [torch.Generator().manual_seed(settings.seed)]
    latent_shape = (unet.config.out_channels, lh, lw)
    x = image_noise(generators, latent_shape, runtime.device)
    inner = EpsDenoiser(unet, alphas_cumprod, concat=lowres.to(runtime.device), autocast=runtime.autocast())
    denoiser = inner if lh <= tile and lw <= tile else TiledDenoiser(inner, tile, overlap)
    z = SAMPLERS[settings.sampler](
        denoiser, x, alphas_cumprod, settings.steps, eta=settings.eta,
        noise=lambda: image_noise(generators, latent_shape, runtime.device),
        callback=lambda i, total: on_step(1) if on_step else None,
    )
    pixels = decode_blended(autoencoder, z / bundle.scale_factor, runtime, tile, overlap)
    f = autoencoder.downsample_factor
    return ((pixels[..., : h * f, : w * f] + 1) / 2).clamp(0, 1)


def upscale_alpha(alpha: torch.Tensor, scale: int) -> torch.Tensor:
    """Alpha (1, 1, H, W) in [0, 1] -> (1, 1, s H, s W): bicubic, smooth, clamped to [0, 1]."""
    return imresize(alpha, size=(alpha.shape[-2] * scale, alpha.shape[-1] * scale)).clamp(0, 1)


def resample(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Lanczos-resample (1, C, H, W) in [0, 1] to size (H', W'), channel by channel in float."""
    import numpy as np
    from PIL import Image

    channels = []
    for channel in pixels[0]:
        image = Image.fromarray(channel.numpy().astype(np.float32), mode="F")
        channels.append(torch.from_numpy(np.array(image.resize((size[1], size[0]), Image.Resampling.LANCZOS))))
    return torch.stack(channels)[None].clamp(0, 1)


def upscale(bundle: ModelBundle, rgb: torch.Tensor, runtime: Runtime, tiling: Tiling,
            settings: SampleSettings | None = None, on_progress: Callable[[int, int], None] | None = None
            ) -> torch.Tensor:
    """Run the bundle's upscaler at its own scale: (1, 3, H, W) -> (1, 3, s H, s W), all in [0, 1]."""
    if bundle.upscaler is not None:
        return upscale_feedforward(bundle, rgb, runtime, tiling, on_tile=on_progress)
    if bundle.unet is None:
        raise ModelError(f"{bundle.path}: an autoencoder only, not an upscaler; pass an ESRGAN-family model "
                         "or a latent-diffusion super-resolution checkpoint")
    settings = settings or SampleSettings(steps=100, eta=1.0)
    steps_done = [0]

    def on_step(_count: int) -> None:
        steps_done[0] += 1
        if on_progress:
            on_progress(steps_done[0], settings.steps)

    return upscale_latent_diffusion(bundle, rgb, runtime, settings, tiling, on_step=on_step)


def upscale_sample(bundle: ModelBundle, pixels: torch.Tensor, runtime: Runtime, scale: float) -> torch.Tensor:
    """Upscale one generated image (3, H, W) in [-1, 1] to round(scale * side); return it in [-1, 1]."""
    rgb = ((pixels[None].float() + 1) / 2).clamp(0, 1)
    big = upscale(bundle, rgb, runtime, auto_tiling(bundle))
    if scale != model_scale(bundle):
        big = resample(big, (round(pixels.shape[-2] * scale), round(pixels.shape[-1] * scale)))
    return big[0] * 2 - 1
