"""Image files in and out: load and normalise to (1, 3, H, W) in [-1, 1]; save PNGs with settings.

Every write is atomic, and every PNG carries the settings that made it as text chunks.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from ..errors import InputError
from ..runtime.atomic import atomic_path


def check_image_path(path: str | Path) -> Path:
    """Return the path if it names a file; raise InputError for a folder or a missing file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: a folder, not an image file; pass the images in it, e.g. {path}/*.png")
    if not path.is_file():
        raise InputError(f"{path}: file not found; check the path")
    return path


@contextlib.contextmanager
def decode_errors(path: Path):
    """Turn Pillow's decode failures inside the block into one-line InputErrors naming `path`."""
    try:
        yield
    except Image.DecompressionBombError as err:
        raise InputError(f"{path}: image too large to decode safely ({err}); downscale it first") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file that Pillow can read; pass a PNG, JPEG or WebP image") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{path}: the image could not be decoded ({err}); the file is damaged or incomplete") from None


def load_image(path: str | Path) -> torch.Tensor:
    """Load an image file as RGB (1, 3, H, W) float32 in [-1, 1].

    EXIF orientation is applied. Transparent pixels are composited onto white, which is what the
    default emoji models were trained on.
    """
    path = check_image_path(path)
    with decode_errors(path), Image.open(path) as image:
        if getattr(image, "n_frames", 1) > 1:
            raise InputError(f"{path}: animated images are not supported; extract one frame first")
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            canvas.alpha_composite(rgba)
            image = canvas
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(rgb).permute(2, 0, 1)[None] / 127.5 - 1.0


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8, clamped and rounded."""
    array = ((pixels.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return array.permute(1, 2, 0).numpy()


def save_png(pixels: torch.Tensor, path: str | Path, settings: dict[str, object] | None = None) -> Path:
    """Write (3, H, W) pixels in [-1, 1] as an 8-bit PNG with settings as text chunks, atomically."""
    path = Path(path)
    info = PngImagePlugin.PngInfo()
    for key, value in (settings or {}).items():
        info.add_text(f"genart:{key}", str(value))
    image = Image.fromarray(to_uint8(pixels), mode="RGB")
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return path


def read_png_settings(path: str | Path) -> dict[str, str]:
    """Return the genart text chunks of a PNG, without the `genart:` prefix."""
    with Image.open(path) as image:
        return {k[len("genart:"):]: v for k, v in image.text.items() if k.startswith("genart:")}


def make_grid(images: torch.Tensor, columns: int | None = None, padding: int = 2) -> torch.Tensor:
    """Tile images (N, 3, H, W) in [-1, 1] into one (3, H', W') image on a white background."""
    n, c, h, w = images.shape
    columns = columns or max(1, int(np.ceil(np.sqrt(n))))
    rows = (n + columns - 1) // columns
    grid = torch.ones(c, rows * (h + padding) + padding, columns * (w + padding) + padding)
    for k in range(n):
        top, left = padding + (k // columns) * (h + padding), padding + (k % columns) * (w + padding)
        grid[:, top:top + h, left:left + w] = images[k].float().cpu()
    return grid
