"""Device and precision choice, and the fp32 fallback of a decode that yields NaN."""

from __future__ import annotations

import pytest
import torch

from genart_cli.errors import NumericalError
from genart_cli.latents import decode
from genart_cli.runtime.device import DeviceError, resolve_runtime


class FakeAutoencoder(torch.nn.Module):
    """Decodes to NaN under autocast (as an fp16 overflow would), and to `fp32_value` without it."""

    def __init__(self, fp32_value: float):
        super().__init__()
        self.fp32_value = fp32_value
        self.calls = []

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        under_autocast = torch.is_autocast_enabled("cpu")
        self.calls.append(under_autocast)
        value = float("nan") if under_autocast else self.fp32_value
        return torch.full((z.shape[0], 3, 4, 4), value)


def test_auto_precision_on_cpu_is_fp32():
    runtime = resolve_runtime("cpu", "auto")
    assert runtime.device.type == "cpu"
    assert runtime.precision == "fp32"


def test_cuda_request_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="--device cpu"):
        resolve_runtime("cuda", "auto")


def test_auto_device_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    runtime = resolve_runtime("auto", "auto")
    assert runtime.device.type == "cuda"
    assert runtime.precision == "fp16"


def test_nan_decode_redone_in_fp32():
    autoencoder = FakeAutoencoder(fp32_value=0.5)
    pixels = decode(autoencoder, torch.zeros(2, 3, 2, 2), resolve_runtime("cpu", "bf16"))
    assert autoencoder.calls == [True, False]
    assert torch.equal(pixels, torch.full((2, 3, 4, 4), 0.5))


def test_nan_in_fp32_raises():
    autoencoder = FakeAutoencoder(fp32_value=float("inf"))
    with pytest.raises(NumericalError, match="NaN or Inf"):
        decode(autoencoder, torch.zeros(1, 3, 2, 2), resolve_runtime("cpu", "bf16"), label="image 0")


def test_fp32_decode_runs_once():
    autoencoder = FakeAutoencoder(fp32_value=2.0)
    pixels = decode(autoencoder, torch.zeros(1, 3, 2, 2), resolve_runtime("cpu", "fp32"))
    assert autoencoder.calls == [False]
    assert pixels.max().item() == 1.0  # clamped to the pixel range [-1, 1]
