"""Inpainting: the 7-channel path against the reference preprocessing, RePaint, masks, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from genart_cli.checkpoints.loader import load_model
from genart_cli.checkpoints.native import save_bundle
from genart_cli.diffusion.schedule import ScheduleConfig
from genart_cli.inpainting import InpaintSettings, inpaint
from genart_cli.models.unet import UNetConfig, UNetModel
from genart_cli.runtime.device import resolve_runtime

from conftest import read_pixels, redraw_parameters, run_cli, tiny_autoencoder, write_test_image

diffusers = pytest.importorskip("diffusers")
CPU = resolve_runtime("cpu", "fp32")


@pytest.fixture(scope="module")
def dedicated_model(tmp_path_factory):
    """inpainting_big's layout, narrowed: UNet input = [noisy latent 3, masked-image latent 3, mask 1]."""
    config = UNetConfig(in_channels=7, out_channels=3, model_channels=32, channel_mult=(1, 2),
                        attention_resolutions=(2,), num_heads=8, num_head_channels=-1, resblock_updown=True,
                        image_size=8)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        unet = UNetModel(config)
        redraw_parameters(unet)
    path = tmp_path_factory.mktemp("models") / "inpaint.safetensors"
    save_bundle(path, autoencoder=tiny_autoencoder(0), unet=unet.eval(), conditioning="concat-inpaint",
                schedule=ScheduleConfig(linear_end=0.0205))
    return path


def reference_inpaint(bundle, image_uint8: np.ndarray, mask_uint8: np.ndarray, steps: int, seed: int) -> np.ndarray:
    """latent-diffusion's scripts/inpaint.py preprocessing, with diffusers' DDIM as the sampler."""
    image = torch.from_numpy(image_uint8.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    mask = torch.from_numpy(mask_uint8.astype(np.float32) / 255.0)[None, None]
    mask = (mask >= 0.5).float()
    masked_image = (1 - mask) * image
    image, mask, masked_image = image * 2 - 1, mask * 2 - 1, masked_image * 2 - 1
    ae, unet = bundle.autoencoder, bundle.unet
    with torch.no_grad():
        c = ae.encode(masked_image)
        cc = F.interpolate(mask, size=c.shape[-2:])
        c = torch.cat([c, cc], dim=1)
        scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0205,
                                            beta_schedule="scaled_linear", clip_sample=False,
                                            set_alpha_to_one=False, steps_offset=1)
        scheduler.set_timesteps(steps)
        x = torch.randn((3, *c.shape[-2:]), generator=torch.Generator().manual_seed(seed))[None]
        for t in scheduler.timesteps:
            eps = unet(torch.cat([x, c], dim=1), t.reshape(1))
            x = scheduler.step(eps, t, x, eta=0.0).prev_sample
        predicted = torch.clamp((ae.decode(x) + 1) / 2, 0, 1)
    image, mask = (image + 1) / 2, (mask + 1) / 2
    return ((1 - mask) * image + mask * predicted)[0].permute(1, 2, 0).numpy()


def test_dedicated_path_matches_reference_preprocessing(dedicated_model):
    bundle, _ = load_model(dedicated_model)
    assert bundle.conditioning == "concat-inpaint"
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[4:11, 3:9] = 255
    expected = reference_inpaint(bundle, image, mask, steps=10, seed=2)
    rgb = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]
    m = torch.from_numpy((mask >= 128).astype(np.float32))[None, None]
    _, actual = next(inpaint(bundle, CPU, rgb, m, InpaintSettings(steps=10, seed=2)))
    actual = actual[0].permute(1, 2, 0).numpy()
    assert np.abs(actual - expected).max() <= 1e-4
    assert np.abs(actual - image / 255)[mask >= 128].max() > 0.05  # the masked part was repainted


def test_unmasked_pixels_are_bit_identical(tmp_path, tiny_model):
    write_test_image(tmp_path / "in.png", 16, 16)
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[5:9, 2:12] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    done = run_cli(tmp_path, "inpaint", "in.png", "--mask", "mask.png", "--model", tiny_model, "--steps", "3",
                   "--out", "out.png", "--mask-blur", "2")
    assert done.returncode == 0, done.stderr
    before, after = read_pixels(tmp_path / "in.png"), read_pixels(tmp_path / "out.png")
    assert np.array_equal(before[mask < 128], after[mask < 128])
    assert not np.array_equal(before[mask >= 128], after[mask >= 128])


def test_one_pixel_line_is_repainted(tmp_path, tiny_model):
    write_test_image(tmp_path / "in.png", 16, 16, seed=4)
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[:, 7] = 255  # one pixel wide, on the odd column of a 2-pixel latent cell
    Image.fromarray(mask).save(tmp_path / "line.png")
    done = run_cli(tmp_path, "inpaint", "in.png", "--mask", "line.png", "--model", tiny_model, "--steps", "3",
                   "--out", "out.png")
    assert done.returncode == 0, done.stderr
    before, after = read_pixels(tmp_path / "in.png"), read_pixels(tmp_path / "out.png")
    assert (before[:, 7] != after[:, 7]).any()
    assert np.array_equal(np.delete(before, 7, axis=1), np.delete(after, 7, axis=1))


def test_odd_size_and_crop_keep_size(tmp_path, tiny_model):
    write_test_image(tmp_path / "in.png", 37, 23)
    mask = np.zeros((23, 37), dtype=np.uint8)
    mask[10:14, 20:30] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    for extra, name in (([], "plain.png"), (["--crop-to-mask", "3"], "crop.png")):
        done = run_cli(tmp_path, "inpaint", "in.png", "--mask", "mask.png", "--model", tiny_model, "--steps", "2",
                       "--out", name, *extra)
        assert done.returncode == 0, done.stderr
        before, after = read_pixels(tmp_path / "in.png"), read_pixels(tmp_path / name)
        assert after.shape == before.shape
        assert np.array_equal(before[mask < 128], after[mask < 128])


def test_bad_masks(tmp_path, tiny_model):
    write_test_image(tmp_path / "in.png", 16, 16)
    Image.fromarray(np.zeros((8, 16), dtype=np.uint8)).save(tmp_path / "small.png")
    done = run_cli(tmp_path, "inpaint", "in.png", "--mask", "small.png", "--model", tiny_model, "--out", "o.png")
    assert done.returncode == 3
    assert "16x8" in done.stderr
    assert "16x16" in done.stderr
    (tmp_path / "notes.txt").write_text("not a mask")
    done = run_cli(tmp_path, "inpaint", "in.png", "--mask", "notes.txt", "--model", tiny_model, "--out", "o.png")
    assert done.returncode == 3
    assert "notes.txt" in done.stderr
    assert not (tmp_path / "o.png").exists()
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(tmp_path / "empty.png")
    done = run_cli(tmp_path, "inpaint", "in.png", "--mask", "empty.png", "--model", tiny_model, "--out", "o.png")
    assert done.returncode == 0
    assert "empty" in done.stderr
    assert np.array_equal(read_pixels(tmp_path / "in.png"), read_pixels(tmp_path / "o.png"))
    done = run_cli(tmp_path, "inpaint", "in.png", "--model", tiny_model, "--out", "p.png")
    assert done.returncode == 2
    assert "--mask" in done.stderr


def test_full_mask_and_inverted_and_alpha(tmp_path, tiny_model):
    write_test_image(tmp_path / "in.png", 16, 16)
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(tmp_path / "black.png")
    done = run_cli(tmp_path, "inpaint", "in.png", "--mask", "black.png", "--invert-mask", "--model", tiny_model,
                   "--steps", "2", "--out", "full.png")
    assert done.returncode == 0, done.stderr
    assert (read_pixels(tmp_path / "full.png") != read_pixels(tmp_path / "in.png")).mean() > 0.5
    rgba = np.full((16, 16, 4), 200, dtype=np.uint8)
    rgba[:4, :, 3] = 0
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "holes.png")
    done = run_cli(tmp_path, "inpaint", "holes.png", "--mask-from-alpha", "--model", tiny_model, "--steps", "2",
                   "--out", "filled.png")
    assert done.returncode == 0, done.stderr
    after = read_pixels(tmp_path / "filled.png")
    assert (after[4:] == 200).all()
    assert not (after[:4] == 200).all()


def test_resample_changes_the_result_and_is_reproducible(tiny_model):
    bundle, _ = load_model(tiny_model)
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    runs = [next(inpaint(bundle, CPU, image, mask, InpaintSettings(steps=4, resample=r)))[1] for r in (1, 3, 3)]
    assert torch.equal(runs[1], runs[2])
    assert not torch.equal(runs[0], runs[1])
