"""diffusers model folders: configs and tensor names of VQModel, AutoencoderKL and UNet2DModel.

The mapping follows the layout of diffusers 0.2x-0.4x model classes. Two places need more than a
rename: autoencoder attention projections are Linear in diffusers and 1x1 Conv2d here, and the
UNet's separate to_q/to_k/to_v are merged into one qkv Conv1d in latent-diffusion's legacy order
(per head: q, then k, then v), which needs the head count.
"""

from __future__ import annotations

import re

import torch

from ..errors import ModelError
from ..models.autoencoder import AutoencoderConfig
from ..models.unet import UNetConfig
from .infer import DEFAULT_AE_RESOLUTION

AE_RESNET = {"conv_shortcut": "nin_shortcut"}
AE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
                # Files written by diffusers before 0.14 use these names.
                "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}
UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def split_leaf(rest: str) -> tuple[str, str]:
    """Split 'to_out.0.weight' into ('to_out.0', 'weight')."""
    module, _, leaf = rest.rpartition(".")
    return module, leaf


def autoencoder_to_ldm(state: dict[str, torch.Tensor], num_levels: int) -> dict[str, torch.Tensor]:
    """Rename a diffusers VQModel or AutoencoderKL state dict; num_levels = len(block_out_channels)."""
    out = {}
    for name, tensor in state.items():
        new = name
        if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)$", name):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{rename_module(m[3], AE_RESNET)}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)$", name):
            new, tensor = f"{m[1]}.mid.attn_1.{rename_module(m[2], AE_ATTENTION)}", as_conv2d(tensor)
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", name):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{rename_module(m[3], AE_RESNET)}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)$", name):
            new, tensor = f"encoder.down.{m[1]}.attn.{m[2]}.{rename_module(m[3], AE_ATTENTION)}", as_conv2d(tensor)
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$", name):
            new = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", name):
            # diffusers counts decoder levels from the deepest; latent-diffusion from full resolution.
            new = f"decoder.up.{num_levels - 1 - int(m[1])}.block.{m[2]}.{rename_module(m[3], AE_RESNET)}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)$", name):
            level = num_levels - 1 - int(m[1])
            new, tensor = f"decoder.up.{level}.attn.{m[2]}.{rename_module(m[3], AE_ATTENTION)}", as_conv2d(tensor)
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$", name):
            new = f"decoder.up.{num_levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.conv_norm_out\.(.+)$", name):
            new = f"{m[1]}.norm_out.{m[2]}"
        out[new] = tensor
    return out


def rename_module(rest: str, table: dict[str, str]) -> str:
    module, leaf = split_leaf(rest)
    return f"{table.get(module, module)}.{leaf}"


def as_conv2d(tensor: torch.Tensor) -> torch.Tensor:
    """Linear weight [C_out, C_in] -> 1x1 conv weight [C_out, C_in, 1, 1]; other tensors unchanged."""
    return tensor[:, :, None, None] if tensor.dim() == 2 else tensor


def unet_to_ldm(state: dict[str, torch.Tensor], layers_per_block: int, attention_head_dim: int) -> dict[str, torch.Tensor]:
    """Rename a diffusers UNet2DModel state dict to latent-diffusion's UNetModel names."""
    per_level = layers_per_block + 1
    out, pending_qkv = {}, {}

    def block_name(name: str) -> str | None:
        if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$", name):
            index = 1 + int(m[1]) * per_level + int(m[3])
            return f"input_blocks.{index}.{0 if m[2] == 'resnets' else 1}.{m[4]}"
        if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$", name):
            return f"input_blocks.{(int(m[1]) + 1) * per_level}.0.op.{m[2]}"
        if m := re.match(r"mid_block\.(resnets|attentions)\.(\d)\.(.+)$", name):
            if m[1] == "attentions":
                return f"middle_block.1.{m[3]}"
            return f"middle_block.{0 if m[2] == '0' else 2}.{m[3]}"
        if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$", name):
            index = int(m[1]) * per_level + int(m[3])
            return f"output_blocks.{index}.{0 if m[2] == 'resnets' else 1}.{m[4]}"
        if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$", name):
            index = int(m[1]) * per_level + layers_per_block
            has_attention = any(k.startswith(f"up_blocks.{m[1]}.attentions.") for k in state)
            return f"output_blocks.{index}.{2 if has_attention else 1}.conv.{m[2]}"
        return None

    simple = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
              "class_embedding": "label_emb"}
    transformers = {name.split(".transformer_blocks.")[0] for name in state if ".transformer_blocks." in name}
    for name, tensor in state.items():
        module, leaf = split_leaf(name)
        if module in simple:
            out[f"{simple[module]}.{leaf}"] = tensor
            continue
        new = block_name(name)
        if new is None:
            raise ModelError(f"unexpected diffusers UNet tensor {name}; this UNet layout is not supported")
        prefix, attribute = re.match(r"((?:input_blocks|output_blocks)\.\d+\.\d|middle_block\.\d)\.(.+)$", new).groups()
        attention = re.match(r"(.+\.attentions\.\d+)\.", name)
        if attention and attention[1] in transformers:
            # Transformer2DModel and SpatialTransformer share their inner names (norm, proj_in,
            # transformer_blocks.N.attn1.to_q, ff.net.0.proj, proj_out).
            out[f"{prefix}.{attribute}"] = tensor
        elif ".attentions." in name:
            module, leaf = split_leaf(attribute)
            module = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}.get(module, module)
            if module in ("to_q", "to_k", "to_v"):
                pending_qkv.setdefault((prefix, leaf), {})[module] = tensor
                continue
            target = {"group_norm": "norm", "to_out.0": "proj_out"}[module]
            out[f"{prefix}.{target}.{leaf}"] = tensor[:, :, None] if tensor.dim() == 2 else tensor
        elif ".op." in new or new.split(".")[-2] == "conv":
            out[new] = tensor
        else:
            module, leaf = split_leaf(attribute)
            out[f"{prefix}.{UNET_RESNET.get(module, module)}.{leaf}"] = tensor

    for (prefix, leaf), parts in pending_qkv.items():
        q, k, v = parts["to_q"], parts["to_k"], parts["to_v"]
        channels = q.shape[0]
        heads = channels // attention_head_dim
        # (heads, 3, d, ...) -> (3C, ...): each head's q, k and v rows side by side.
        qkv = torch.stack([t.reshape(heads, attention_head_dim, *t.shape[1:]) for t in (q, k, v)], dim=1)
        qkv = qkv.reshape(3 * channels, *q.shape[1:])
        out[f"{prefix}.qkv.{leaf}"] = qkv[:, :, None] if qkv.dim() == 2 else qkv
    return out


def autoencoder_config_from_diffusers(config: dict, label: str) -> AutoencoderConfig:
    """Translate a diffusers VQModel or AutoencoderKL config.json into an AutoencoderConfig."""
    kind = {"VQModel": "vq", "AutoencoderKL": "kl"}.get(config.get("_class_name"))
    if kind is None:
        raise ModelError(f"{label}: autoencoder class {config.get('_class_name')!r} is not VQModel or AutoencoderKL")
    require_values(config, label, norm_num_groups=32, act_fn="silu", norm_type="group")
    channels = list(config["block_out_channels"])
    resolution = DEFAULT_AE_RESOLUTION
    attention = [resolution // 2**i for i, block in enumerate(config["down_block_types"]) if block.startswith("Attn")]
    latent_channels = config.get("latent_channels", 3 if kind == "vq" else 4)
    return AutoencoderConfig(
        kind=kind,
        in_channels=config.get("in_channels", 3),
        out_ch=config.get("out_channels", 3),
        ch=channels[0],
        ch_mult=tuple(c // channels[0] for c in channels),
        num_res_blocks=config.get("layers_per_block", 1),
        attn_resolutions=tuple(attention),
        resolution=resolution,
        z_channels=latent_channels,
        embed_dim=(config.get("vq_embed_dim") or latent_channels) if kind == "vq" else latent_channels,
        # diffusers' default codebook size is 256.
        n_embed=config.get("num_vq_embeddings", 256) if kind == "vq" else 0,
        mid_attention=config.get("mid_block_add_attention", True),
    )


def unet_config_from_diffusers(config: dict, label: str) -> UNetConfig:
    """Translate a diffusers UNet2DModel config.json into a UNetConfig, or raise ModelError."""
    if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ModelError(f"{label}: UNet class {config.get('_class_name')!r} is not UNet2DModel")
    require_values(config, label, flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, norm_eps=1e-5,
                   norm_num_groups=32, act_fn="silu", mid_block_scale_factor=1, time_embedding_type="positional",
                   class_embed_type=None, downsample_type="conv", upsample_type="conv", add_attention=True)
    channels = list(config["block_out_channels"])
    head_dim = config.get("attention_head_dim") or 8
    shift = config.get("resnet_time_scale_shift", "default")
    return UNetConfig(
        in_channels=config.get("in_channels", 3),
        out_channels=config.get("out_channels", 3),
        model_channels=channels[0],
        num_res_blocks=config.get("layers_per_block", 2),
        attention_resolutions=tuple(2**i for i, b in enumerate(config["down_block_types"]) if b.startswith("Attn")),
        channel_mult=tuple(c // channels[0] for c in channels),
        num_heads=-1,
        num_head_channels=head_dim,
        use_scale_shift_norm=shift == "scale_shift",
        resblock_updown=False,
        num_classes=config.get("num_class_embeds"),
        image_size=config.get("sample_size") or 64,
    )


def require_values(config: dict, label: str, **expected) -> None:
    """Raise ModelError for config fields whose value genart's models cannot reproduce."""
    for key, value in expected.items():
        if key in config and config[key] != value:
            raise ModelError(f"{label}: {key} = {config[key]!r} is not supported (genart implements {value!r})")
