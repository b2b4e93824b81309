"""Training data: a folder of images turned into one uint8 tensor, with a fixed held-out split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def load_square_rgb(path: Path, size: int) -> np.ndarray:
    """Load an image, composite any transparency onto white, resize to size x size (Lanczos)."""
    with Image.open(path) as image:
        image = image.convert("RGBA")
        canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
        canvas.alpha_composite(image)
        rgb = canvas.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
        return np.asarray(rgb, dtype=np.uint8)


def load_image_folder(folder: str | Path, size: int) -> tuple[torch.Tensor, list[str]]:
    """Return (images (N, 3, size, size) uint8, file names), sorted by name for a stable order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: training data folder not found; pass a folder of images with --data")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InputError(f"{folder}: no images (png, jpg, webp, bmp) in the training data folder")
    arrays = [load_square_rgb(p, size) for p in paths]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return images, [p.name for p in paths]


def split_holdout(count: int, fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (train indices, held-out indices) from a seeded permutation."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    held = max(1, round(count * fraction))
    return order[held:].sort().values, order[:held].sort().values


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images.float() / 127.5 - 1.0
