"""Bicubic resizing that follows MATLAB's imresize, the standard for making super-resolution inputs.

Published x4 models and their PSNR tables use MATLAB's `imresize(img, 1/4, 'bicubic')`: a cubic
kernel with a = -0.5, widened by the scale when shrinking (antialiasing), weights normalised to
sum to one, and symmetric (mirror) padding at the borders. Each axis becomes one matrix, so a
resize is two matrix products on (B, C, H, W) float tensors, any value range.
"""

from __future__ import annotations

import math

import torch


def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5, zero outside [-2, 2]."""
    ax = x.abs()
    ax2, ax3 = ax**2, ax**3
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def resize_matrix(in_size: int, out_size: int, antialias: bool = True) -> torch.Tensor:
    """Return the (out_size, in_size) float64 matrix that resamples one axis."""
    scale = out_size / in_size
    shrinking = antialias and scale < 1
    width = 4.0 / scale if shrinking else 4.0
    out = torch.arange(1, out_size + 1, dtype=torch.float64)
    # Output pixel centres in input coordinates, 1-based as in MATLAB.
    centre = out / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(centre - width / 2)
    taps = int(math.ceil(width)) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None]  # (out, taps), 1-based
    distance = centre[:, None] - indices
    weights = scale * cubic(scale * distance) if shrinking else cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # Symmetric padding: index 0 reads pixel 1, index -1 reads pixel 2, index n + 1 reads pixel n.
    period = 2 * in_size
    folded = torch.remainder(indices - 1, period)
    folded = torch.where(folded >= in_size, period - 1 - folded, folded).long()
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    matrix.scatter_add_(1, folded, weights)
    return matrix


def imresize(images: torch.Tensor, size: tuple[int, int] | None = None, scale: float | None = None,
             antialias: bool = True) -> torch.Tensor:
    """Resize (B, C, H, W) or (C, H, W) images to `size` (H', W') or by `scale`, MATLAB-style bicubic.

    With `scale`, the output side is ceil(side * scale), as in MATLAB. Values are not clamped:
    the cubic kernel overshoots a little at edges, so clamp when converting to 8 bits.
    """
    if (size is None) == (scale is None):
        raise ValueError("give exactly one of size and scale")
    h, w = images.shape[-2:]
    if size is None:
        size = (math.ceil(h * scale), math.ceil(w * scale))
    rows = resize_matrix(h, size[0], antialias).to(images.device, images.dtype)
    cols = resize_matrix(w, size[1], antialias).to(images.device, images.dtype)
    return rows @ images @ cols.T
