"""End to end against diffusers pipelines, and weights that travel between layouts.

A tiny VQModel, UNet2DModel and DDIMScheduler are built in diffusers with random weights and saved
as a diffusers folder. genart loads the folder, and the same weights rewritten into the original
latent-diffusion layout, and must reproduce diffusers' LDMPipeline from the same starting noise.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from genart_cli.checkpoints.diffusers_layout import autoencoder_to_ldm, unet_to_ldm
from genart_cli.checkpoints.loader import load_model
from genart_cli.diffusion.pipeline import SampleSettings, sample
from genart_cli.runtime.device import resolve_runtime

diffusers = pytest.importorskip("diffusers")

TOLERANCE = 1e-4


def perturbed(model):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def ldm_folder(tmp_path_factory):
    torch.manual_seed(0)
    vqvae = perturbed(diffusers.VQModel(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), layers_per_block=1,
        latent_channels=3, num_vq_embeddings=64, vq_embed_dim=3, norm_num_groups=32, scaling_factor=1.0))
    unet = perturbed(diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=32, norm_num_groups=32))
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195,
                                        beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                                        steps_offset=1)
    pipeline = diffusers.LDMPipeline(vqvae=vqvae, unet=unet, scheduler=scheduler)
    folder = tmp_path_factory.mktemp("diffusers") / "ldm"
    pipeline.save_pretrained(folder, safe_serialization=True)
    return pipeline, folder


def reference_images(pipeline, steps: int, eta: float, seed: int) -> np.ndarray:
    """LDMPipeline's images in [0, 1], (B, H, W, 3)."""
    generator = torch.Generator().manual_seed(seed)
    return pipeline(batch_size=1, generator=generator, num_inference_steps=steps, eta=eta, output_type="np").images


def genart_images(bundle, steps: int, eta: float, seed: int) -> np.ndarray:
    settings = SampleSettings(steps=steps, eta=eta, seed=seed, num_images=1, batch_size=1)
    pixels = torch.stack([p for _, p in sample(bundle, resolve_runtime("cpu", "fp32"), settings)])
    return ((pixels + 1) / 2).permute(0, 2, 3, 1).numpy()


def test_ldm_pipeline_parity(ldm_folder):
    """eta 0 only: LDMPipeline (diffusers 0.42) passes no generator to the scheduler step, so its
    per-step noise at eta > 0 comes from the global RNG. test_ddim_scheduler_parity covers eta 1."""
    pipeline, folder = ldm_folder
    bundle, report = load_model(folder)
    assert report.layout == "diffusers"
    expected = reference_images(pipeline, steps=20, eta=0.0, seed=3)
    actual = genart_images(bundle, steps=20, eta=0.0, seed=3)
    assert expected.shape == actual.shape
    assert np.abs(actual - expected).max() <= TOLERANCE


def test_original_layout_same_outputs(ldm_folder, tmp_path):
    """The diffusers weights renamed to the original layout load to the same images."""
    pipeline, folder = ldm_folder
    state = {f"first_stage_model.{k}": v for k, v in autoencoder_to_ldm(pipeline.vqvae.state_dict(), 2).items()}
    state.update({f"model.diffusion_model.{k}": v for k, v in unet_to_ldm(pipeline.unet.state_dict(), 2, 32).items()})
    path = tmp_path / "original.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"model": {"params": {
        "linear_start": 0.0015, "linear_end": 0.0195, "timesteps": 1000, "cond_stage_config": "__is_unconditional__",
        "unet_config": {"params": {"image_size": 8, "in_channels": 3, "out_channels": 3, "model_channels": 32,
                                   "attention_resolutions": [2], "num_res_blocks": 2, "channel_mult": [1, 2],
                                   "num_head_channels": 32}}}}}))
    from_folder, _ = load_model(folder)
    from_original, report = load_model(path, config)
    assert report.layout == "ldm"
    assert np.abs(genart_images(from_original, 10, 0.0, 5) - genart_images(from_folder, 10, 0.0, 5)).max() == 0.0


@pytest.fixture(scope="module")
def sr_folder(tmp_path_factory):
    """A narrowed bsr_sr: VQ-f4 autoencoder and a UNet taking [latent, low-res image] (6 channels)."""
    torch.manual_seed(1)
    vqvae = perturbed(diffusers.VQModel(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(32, 32, 64), layers_per_block=1,
        latent_channels=3, num_vq_embeddings=64, vq_embed_dim=3, norm_num_groups=32, scaling_factor=1.0))
    unet = perturbed(diffusers.UNet2DModel(
        sample_size=16, in_channels=6, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=32, norm_num_groups=32))
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0155,
                                        beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                                        steps_offset=1)
    # Imported from its module: diffusers' lazy package attribute wants transformers for this folder.
    from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion_superresolution import (
        LDMSuperResolutionPipeline,
    )

    pipeline = LDMSuperResolutionPipeline(vqvae=vqvae, unet=unet, scheduler=scheduler)
    folder = tmp_path_factory.mktemp("diffusers") / "sr"
    pipeline.save_pretrained(folder, safe_serialization=True)
    return pipeline, folder


def test_super_resolution_pipeline_parity(sr_folder):
    """LDMSuperResolutionPipeline against genart's super_resolve: same weights, input and noise.

    eta 0 for the same reason as test_ldm_pipeline_parity. The input is 16x16, a multiple of 32
    would be needed only by diffusers' PIL preprocessing, which a tensor input skips.
    """
    from genart_cli.diffusion.pipeline import super_resolve

    pipeline, folder = sr_folder
    bundle, report = load_model(folder)
    assert report.layout == "diffusers"
    assert bundle.conditioning == "concat-lowres"
    lowres = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(7)) * 2 - 1
    expected = pipeline(image=lowres, num_inference_steps=20, eta=0.0, generator=torch.Generator().manual_seed(4),
                        output_type="np").images
    settings = SampleSettings(steps=20, eta=0.0, seed=4)
    pixels = super_resolve(bundle, resolve_runtime("cpu", "fp32"), lowres, settings)
    actual = ((pixels + 1) / 2).permute(0, 2, 3, 1).numpy()
    assert actual.shape == expected.shape == (1, 64, 64, 3)
    assert np.abs(actual - expected).max() <= TOLERANCE


def test_super_resolution_pads_odd_sizes(sr_folder):
    """A 13x10 input gives exactly 52x40 pixels; the padding never shows as a resize."""
    from genart_cli.diffusion.pipeline import super_resolve

    _, folder = sr_folder
    bundle, _ = load_model(folder)
    lowres = torch.rand(1, 3, 13, 10, generator=torch.Generator().manual_seed(2)) * 2 - 1
    pixels = super_resolve(bundle, resolve_runtime("cpu", "fp32"), lowres, SampleSettings(steps=3, eta=1.0, seed=1))
    assert pixels.shape == (1, 3, 52, 40)
    assert torch.isfinite(pixels).all()


def test_latent_diffusion_upscale_tiles(sr_folder, tmp_path):
    """Untiled, upscale_latent_diffusion is super_resolve; tiled, it keeps the size and blends smoothly."""
    from genart_cli.diffusion.pipeline import super_resolve
    from genart_cli.upscaling import Tiling, upscale_latent_diffusion

    _, folder = sr_folder
    bundle, _ = load_model(folder)
    cpu = resolve_runtime("cpu", "fp32")
    rgb = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(3))
    settings = SampleSettings(steps=4, eta=1.0, seed=2)
    whole = upscale_latent_diffusion(bundle, rgb, cpu, settings, Tiling(tile=10**9))
    # Equal up to the blend weights dividing out (float rounding only).
    assert (whole - (super_resolve(bundle, cpu, rgb * 2 - 1, settings) + 1) / 2).abs().max() <= 1e-6
    tiled = upscale_latent_diffusion(bundle, rgb, cpu, settings, Tiling(tile=8, overlap=4))
    assert tiled.shape == (1, 3, 96, 80)
    assert torch.isfinite(tiled).all()
    # Blending leaves no seam: the jump between neighbouring columns at a tile border (latent
    # column 8, pixel 32) is no larger than the image's usual column-to-column change.
    steps = (tiled[..., :, 1:] - tiled[..., :, :-1]).abs().mean(dim=(0, 1, 2))
    assert steps[31] <= 2 * steps.median()


def test_upscale_cli_with_a_diffusers_sr_folder(sr_folder, tmp_path):
    from conftest import run_cli, write_test_image

    _, folder = sr_folder
    write_test_image(tmp_path / "small.png", 10, 6)
    done = run_cli(tmp_path, "upscale", "small.png", "--model", folder, "--steps", "3", "--out", "big.png")
    assert done.returncode == 0, done.stderr
    from PIL import Image

    assert Image.open(tmp_path / "big.png").size == (40, 24)
