"""Encode images to latents, decode latents to images, and the latent file format.

A latent file is safetensors with `latent` (1, C, h, w) float32, `indices` (1, h, w) int64 for VQ
autoencoders, and metadata naming the autoencoder (its SHA-256 fingerprint) and the image size.
Images of any size are padded (edge replication) to a multiple of the autoencoder's factor before
encoding; decoding crops back to the stored size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import InputError, NumericalError
from .models.autoencoder import Autoencoder
from .runtime.atomic import atomic_path
from .runtime.device import Runtime

LATENT_FORMAT = "genart-latent"


@torch.no_grad()
def encode(autoencoder: Autoencoder, pixels: torch.Tensor, runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode pixels (B, 3, H, W) in [-1, 1]; return (latents, codebook indices or None), on the CPU.

    Sides that are not a multiple of the downsampling factor f are padded by edge replication,
    so the latent is (B, C, ceil(H / f), ceil(W / f)).
    """
    f = autoencoder.downsample_factor
    h, w = pixels.shape[-2:]
    pad_h, pad_w = -h % f, -w % f
    if pad_h or pad_w:
        pixels = F.pad(pixels, (0, pad_w, 0, pad_h), mode="replicate")
    pixels = pixels.to(runtime.device)
    with runtime.autocast():
        latents = autoencoder.encode(pixels).float()
    if not torch.isfinite(latents).all():
        latents = autoencoder.encode(pixels.float()).float()
    indices = autoencoder.quantize_latent(latents)[1] if autoencoder.config.kind == "vq" else None
    return latents.cpu(), indices.cpu() if indices is not None else None


@torch.no_grad()
def decode(autoencoder: Autoencoder, latents: torch.Tensor, runtime: Runtime, label: str = "output") -> torch.Tensor:
    """Decode latents to pixels (B, 3, H, W) in [-1, 1] on the CPU.

    A decode that yields NaN or Inf under fp16 or bf16 is redone in fp32; if fp32 fails too,
    NumericalError is raised, so no black or garbage image is ever written.
    """
    if not torch.isfinite(latents).all():
        # A VQ decoder would snap NaN to some codebook entry and hide it, so check before decoding.
        raise NumericalError(f"{label}: the latent contains NaN or Inf; with --precision fp16 or bf16, "
                             "try --precision fp32")
    latents = latents.to(runtime.device, torch.float32)
    with runtime.autocast():
        pixels = autoencoder.decode(latents).float()
    if not torch.isfinite(pixels).all() and runtime.precision != "fp32":
        pixels = autoencoder.decode(latents).float()
    if not torch.isfinite(pixels).all():
        raise NumericalError(f"{label}: the decoder produced NaN or Inf even in fp32; the latent or model is invalid")
    return pixels.clamp(-1, 1).cpu()


@torch.no_grad()
def decode_indices(autoencoder: Autoencoder, indices: torch.Tensor, runtime: Runtime, label: str = "output") -> torch.Tensor:
    """Decode codebook indices (B, h, w) to pixels (B, 3, h * f, w * f) in [-1, 1] on the CPU."""
    n_embed = autoencoder.config.n_embed
    if indices.numel() and (indices.min() < 0 or indices.max() >= n_embed):
        raise InputError(f"{label}: codebook indices outside 0 to {n_embed - 1}; encode the image again")
    latents = autoencoder.quantize.lookup(indices.to(runtime.device)).float()
    return decode(autoencoder, latents, runtime, label)


def is_image_file(path: Path) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError):
        return False


def save_latent(path: str | Path, latent: torch.Tensor, indices: torch.Tensor | None, *,
                autoencoder_sha256: str, model_name: str, image_size: tuple[int, int]) -> Path:
    """Write one latent (1, C, h, w) and its indices (1, h, w) with their provenance, atomically."""
    tensors = {"latent": latent.detach().float().cpu().contiguous()}
    if indices is not None:
        tensors["indices"] = indices.detach().to(torch.int64).cpu().contiguous()
    metadata = {
        "format": LATENT_FORMAT,
        "autoencoder_sha256": autoencoder_sha256,
        "model": model_name,
        "image_size": json.dumps(list(image_size)),  # [height, width] in pixels
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


@dataclass
class LatentFile:
    latent: torch.Tensor  # (1, C, h, w) float32
    indices: torch.Tensor | None  # (1, h, w) int64 codebook indices, for VQ autoencoders
    image_size: tuple[int, int]  # (height, width) of the encoded image in pixels


def load_latent(path: str | Path, autoencoder_sha256: str) -> LatentFile:
    """Read a latent file written by `save_latent`.

    Raises InputError when the file is missing, unreadable, not a genart latent, or was made by
    another autoencoder than the one given by its fingerprint.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: a folder, not a latent file; pass the .latent.safetensors files in it")
    if not path.is_file():
        raise InputError(f"{path}: file not found; check the path")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            names = set(handle.keys())
            latent = handle.get_tensor("latent") if "latent" in names else None
            indices = handle.get_tensor("indices") if "indices" in names else None
    except (SafetensorError, OSError, ValueError) as err:
        if is_image_file(path):
            raise InputError(f"{path}: an image, not a latent file; encode it first with `genart encode`") from None
        raise InputError(f"{path}: not a readable safetensors file ({err}); encode the image again") from None
    if metadata.get("format") != LATENT_FORMAT or latent is None:
        raise InputError(f"{path}: not a genart latent file; make one with `genart encode`")
    if metadata.get("autoencoder_sha256") != autoencoder_sha256:
        raise InputError(f"{path}: made by another autoencoder (model {metadata.get('model', 'unknown')}); "
                         "decode it with the --model it was encoded with, or encode the image again")
    try:
        height, width = json.loads(metadata["image_size"])
    except (KeyError, ValueError, TypeError):
        raise InputError(f"{path}: latent file without a valid image_size; encode the image again") from None
    if latent.dim() != 4 or latent.shape[0] != 1:
        raise InputError(f"{path}: latent of shape {tuple(latent.shape)}, expected (1, C, h, w); encode the image again")
    if indices is not None and tuple(indices.shape) != (1, *latent.shape[-2:]):
        raise InputError(f"{path}: indices of shape {tuple(indices.shape)} do not match the latent; encode the image again")
    return LatentFile(latent.float(), indices.long() if indices is not None else None, (int(height), int(width)))
