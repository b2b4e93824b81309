"""Both training loops on a few tiny images: checkpoints are written, and a second run resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import write_test_image
from genart_cli.checkpoints.native import load_bundle
from genart_cli.training.autoencoder import AutoencoderTraining, train_autoencoder
from genart_cli.training.unet import UNetTraining, train_unet


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 32x32 autoencoder trained 2 steps, resumed to 3, then a UNet trained 2 steps on it."""
    root = tmp_path_factory.mktemp("training")
    data = root / "data"
    data.mkdir()
    for k in range(8):
        write_test_image(data / f"{k}.png", 32, 32, seed=k)
    messages = []
    ae_job = dict(data=data, out=root / "ae.safetensors", run_dir=root / "runs", image_size=32, batch_size=4,
                  eval_every=2, holdout_fraction=0.25, quiet=True)
    train_autoencoder(AutoencoderTraining(max_steps=2, **ae_job), log=messages.append)
    train_autoencoder(AutoencoderTraining(max_steps=3, **ae_job), log=messages.append)
    train_unet(UNetTraining(data=data, autoencoder=root / "ae.safetensors", out=root / "ldm.safetensors",
                            run_dir=root / "runs", image_size=32, batch_size=4, max_steps=2, holdout_fraction=0.25,
                            quiet=True), log=messages.append)
    return root, messages


def test_autoencoder_resumes(trained):
    root, messages = trained
    assert any("resuming" in m and "at step 2" in m for m in messages)
    assert torch.load(root / "runs" / "autoencoder-state.pt", weights_only=False)["step"] == 3


def test_autoencoder_reports_psnr(trained):
    _, messages = trained
    assert any("held-out PSNR" in m for m in messages)


def test_unet_bundle_loads(trained):
    root, _ = trained
    bundle = load_bundle(Path(root / "ldm.safetensors"))
    assert bundle.autoencoder is not None
    assert bundle.unet is not None
    assert bundle.scale_factor > 0
    assert bundle.extra["training"]["unet_steps"] == 2


def test_upscaler_trains_resumes_and_stops(tmp_path):
    from genart_cli.training.upscaler import UpscalerTraining, train_upscaler

    photos, heldout = tmp_path / "photos", tmp_path / "heldout"
    photos.mkdir()
    heldout.mkdir()
    for k in range(2):
        write_test_image(photos / f"{k}.png", 260, 256, seed=k)
    write_test_image(heldout / "h.png", 80, 64, seed=9)
    job = dict(data=[photos], heldout=[heldout], out=tmp_path / "up.safetensors", run_dir=tmp_path / "runs",
               num_feat=8, num_block=2, batch_size=2, lr_patch=16, eval_every=2, quiet=True)
    messages = []
    train_upscaler(UpscalerTraining(max_steps=2, **job), log=messages.append)
    result = train_upscaler(UpscalerTraining(max_steps=3, **job), log=messages.append)
    assert any("resuming" in m and "at step 2" in m for m in messages)
    assert torch.load(tmp_path / "runs" / "upscaler-state.pt", weights_only=False)["step"] == 3
    assert {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim"} <= set(result)
    assert load_bundle(tmp_path / "up.safetensors").upscaler.config.scale == 4
    train_upscaler(UpscalerTraining(max_steps=10, max_minutes=0, **job), log=messages.append)
    assert any("stopping after 0 minutes at step 3" in m for m in messages)
