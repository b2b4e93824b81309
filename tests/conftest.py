"""Shared fixtures: tiny random checkpoints and a helper that runs the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genart_cli.checkpoints.native import save_bundle
from genart_cli.models.autoencoder import Autoencoder, AutoencoderConfig
from genart_cli.models.unet import UNetConfig, UNetModel

# Subprocesses import genart_cli from the checkout, whatever the installed copy is.
REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_autoencoder(seed: int = 0) -> Autoencoder:
    """Build a VQ autoencoder with downsampling factor 2 and random weights."""
    config = AutoencoderConfig(ch=32, ch_mult=(1, 2), n_embed=64, resolution=32, z_channels=3, embed_dim=3)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Autoencoder(config)
        redraw_parameters(model)
    return model.eval()


def tiny_unet(seed: int = 0) -> UNetModel:
    """Build a UNet for 8x8 latents with random weights, its zero-initialised output convs included."""
    config = UNetConfig(model_channels=32, channel_mult=(1, 2), attention_resolutions=(2,), num_head_channels=16,
                        image_size=8)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = UNetModel(config)
        redraw_parameters(model)
    return model.eval()


def redraw_parameters(model: torch.nn.Module) -> None:
    """Draw every parameter from normal(0, 0.02), then reset the GroupNorm scales to 1 and shifts to 0.

    With GroupNorm scales near 0.02 too, every decoded pixel lands within a few levels of mid-grey.
    Images of different seeds then differ in under 1% of their pixels, too little for the pixel
    comparisons in the tests to tell them apart.
    """
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.02)
        for module in model.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Checkpoint with both models, from which `genart sample` makes 16x16 images."""
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_bundle(path, autoencoder=tiny_autoencoder(0), unet=tiny_unet(0))
    return path


@pytest.fixture(scope="session")
def ae_only_model(tmp_path_factory) -> Path:
    """Checkpoint with the same autoencoder as tiny_model and no UNet."""
    path = tmp_path_factory.mktemp("models") / "tiny-ae.safetensors"
    save_bundle(path, autoencoder=tiny_autoencoder(0))
    return path


@pytest.fixture(scope="session")
def other_ae_model(tmp_path_factory) -> Path:
    """Autoencoder-only checkpoint with other weights than tiny_model's, hence another fingerprint."""
    path = tmp_path_factory.mktemp("models") / "other-ae.safetensors"
    save_bundle(path, autoencoder=tiny_autoencoder(1))
    return path


def run_cli(cwd: Path, *args: object) -> subprocess.CompletedProcess:
    """Run `python -m genart_cli ARGS` in cwd on the CPU and return the finished process.

    CUDA is hidden, so `--device auto` resolves to the CPU in fp32 and pixel comparisons are exact.
    One torch thread is enough for the tiny models. On 2 cores shared with a training job, a 3-step
    sample run took 1.15 s with one thread and 3.6 s with the default thread count.
    """
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("GENART_MODEL", None)
    command = [sys.executable, "-m", "genart_cli", *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def write_test_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """Write a random RGB PNG of the given size."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels, mode="RGB").save(path)
    return path


def read_pixels(path: Path) -> np.ndarray:
    """Return the image as an (H, W, 3) int16 array, wide enough to subtract without wrapping."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(np.int16)
