"""Class-conditional cross-attention models in cin256-v2's layout: loading, guidance, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from genart_cli.checkpoints.loader import load_model
from genart_cli.diffusion.denoiser import EpsDenoiser
from genart_cli.diffusion.schedule import ScheduleConfig, make_alphas_cumprod
from genart_cli.errors import ModelError
from genart_cli.models.unet import UNetConfig, UNetModel

from conftest import redraw_parameters, run_cli, tiny_autoencoder

CONTEXT = 32
CLASSES = 1001  # cin256-v2: 1000 ImageNet classes plus class 1000 for "no class"


def cin_unet() -> UNetModel:
    config = UNetConfig(model_channels=32, channel_mult=(1, 2), attention_resolutions=(2,), num_heads=1,
                        num_head_channels=-1, context_dim=CONTEXT, image_size=8)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = UNetModel(config)
        redraw_parameters(model)
    return model.eval()


def yaml_for(unet: UNetModel) -> dict:
    c = unet.config
    return {"model": {"params": {
        "linear_start": 0.0015, "linear_end": 0.0195, "timesteps": 1000, "conditioning_key": "crossattn",
        "cond_stage_config": {"target": "ldm.modules.encoders.modules.ClassEmbedder",
                              "params": {"embed_dim": CONTEXT, "n_classes": CLASSES}},
        "unet_config": {"params": {"image_size": 8, "in_channels": 3, "out_channels": 3, "model_channels": 32,
                                   "attention_resolutions": [2], "num_res_blocks": c.num_res_blocks,
                                   "channel_mult": [1, 2], "num_heads": 1, "use_spatial_transformer": True,
                                   "context_dim": CONTEXT, "transformer_depth": 1}}}}}


@pytest.fixture(scope="module")
def cin_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cin")
    unet, autoencoder = cin_unet(), tiny_autoencoder(0)
    table = torch.randn(CLASSES, CONTEXT, generator=torch.Generator().manual_seed(5))
    state = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    state.update({f"first_stage_model.{k}": v for k, v in autoencoder.state_dict().items()})
    state["cond_stage_model.embedding.weight"] = table
    path = folder / "cin.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    config = folder / "cin.yaml"
    config.write_text(json.dumps(yaml_for(unet)))
    return path, config, unet, table


def test_loads_with_class_embedder(cin_checkpoint):
    path, config, unet, table = cin_checkpoint
    bundle, report = load_model(path, config)
    assert bundle.conditioning == "crossattn"
    assert torch.equal(bundle.class_embedder.weight, table)
    assert bundle.unet.config.num_heads == 1
    assert bundle.unet.config.context_dim == CONTEXT
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([3])
    context = table[[7]][:, None]
    assert torch.equal(bundle.unet(x, t, context=context), unet(x, t, context=context))


def test_heads_default_without_config_is_reported(cin_checkpoint):
    path, _, _, _ = cin_checkpoint
    bundle, report = load_model(path)
    assert bundle.unet.config.context_dim == CONTEXT
    assert any("num_head_channels" in item for item in report.defaulted)


def test_guidance_is_uncond_plus_scale_times_difference(cin_checkpoint):
    path, config, unet, table = cin_checkpoint
    alphas = make_alphas_cumprod(ScheduleConfig())
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    cond, uncond = table[[3, 9]][:, None], table[[1000, 1000]][:, None]
    guided = EpsDenoiser(unet, alphas, context=cond, uncond_context=uncond, guidance_scale=3.0).eps(x, 500)
    e_c = EpsDenoiser(unet, alphas, context=cond).eps(x, 500)
    e_u = EpsDenoiser(unet, alphas, context=uncond).eps(x, 500)
    assert (guided - (e_u + 3.0 * (e_c - e_u))).abs().max() <= 1e-5


def test_sample_cli_needs_a_class_and_writes_it(cin_checkpoint, tmp_path):
    path, config, _, _ = cin_checkpoint
    done = run_cli(tmp_path, "sample", "--model", path, "--config", config, "--steps", "2", "--out", "a.png")
    assert done.returncode == 2
    assert "--class-label" in done.stderr
    done = run_cli(tmp_path, "sample", "--model", path, "--config", config, "--steps", "2", "--out", "a.png",
                   "--class-label", "207", "--guidance-scale", "3")
    assert done.returncode == 0, done.stderr
    from genart_cli.imaging.io import read_png_settings

    settings = read_png_settings(tmp_path / "a.png")
    assert settings["class_label"] == "207"
    assert settings["guidance_scale"] == "3.0"
    done = run_cli(tmp_path, "sample", "--model", path, "--config", config, "--steps", "2", "--out", "b.png",
                   "--class-label", "1001")
    assert done.returncode == 2
    assert "outside 0 to 1000" in done.stderr


def test_text_conditioned_model_is_refused(cin_checkpoint, tmp_path):
    path, config, unet, _ = cin_checkpoint
    state = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    state.update({f"first_stage_model.{k}": v for k, v in tiny_autoencoder(0).state_dict().items()})
    state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.zeros(1, 77)
    text = tmp_path / "text.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(text))
    with pytest.raises(ModelError, match="text encoder"):
        load_model(text)


def test_cin256_v2_full_size():
    """cin256-v2's UNet at its released size: 688 tensors, 400.9M parameters (checkpoint-formats 2.1)."""
    config = UNetConfig(model_channels=192, channel_mult=(1, 2, 3, 5), attention_resolutions=(8, 4, 2), num_heads=1,
                        num_head_channels=-1, context_dim=512, image_size=64)
    model = UNetModel(config)
    assert len(model.state_dict()) == 688
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 400.9
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert model(x, torch.tensor([5]), context=torch.randn(1, 1, 512)).shape == (1, 3, 16, 16)
