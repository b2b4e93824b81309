"""Device and precision choice. Weights stay in fp32; lower precisions run through autocast.

auto: CUDA if available (then MPS), else the CPU. Precision auto: fp16 on CUDA, fp32 elsewhere.
fp32 is the exact reference path; bf16 on a CPU with AMX is the fast path, with some error.
The fp16 and bf16 paths also switch models to channels_last (NHWC) memory format.
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

    @property
    def channels_last(self) -> bool:
        # The reduced-precision paths gain from NHWC convolutions (oneDNN on the CPU, tensor cores
        # on CUDA); fp32 stays in the default layout as the exact reference.
        return self.precision != "fp32"

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move a model to this runtime's device (in place) and set its memory format; return it."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

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
