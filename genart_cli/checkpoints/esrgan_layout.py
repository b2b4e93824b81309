"""Real-ESRGAN and ESRGAN weight layouts: recognise them, rename old names, infer the architecture.

BasicSR saves `{"params_ema": state, "params": state}` (either may be missing); a safetensors
export is usually the flat state, sometimes with that first level kept as a name prefix. The
original ESRGAN release uses older names (RRDB_trunk, trunk_conv, upconv1, HRconv) for the same
RRDBNet, mapped here one to one. Everything the architecture needs is in the tensor shapes.
"""

from __future__ import annotations

import re

import torch

from ..errors import ModelError
from ..models.esrgan import UpscalerConfig

OLD_ESRGAN_NAMES = [
    (re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\."), r"body.\1.rdb\2."),
    (re.compile(r"^trunk_conv\."), "conv_body."),
    (re.compile(r"^upconv1\."), "conv_up1."),
    (re.compile(r"^upconv2\."), "conv_up2."),
    (re.compile(r"^HRconv\."), "conv_hr."),
]
WEIGHT_KEYS = ("params_ema", "params")


def is_esrgan_state(names: set[str]) -> bool:
    return any(n.startswith(("conv_first.", "RRDB_trunk.", "params_ema.", "params.")) for n in names) or (
        "body.0.weight" in names and any(re.match(r"body\.\d+\.weight$", n) for n in names))


def select_weights(state: dict[str, torch.Tensor], weights: str) -> tuple[dict[str, torch.Tensor], str]:
    """Strip a `params_ema.` or `params.` level; prefer the EMA copy unless weights == "raw".

    Returns (flat state, which copy: "ema", "raw" or "single").
    """
    levels = {key: {n[len(key) + 1:]: t for n, t in state.items() if n.startswith(key + ".")} for key in WEIGHT_KEYS}
    if not levels["params_ema"] and not levels["params"]:
        return state, "single"
    if weights == "raw" and levels["params"]:
        return levels["params"], "raw"
    if levels["params_ema"]:
        return levels["params_ema"], "ema"
    return levels["params"], "raw"


def rename_old_esrgan(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """Map the original ESRGAN names to BasicSR's; return (state, whether anything was renamed)."""
    renamed = {}
    changed = False
    for name, tensor in state.items():
        new = name
        for pattern, replacement in OLD_ESRGAN_NAMES:
            new = pattern.sub(replacement, new)
        changed |= new != name
        renamed[new] = tensor
    return renamed, changed


def infer_upscaler_config(state: dict[str, torch.Tensor], label: str) -> UpscalerConfig:
    """Read the architecture from tensor names and shapes (BasicSR names)."""
    if "conv_first.weight" in state:
        return infer_rrdbnet_config(state, label)
    return infer_srvgg_config(state, label)


def infer_rrdbnet_config(state: dict[str, torch.Tensor], label: str) -> UpscalerConfig:
    first = state["conv_first.weight"]  # (num_feat, 3 * unshuffle^2, 3, 3)
    scale = {1: 4, 4: 2, 16: 1}.get(first.shape[1] // 3)
    if scale is None or first.shape[1] % 3:
        raise ModelError(f"{label}: RRDBNet conv_first takes {first.shape[1]} channels; expected 3, 12 or 48 "
                         "(scale 4, 2 or 1)")

    blocks = {int(m.group(1)) for n in state if (m := re.match(r"body\.(\d+)\.rdb1\.conv1\.weight$", n))}
    if not blocks:
        raise ModelError(f"{label}: RRDBNet without body.N.rdb1 blocks; the file is incomplete")

    return UpscalerConfig(arch="rrdbnet", scale=scale, num_feat=first.shape[0], num_block=max(blocks) + 1,
                          num_grow_ch=state["body.0.rdb1.conv1.weight"].shape[0],
                          out_channels=state["conv_last.weight"].shape[0] if "conv_last.weight" in state else 3)


def infer_srvgg_config(state: dict[str, torch.Tensor], label: str) -> UpscalerConfig:
    convs = sorted(int(m.group(1)) for n, t in state.items()
                   if (m := re.match(r"body\.(\d+)\.weight$", n)) and t.dim() == 4)
    if not convs or convs[0] != 0:
        raise ModelError(f"{label}: not an RRDBNet or SRVGGNetCompact layout (no conv_first or body.0 conv)")
    last = convs[-1]  # body: conv, act, (conv, act) * num_conv, conv -> last index 2 * num_conv + 2
    if last % 2:
        raise ModelError(f"{label}: SRVGGNetCompact body ends at body.{last}, an activation; the file is incomplete")

    out = state[f"body.{last}.weight"].shape[0]
    scale = round((out / 3) ** 0.5)
    if 3 * scale * scale != out:
        raise ModelError(f"{label}: the last conv has {out} channels, not 3 x scale^2")

    has_prelu = "body.1.weight" in state and state["body.1.weight"].dim() == 1
    return UpscalerConfig(arch="srvgg", scale=scale, num_feat=state["body.0.weight"].shape[0],
                          num_block=(last - 2) // 2, act_type="prelu" if has_prelu else "leakyrelu",
                          in_channels=state["body.0.weight"].shape[1])
