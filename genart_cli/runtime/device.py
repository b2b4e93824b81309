"""Device and precision choice. Weights stay in fp32; lower precisions run through autocast.

auto: CUDA if available (then MPS), else the CPU. Precision auto: fp16 on CUDA, fp32 elsewhere.
fp32 is the exact reference path; bf16 on a CPU with AMX is the fast path, with some error.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..errors import GenartError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class DeviceError(GenartError):
    exit_code = 1


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # "fp32", "fp16" or "bf16"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES[self.precision])

    def describe(self) -> str:
        return f"{self.device.type} {self.precision}"


def _mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def resolve_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """Turn the --device and --precision option values into a Runtime, or raise DeviceError."""
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif _mps_available():
            device = "mps"
        else:
            device = "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda: no CUDA device is available to this torch build; use --device cpu")
    elif device == "mps" and not _mps_available():
        raise DeviceError("--device mps: MPS is not available on this machine; use --device cpu")
    if precision == "auto":
        precision = "fp16" if device == "cuda" else "fp32"
    if device not in DEVICES or precision not in PRECISIONS:
        raise DeviceError(f"unknown device {device!r} or precision {precision!r}")
    return Runtime(torch.device(device), precision)
