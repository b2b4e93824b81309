"""Infer autoencoder and UNet configs from tensor names and shapes in latent-diffusion naming.

Each function takes a state dict without its prefix (`encoder.conv_in.weight`, not
`first_stage_model.encoder.conv_in.weight`) and returns the config plus the names of the fields
that could not be read from the tensors and were filled with a documented default.
"""

from __future__ import annotations

import re

import torch

from ..errors import ModelError
from ..models.autoencoder import AutoencoderConfig
from ..models.unet import UNetConfig

# The released first stages were all trained at 256 pixels. The value only places attention.
DEFAULT_AE_RESOLUTION = 256
# Head layout cannot be read from the weights. 32 channels per head is what the released
# celebahq, ffhq, bedrooms and bsr_sr UNets use; inpainting_big and churches need --config.
DEFAULT_NUM_HEAD_CHANNELS = 32


def indices_under(names, prefix: str) -> list[int]:
    """Return the sorted integers that follow `prefix` in any name, e.g. prefix 'encoder.down.'."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for name in names if (m := pattern.match(name))})


def infer_autoencoder_config(state: dict[str, torch.Tensor], label: str) -> tuple[AutoencoderConfig, list[str]]:
    """Infer an AutoencoderConfig; `label` names the file in errors."""
    names = set(state)
    if "encoder.conv_in.weight" not in names or "decoder.conv_in.weight" not in names:
        raise ModelError(f"{label}: no encoder.conv_in / decoder.conv_in tensors, so this is not a "
                         "latent-diffusion or taming autoencoder")
    ch = state["encoder.conv_in.weight"].shape[0]
    levels = indices_under(names, "encoder.down.")
    ch_mult = tuple(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in levels)
    num_res_blocks = len(indices_under(names, "encoder.down.0.block."))
    resolution = DEFAULT_AE_RESOLUTION
    attn_resolutions = tuple(resolution // 2**i for i in levels if f"encoder.down.{i}.attn.0.q.weight" in names)
    kind = "vq" if "quantize.embedding.weight" in names else "kl"
    config = AutoencoderConfig(
        kind=kind,
        in_channels=state["encoder.conv_in.weight"].shape[1],
        out_ch=state["decoder.conv_out.weight"].shape[0],
        ch=ch,
        ch_mult=ch_mult,
        num_res_blocks=num_res_blocks,
        attn_resolutions=attn_resolutions,
        resolution=resolution,
        z_channels=state["decoder.conv_in.weight"].shape[1],
        embed_dim=state["post_quant_conv.weight"].shape[1],
        n_embed=state["quantize.embedding.weight"].shape[0] if kind == "vq" else 0,
        mid_attention="encoder.mid.attn_1.q.weight" in names,
    )
    return config, ["resolution"]


def infer_unet_config(state: dict[str, torch.Tensor], label: str) -> tuple[UNetConfig, list[str]]:
    """Infer a UNetConfig; the head layout is a default unless the caller overrides it."""
    names = set(state)
    if "input_blocks.0.0.weight" not in names or "out.2.weight" not in names:
        raise ModelError(f"{label}: no input_blocks.0.0 / out.2 tensors, so this is not a latent-diffusion UNet")
    context_dim, depth = None, 1
    transformer_keys = sorted(n for n in names if ".transformer_blocks." in n and n.endswith(".attn2.to_k.weight"))
    if transformer_keys:
        context_dim = state[transformer_keys[0]].shape[1]
        block = transformer_keys[0].split(".transformer_blocks.")[0]
        depth = len({n.split(".transformer_blocks.")[1].split(".")[0] for n in names
                     if n.startswith(block + ".transformer_blocks.")})
    model_channels, in_channels = state["input_blocks.0.0.weight"].shape[:2]
    outputs = indices_under(names, "output_blocks.")
    # The first output entry that ends in an upsampler closes the deepest level: its index is
    # num_res_blocks, because each level has num_res_blocks + 1 output entries.
    upsampler_entries = [n for n in outputs if any(
        f"output_blocks.{n}.{k}.{leaf}" in names for k in (1, 2) for leaf in ("conv.weight", "in_layers.2.weight"))]
    if not upsampler_entries:
        num_res_blocks, num_levels = len(outputs) - 1, 1
    else:
        num_res_blocks = upsampler_entries[0]
        num_levels = len(outputs) // (num_res_blocks + 1)
    resblock_updown = any(f"output_blocks.{n}.{k}.in_layers.2.weight" in names for n in outputs for k in (1, 2))

    channel_mult, attention = [], []
    for level in range(num_levels):
        first = 1 + level * (num_res_blocks + 1)
        channel_mult.append(state[f"input_blocks.{first}.0.out_layers.3.weight"].shape[0] // model_channels)
        if f"input_blocks.{first}.1.qkv.weight" in names or f"input_blocks.{first}.1.proj_in.weight" in names:
            attention.append(2**level)
    first_out = channel_mult[0] * model_channels
    scale_shift = state["input_blocks.1.0.emb_layers.1.weight"].shape[0] == 2 * first_out
    config = UNetConfig(
        in_channels=in_channels,
        out_channels=state["out.2.weight"].shape[0],
        model_channels=model_channels,
        num_res_blocks=num_res_blocks,
        attention_resolutions=tuple(attention),
        channel_mult=tuple(channel_mult),
        num_heads=-1,
        num_head_channels=DEFAULT_NUM_HEAD_CHANNELS,
        use_scale_shift_norm=scale_shift,
        resblock_updown=resblock_updown,
        num_classes=state["label_emb.weight"].shape[0] if "label_emb.weight" in names else None,
        context_dim=context_dim,
        transformer_depth=depth,
        image_size=64,
    )
    return config, ["num_head_channels", "image_size"]
