"""The latent-diffusion UNet (openaimodel's UNetModel), with self-attention or cross-attention blocks.

Parameter names equal those under `model.diffusion_model.` in the released checkpoints:
`time_embed.0`, `input_blocks.1.0.in_layers.0`, `middle_block.1.qkv`, `out.2`, ...

Input: noisy latents (B, in_channels, H, W), where in_channels counts concatenated conditioning
channels too, and integer timesteps (B,) in [0, 1000); cross-attention UNets (cin256, with
`context_dim` set) also take a context (B, L, context_dim). Output: predicted noise (B, out_channels, H, W).
H and W must be multiples of 2 ** (len(channel_mult) - 1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UNetConfig:
    in_channels: int = 3
    out_channels: int = 3
    model_channels: int = 64
    num_res_blocks: int = 2
    # Downsampling factors (1, 2, 4, ...) of the levels that get an attention block.
    attention_resolutions: tuple[int, ...] = (2, 4)
    channel_mult: tuple[int, ...] = (1, 2, 3)
    # Exactly one of these sets the heads: a fixed count, or channels per head (-1 means unset).
    num_heads: int = -1
    num_head_channels: int = 32
    use_scale_shift_norm: bool = False
    resblock_updown: bool = False
    num_classes: int | None = None
    # Set for UNets whose attention levels are SpatialTransformers attending to a context (cin256).
    context_dim: int | None = None
    transformer_depth: int = 1
    dropout: float = 0.0
    image_size: int = 16  # the training latent size; informational, any multiple of the factor works

    def __post_init__(self):
        self.attention_resolutions = tuple(self.attention_resolutions)
        self.channel_mult = tuple(self.channel_mult)
        if (self.num_heads == -1) == (self.num_head_channels == -1):
            raise ValueError("set exactly one of num_heads and num_head_channels")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    def heads_for(self, channels: int) -> int:
        return channels // self.num_head_channels if self.num_head_channels != -1 else self.num_heads

    def attention(self, channels: int) -> nn.Module:
        heads = self.heads_for(channels)
        if self.context_dim is None:
            return AttentionBlock(channels, heads)
        return SpatialTransformer(channels, heads, channels // heads, self.transformer_depth, self.context_dim)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "UNetConfig":
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown UNet config fields: {', '.join(unknown)}")
        return cls(**values)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim), cosines first, as latent-diffusion computes it."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups computed in fp32 whatever the input dtype."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class Downsample(nn.Module):
    """Stride-2 3x3 conv with symmetric padding, or a 2x2 average pool inside up/down ResBlocks."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.conv is not None else x


class ResBlock(nn.Module):
    """Residual block conditioned on the timestep embedding, optionally resampling (up or down)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, dropout: float = 0.0,
                 use_scale_shift_norm: bool = False, up: bool = False, down: bool = False):
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        emb_out = 2 * out_channels if use_scale_shift_norm else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            # Resample after norm and activation, before the conv, on both paths.
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)

        emb_out = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)

        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over H * W positions with the legacy q/k/v channel order.

    The qkv projection's 3C output channels are grouped by head: head i owns channels
    [3 d i, 3 d (i + 1)), laid out as q (d), k (d), v (d), where d = C / heads.
    """

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)  # (B, C, T)
        t = x.shape[-1]
        # The 1x1 convs run as linear maps on (B, T, C): then q, k and v come out with their head
        # dimension contiguous, which the CPU's fused attention kernel needs (about 5x faster at
        # T = 4096 than feeding it transposed views).
        tokens = self.norm(x).transpose(1, 2)  # (B, T, C)
        qkv = F.linear(tokens, self.qkv.weight[..., 0], self.qkv.bias)  # (B, T, 3C)
        head_dim = c // self.num_heads
        q, k, v = qkv.reshape(b, t, self.num_heads, 3 * head_dim).transpose(1, 2).split(head_dim, dim=-1)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, T, d), scale d ** -0.5
        h = F.linear(h.transpose(1, 2).reshape(b, t, c), self.proj_out.weight[..., 0], self.proj_out.bias)
        return (x + h.transpose(1, 2)).reshape(b, c, *spatial)


class CrossAttention(nn.Module):
    """Multi-head attention from tokens (B, T, dim) to a context (B, L, context_dim); self-attention without one."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, t, _ = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:  # (B, N, heads * d) -> (B, heads, N, d)
            return y.reshape(b, y.shape[1], self.heads, -1).transpose(1, 2)

        h = F.scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context)))
        return self.to_out(h.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    """GEGLU feed-forward: Linear to 2 * 4 dim, value * gelu(gate), Linear back to dim."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads, head_dim)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, heads, head_dim, context_dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """GroupNorm, 1x1 conv in, transformer blocks over the H * W tokens, 1x1 conv out, residual."""

    def __init__(self, channels: int, heads: int, head_dim: int, depth: int, context_dim: int):
        super().__init__()
        inner = heads * head_dim
        # eps 1e-6 here, unlike the ResBlocks' GroupNorm32 (1e-5): latent-diffusion's attention.py.
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, head_dim, context_dim) for _ in range(depth)])
        self.proj_out = nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x))
        tokens = tokens.reshape(b, tokens.shape[1], h * w).transpose(1, 2)  # (B, H*W, inner)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        return x + self.proj_out(tokens.transpose(1, 2).reshape(b, -1, h, w))


class TimestepEmbedSequential(nn.Sequential):
    """A Sequential that passes the timestep embedding to its ResBlocks and the context to its transformers."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class UNetModel(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        mc = cfg.model_channels
        emb_channels = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_channels), nn.SiLU(), nn.Linear(emb_channels, emb_channels))
        if cfg.num_classes is not None:
            self.label_emb = nn.Embedding(cfg.num_classes, emb_channels)

        def resblock(ch_in: int, ch_out: int, **resample) -> ResBlock:
            return ResBlock(ch_in, emb_channels, ch_out, cfg.dropout, cfg.use_scale_shift_norm, **resample)

        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, mc, 3, padding=1))])
        skip_channels = [mc]
        ch, ds = mc, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers = [resblock(ch, mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers.append(cfg.attention(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                down = resblock(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch, use_conv=True)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_channels.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(resblock(ch, ch), cfg.attention(ch), resblock(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [resblock(ch + skip_channels.pop(), mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers.append(cfg.attention(ch))
                if level and i == cfg.num_res_blocks:
                    layers.append(resblock(ch, ch, up=True) if cfg.resblock_updown else Upsample(ch, use_conv=True))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(mc, cfg.out_channels, 3, padding=1))
        # The reference zero-initialises the last conv of each residual branch and of the output.
        for module in self.modules():
            if isinstance(module, ResBlock):
                nn.init.zeros_(module.out_layers[-1].weight)
                nn.init.zeros_(module.out_layers[-1].bias)
            elif isinstance(module, (AttentionBlock, SpatialTransformer)):
                nn.init.zeros_(module.proj_out.weight)
                nn.init.zeros_(module.proj_out.bias)
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, class_labels: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        factor = self.config.downsample_factor
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(f"UNet input sides must be multiples of {factor}, got {tuple(x.shape[-2:])}")
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(x.dtype))
        if self.config.num_classes is not None:
            if class_labels is None:
                raise ValueError("this UNet is class-conditional: pass class_labels")
            emb = emb + self.label_emb(class_labels).to(emb.dtype)
        if self.config.context_dim is not None and context is None:
            raise ValueError("this UNet has cross-attention: pass a context (B, L, context_dim)")

        h = x
        skips = []
        for block in self.input_blocks:
            h = block(h, emb, context)
            skips.append(h)
        h = self.middle_block(h, emb, context)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
        return self.out(h)
