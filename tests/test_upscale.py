"""Feed-forward upscalers: Real-ESRGAN layouts, exact sizes, tiles equal to the untiled result."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from genart_cli.checkpoints.loader import load_model
from genart_cli.checkpoints.native import ModelBundle, load_bundle, save_bundle
from genart_cli.errors import ModelError
from genart_cli.imaging.resize import imresize
from genart_cli.models.esrgan import UpscalerConfig, build_upscaler, receptive_radius
from genart_cli.runtime.device import resolve_runtime
from genart_cli.upscaling import Tiling, upscale_alpha, upscale_feedforward

from conftest import redraw_parameters, run_cli

CPU = resolve_runtime("cpu", "fp32")


def random_upscaler(**config) -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_upscaler(UpscalerConfig(**config))
        redraw_parameters(model)
    return model.eval()


def tensor_count_and_parameters(model: torch.nn.Module) -> tuple[int, float]:
    return len(model.state_dict()), round(sum(p.numel() for p in model.parameters()) / 1e6, 2)


@pytest.mark.parametrize("config, expected", [
    # Counts of the released files (checkpoint-formats, section 6.1).
    (dict(arch="rrdbnet", scale=4, num_feat=64, num_block=23), (702, 16.70)),
    (dict(arch="rrdbnet", scale=2, num_feat=64, num_block=23), (702, 16.70)),
    (dict(arch="srvgg", scale=4, num_feat=64, num_block=16), (53, 0.62)),
    (dict(arch="srvgg", scale=4, num_feat=64, num_block=32), (101, 1.21)),
])
def test_released_sizes(config, expected):
    assert tensor_count_and_parameters(build_upscaler(UpscalerConfig(**config))) == expected


def test_released_names():
    names = set(build_upscaler(UpscalerConfig(arch="rrdbnet", scale=4, num_block=2)).state_dict())
    assert {"conv_first.weight", "body.1.rdb3.conv5.bias", "conv_body.weight", "conv_up1.weight", "conv_up2.weight",
            "conv_hr.weight", "conv_last.weight"} <= names
    srvgg = set(build_upscaler(UpscalerConfig(arch="srvgg", scale=4, num_feat=8, num_block=16)).state_dict())
    assert {"body.0.weight", "body.1.weight", "body.34.weight"} <= srvgg
    assert "body.35.weight" not in srvgg


@pytest.mark.parametrize("config", [
    dict(arch="rrdbnet", scale=4, num_feat=16, num_block=2, num_grow_ch=8),
    dict(arch="rrdbnet", scale=2, num_feat=16, num_block=1, num_grow_ch=8),
    dict(arch="rrdbnet", scale=1, num_feat=16, num_block=1, num_grow_ch=8),
    dict(arch="srvgg", scale=4, num_feat=8, num_block=3),
    dict(arch="srvgg", scale=2, num_feat=8, num_block=2, act_type="leakyrelu"),
])
def test_layout_inferred_from_tensors(tmp_path, config):
    model = random_upscaler(**config)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    bundle, report = load_model(path)
    assert report.layout == "esrgan"
    assert bundle.upscaler.config == model.config
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(bundle.upscaler(x), model(x))


def test_params_ema_preferred_and_raw_on_request(tmp_path):
    ema, raw = random_upscaler(arch="srvgg", scale=4, num_feat=8, num_block=2), None
    with torch.random.fork_rng():
        torch.manual_seed(1)
        raw = build_upscaler(ema.config)
    state = {f"params_ema.{k}": v for k, v in ema.state_dict().items()}
    state.update({f"params.{k}": v.contiguous() for k, v in raw.state_dict().items()})
    path = tmp_path / "both.safetensors"
    save_file(state, str(path))
    x = torch.rand(1, 3, 6, 6)
    bundle, report = load_model(path)
    assert report.weights == "ema"
    assert torch.equal(bundle.upscaler(x), ema(x))
    bundle, report = load_model(path, weights="raw")
    assert report.weights == "raw"
    assert torch.equal(bundle.upscaler(x), raw(x))


def test_old_esrgan_names(tmp_path):
    model = random_upscaler(arch="rrdbnet", scale=4, num_feat=16, num_block=2, num_grow_ch=8)
    old = {}
    for name, tensor in model.state_dict().items():
        name = name.replace("conv_body", "trunk_conv").replace("conv_up1", "upconv1").replace("conv_up2", "upconv2")
        name = name.replace("conv_hr", "HRconv")
        if name.startswith("body."):
            _, block, rdb, rest = name.split(".", 3)
            name = f"RRDB_trunk.{block}.RDB{rdb[-1]}.{rest}"
        old[name] = tensor
    path = tmp_path / "old.safetensors"
    save_file(old, str(path))
    bundle, report = load_model(path)
    assert report.layout == "esrgan-original"
    x = torch.rand(1, 3, 5, 7)
    assert torch.equal(bundle.upscaler(x), model(x))


def test_pickle_through_convert(tmp_path):
    model = random_upscaler(arch="srvgg", scale=4, num_feat=8, num_block=2)
    source = tmp_path / "net.pth"
    torch.save({"params_ema": model.state_dict(), "params": model.state_dict()}, source)
    out = tmp_path / "net.safetensors"
    done = run_cli(tmp_path, "convert", source, "--out", out)
    assert done.returncode == 0, done.stderr
    bundle = load_bundle(out)
    x = torch.rand(1, 3, 4, 4)
    assert torch.equal(bundle.upscaler(x), model(x))


def test_truncated_upscaler_is_rejected(tmp_path):
    model = random_upscaler(arch="rrdbnet", scale=4, num_feat=16, num_block=2, num_grow_ch=8)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("conv_hr")}
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelError, match="2 missing: conv_hr.bias, conv_hr.weight"):
        load_model(path)


def bundle_of(model) -> ModelBundle:
    from pathlib import Path

    return ModelBundle(path=Path("test"), upscaler=model)


@pytest.mark.parametrize("size", [(1, 1), (13, 7), (16, 16)])
@pytest.mark.parametrize("config", [dict(arch="srvgg", scale=4, num_feat=8, num_block=2),
                                    dict(arch="rrdbnet", scale=2, num_feat=8, num_block=1, num_grow_ch=4),
                                    dict(arch="rrdbnet", scale=1, num_feat=8, num_block=1, num_grow_ch=4)])
def test_output_is_exactly_scale_times_input(config, size):
    model = random_upscaler(**config)
    out = upscale_feedforward(bundle_of(model), torch.rand(1, 3, *size), CPU, Tiling())
    assert out.shape == (1, 3, size[0] * model.config.scale, size[1] * model.config.scale)


@pytest.mark.parametrize("config", [dict(arch="srvgg", scale=4, num_feat=8, num_block=3),
                                    dict(arch="rrdbnet", scale=2, num_feat=8, num_block=1, num_grow_ch=4)])
def test_tiles_with_enough_overlap_equal_the_untiled_result(config):
    model = random_upscaler(**config)
    image = torch.rand(1, 3, 45, 38, generator=torch.Generator().manual_seed(3))
    whole = upscale_feedforward(bundle_of(model), image, CPU, Tiling())
    tiled = upscale_feedforward(bundle_of(model), image, CPU, Tiling(tile=16, overlap=receptive_radius(model.config)))
    # Convolutions of different tensor sizes may sum in another order: allow float rounding only.
    assert (tiled - whole).abs().max() <= 1e-6
    short = upscale_feedforward(bundle_of(model), image, CPU, Tiling(tile=16, overlap=0))
    assert (short - whole).abs().max() > 1e-3  # without context, tile edges differ: the check can fail


def test_alpha_upscales_smoothly():
    alpha = torch.zeros(1, 1, 8, 8)
    alpha[..., 2:6, 2:6] = 1.0
    big = upscale_alpha(alpha, 4)
    assert big.shape == (1, 1, 32, 32)
    assert big.min() >= 0
    assert big.max() <= 1
    # Smooth: intermediate values appear at the edge of the opaque square, unlike nearest neighbour.
    assert ((big > 0.05) & (big < 0.95)).any()


def test_native_round_trip(tmp_path):
    model = random_upscaler(arch="srvgg", scale=4, num_feat=8, num_block=2)
    path = tmp_path / "up.safetensors"
    save_bundle(path, upscaler=model, model_card="test")
    bundle, report = load_model(path)
    assert report.layout == "genart"
    x = torch.rand(1, 3, 5, 5)
    assert torch.equal(bundle.upscaler(x), model(x))


def test_imresize_matches_a_linear_ramp_and_keeps_constants():
    ramp = torch.arange(32.0).repeat(32, 1)[None, None]
    small = imresize(ramp, scale=0.25)
    # Away from the borders, cubic interpolation reproduces a linear function: centres at 4 i + 1.5.
    assert torch.allclose(small[0, 0, 0, 2:-2], torch.arange(2, 6) * 4 + 1.5, atol=1e-5)
    assert imresize(torch.full((1, 3, 12, 12), 0.25), scale=0.25).sub(0.25).abs().max() < 1e-6


def test_sample_rejects_an_upscaler(tmp_path):
    path = tmp_path / "up.safetensors"
    save_bundle(path, upscaler=random_upscaler(arch="srvgg", scale=4, num_feat=8, num_block=2))
    done = run_cli(tmp_path, "sample", "--model", path, "--out", tmp_path / "x.png", "--steps", "2")
    assert done.returncode == 4
    assert "genart upscale" in done.stderr
