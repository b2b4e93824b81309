"""Super-resolution metrics as papers report them: PSNR and SSIM on the Y channel, borders cropped.

Inputs are 8-bit RGB images as (3, H, W) uint8 tensors. Y is ITU-R BT.601 luma in [16, 235]
(MATLAB's rgb2ycbcr). A border of `crop` pixels (the scale, by convention) is dropped first,
because every method guesses there.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def luma(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) uint8 RGB -> (H, W) float64 Y in [16, 235]."""
    r, g, b = image.double() / 255.0
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def psnr_y(output: torch.Tensor, target: torch.Tensor, crop: int) -> float:
    a, b = luma(output), luma(target)
    if crop:
        a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    mse = ((a - b) ** 2).mean().item()
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim_y(output: torch.Tensor, target: torch.Tensor, crop: int) -> float:
    """SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, L 255, valid region."""
    a, b = luma(output), luma(target)
    if crop:
        a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    coords = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    window = (g[:, None] * g[None, :]) / g.sum() ** 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x[None, None], window[None, None])[0, 0]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean().item()
