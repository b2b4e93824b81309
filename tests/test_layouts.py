"""Checkpoints in the original latent-diffusion layout, as pickles and safetensors, and diffusers folders."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import run_cli, tiny_autoencoder, tiny_unet
from genart_cli.checkpoints.ldm_layout import ema_name
from genart_cli.checkpoints.loader import load_model
from genart_cli.checkpoints.native import load_bundle
from genart_cli.diffusion.schedule import ScheduleConfig, make_betas


def ldm_state(with_ema: bool) -> dict[str, torch.Tensor]:
    """A latent-diffusion state_dict: UNet, first stage, schedule buffers and optionally an EMA copy."""
    unet, autoencoder = tiny_unet(0), tiny_autoencoder(0)
    state = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    state.update({f"first_stage_model.{k}": v for k, v in autoencoder.state_dict().items()})
    state["betas"] = make_betas(ScheduleConfig(linear_start=0.0015, linear_end=0.0155)).float()
    if with_ema:
        ema = tiny_unet(1)
        state.update({ema_name(k): v for k, v in ema.state_dict().items()})
        state["model_ema.decay"] = torch.tensor(0.9999)
        state["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    return state


@pytest.fixture(scope="module")
def ldm_ckpt(tmp_path_factory):
    """A Lightning-style pickle: weights under state_dict, bookkeeping beside them."""
    path = tmp_path_factory.mktemp("ldm") / "model.ckpt"
    torch.save({"state_dict": ldm_state(with_ema=True), "epoch": 3, "global_step": 1000,
                "pytorch-lightning_version": "1.4.2"}, path)
    return path


def test_convert_ckpt_uses_ema(ldm_ckpt, tmp_path):
    result = run_cli(tmp_path, "convert", ldm_ckpt, "--out", "converted.safetensors")
    assert result.returncode == 0, result.stderr
    bundle = load_bundle(tmp_path / "converted.safetensors")
    expected = tiny_unet(1).state_dict()
    assert all(torch.equal(bundle.unet.state_dict()[k], expected[k]) for k in expected)


def test_convert_ckpt_raw_weights(ldm_ckpt, tmp_path):
    result = run_cli(tmp_path, "convert", ldm_ckpt, "--out", "raw.safetensors", "--weights", "raw")
    assert result.returncode == 0, result.stderr
    bundle = load_bundle(tmp_path / "raw.safetensors")
    expected = tiny_unet(0).state_dict()
    assert all(torch.equal(bundle.unet.state_dict()[k], expected[k]) for k in expected)


def test_convert_reads_schedule_buffer(ldm_ckpt, tmp_path):
    result = run_cli(tmp_path, "convert", ldm_ckpt, "--out", "s.safetensors")
    assert result.returncode == 0, result.stderr
    schedule = load_bundle(tmp_path / "s.safetensors").schedule
    assert schedule.linear_start == pytest.approx(0.0015, rel=1e-5)
    assert schedule.linear_end == pytest.approx(0.0155, rel=1e-5)


def test_convert_rejects_code_pickle(tmp_path):
    """A pickle that needs a class beyond tensors and containers is rejected, never executed."""
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": argparse.Namespace(lr=1e-4)}, path)
    result = run_cli(tmp_path, "convert", path, "--out", "x.safetensors")
    assert result.returncode == 4
    assert "evil.ckpt" in result.stderr
    assert "never runs code" in result.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_sample_rejects_pickle(ldm_ckpt, tmp_path):
    result = run_cli(tmp_path, "sample", "--model", ldm_ckpt, "--steps", "1", "--out", "x.png")
    assert result.returncode == 4
    assert "genart convert" in result.stderr


def test_ldm_safetensors_samples(tmp_path):
    """The original layout as safetensors samples directly; content, not the extension, decides."""
    path = tmp_path / "model.weights"
    save_file(ldm_state(with_ema=True), str(path))
    result = run_cli(tmp_path, "sample", "--model", path, "--steps", "2", "--out", "x.png")
    assert result.returncode == 0, result.stderr
    assert "using the ema weights" in result.stderr


def test_ldm_missing_ema_tensors(tmp_path):
    state = ldm_state(with_ema=True)
    dropped = ema_name("out.2.weight")
    del state[dropped]
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))
    result = run_cli(tmp_path, "sample", "--model", path, "--steps", "1", "--out", "x.png")
    assert result.returncode == 4
    assert "--weights raw" in result.stderr


def test_inspect_reports_inferred(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(ldm_state(with_ema=True), str(path))
    result = run_cli(tmp_path, "inspect", path)
    assert result.returncode == 0, result.stderr
    assert "ldm" in result.stdout
    assert "UNet architecture" in result.stdout
    assert "num_head_channels" in result.stdout


def test_standalone_autoencoder_ignores_loss(tmp_path):
    state = dict(tiny_autoencoder(0).state_dict())
    state["loss.discriminator.main.0.weight"] = torch.zeros(4, 3, 4, 4)
    path = tmp_path / "vq.safetensors"
    save_file(state, str(path))
    bundle, report = load_model(path)
    assert report.layout == "ldm-autoencoder"
    assert bundle.unet is None
    assert any("training-only" in note for note in report.notes)


def test_yaml_config_sets_heads(tmp_path):
    """num_heads cannot be read from weights; the yaml config sets it."""
    state = ldm_state(with_ema=False)
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"model": {"params": {
        "linear_start": 0.0015, "linear_end": 0.0155, "timesteps": 1000,
        "unet_config": {"params": {"image_size": 8, "in_channels": 3, "out_channels": 3, "model_channels": 32,
                                   "attention_resolutions": [2], "num_res_blocks": 2, "channel_mult": [1, 2],
                                   "num_head_channels": 16}},
        "first_stage_config": {"target": "ldm.models.autoencoder.VQModelInterface", "params": {
            "embed_dim": 3, "n_embed": 64, "ddconfig": {"double_z": False, "z_channels": 3, "resolution": 32,
                                                        "in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 2],
                                                        "num_res_blocks": 2, "attn_resolutions": []}}},
        "cond_stage_config": "__is_unconditional__"}}}))
    bundle, report = load_model(path, config)
    assert bundle.unet.config.num_head_channels == 16
    assert bundle.conditioning == "none"
    assert "UNet architecture (config)" in report.read
