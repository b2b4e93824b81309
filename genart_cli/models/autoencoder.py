"""First-stage autoencoders of the latent-diffusion and taming family: VQ (VQGAN) and KL.

Parameter names equal the tensor names of the released checkpoints (`encoder.down.0.block.0.norm1`,
`quant_conv`, `quantize.embedding.weight`, ...), so released weights load by name.

Pixels are in [-1, 1]. A VQ latent is the output of `quant_conv` before quantization, as in
latent-diffusion, shape (B, embed_dim, H / f, W / f) with f = 2 ** (len(ch_mult) - 1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class AutoencoderConfig:
    kind: str = "vq"  # "vq" (VectorQuantizer) or "kl" (diagonal Gaussian posterior)
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    # Feature-map sides (in pixels of a `resolution`-sized input) whose levels get attention.
    attn_resolutions: tuple[int, ...] = ()
    resolution: int = 256
    z_channels: int = 3
    embed_dim: int = 3
    n_embed: int = 8192  # codebook size; unused for "kl"
    mid_attention: bool = True  # False for the "-noattn" configs (attn_type none)
    dropout: float = 0.0

    def __post_init__(self):
        self.ch_mult = tuple(self.ch_mult)
        self.attn_resolutions = tuple(self.attn_resolutions)
        if self.kind not in ("vq", "kl"):
            raise ValueError(f"autoencoder kind must be 'vq' or 'kl', got {self.kind!r}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "AutoencoderConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown autoencoder config fields: {', '.join(unknown)}")
        return cls(**values)


def normalize(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    # x * sigmoid(x) as one fused kernel: at 512x512 pixels the decoder's activations are hundreds
    # of MB, and the two-kernel form reads and writes them three times.
    return F.silu(x)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.nin_shortcut = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H * W positions, with 1x1 convs as projections."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # (B, C, H, W) -> (B, 1, H*W, C): one head whose dimension is C. The 1x1 convs run as linear
        # maps on the tokens, so q, k and v are contiguous in C for the fused attention kernel.
        tokens = self.norm(x).reshape(b, c, h * w).transpose(1, 2)[:, None]
        q, k, v = (F.linear(tokens, proj.weight[:, :, 0, 0], proj.bias) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v
        out = F.linear(out, self.proj_out.weight[:, :, 0, 0], self.proj_out.bias)  # (B, 1, H*W, C)
        return x + out[:, 0].transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The reference pads one zero row and column on the right and bottom only.
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: `block` (ResnetBlocks), `attn` (possibly empty), then a resampler."""

    def __init__(self):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()


class MidBlock(nn.Module):
    def __init__(self, channels: int, dropout: float, attention: bool):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels) if attention else None
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.block_1(h)
        if self.attn_1 is not None:
            h = self.attn_1(h)
        return self.block_2(h)


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        in_mult = (1,) + cfg.ch_mult
        resolution = cfg.resolution
        self.down = nn.ModuleList()
        for i, mult in enumerate(cfg.ch_mult):
            level = Level()
            block_in, block_out = cfg.ch * in_mult[i], cfg.ch * mult
            for _ in range(cfg.num_res_blocks):
                level.block.append(ResnetBlock(block_in, block_out, cfg.dropout))
                block_in = block_out
                if resolution in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(block_in))
            if i != len(cfg.ch_mult) - 1:
                level.downsample = Downsample(block_in)
                resolution //= 2
            self.down.append(level)
        self.mid = MidBlock(block_in, cfg.dropout, cfg.mid_attention)
        self.norm_out = normalize(block_in)
        out_channels = 2 * cfg.z_channels if cfg.kind == "kl" else cfg.z_channels
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for i, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[i](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        block_in = cfg.ch * cfg.ch_mult[-1]
        resolution = cfg.resolution // cfg.downsample_factor
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = MidBlock(block_in, cfg.dropout, cfg.mid_attention)
        # `up` is indexed by level (up.0 is full resolution) but built and run from the deepest.
        levels = []
        for i in reversed(range(len(cfg.ch_mult))):
            level = Level()
            block_out = cfg.ch * cfg.ch_mult[i]
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out, cfg.dropout))
                block_in = block_out
                if resolution in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(block_in))
            if i != 0:
                level.upsample = Upsample(block_in)
                resolution *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for i, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[i](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook lookup with a straight-through gradient."""

    def __init__(self, n_embed: int, embed_dim: int, beta: float = 0.25):
        super().__init__()
        self.n_embed = n_embed
        self.embed_dim = embed_dim
        self.beta = beta
        self.embedding = nn.Embedding(n_embed, embed_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_embed, 1.0 / n_embed)

    def nearest_indices(self, z: torch.Tensor) -> torch.Tensor:
        """Return the codebook index of each latent pixel: (B, C, H, W) -> (B, H, W), int64."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c).float()
        codebook = self.embedding.weight.float()
        # Distances in fp16 or bf16 pick wrong neighbours, so keep autocast off here.
        with torch.autocast(z.device.type, enabled=False):
            # Squared L2 distance written as |z|^2 + |e|^2 - 2 z.e; argmin takes the first minimum.
            distances = (
                flat.pow(2).sum(dim=1, keepdim=True)
                + codebook.pow(2).sum(dim=1)
                - 2.0 * flat @ codebook.t()
            )
        return distances.argmin(dim=1).reshape(b, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Return codebook vectors for indices (B, H, W) as latents (B, C, H, W)."""
        return self.embedding(indices).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize z; return (z_q with a straight-through gradient, indices, codebook loss)."""
        indices = self.nearest_indices(z)
        z_q = self.lookup(indices).to(z.dtype)
        # taming's "legacy" weighting puts beta on the codebook term; outputs are unaffected.
        loss = F.mse_loss(z_q.detach(), z) + self.beta * F.mse_loss(z_q, z.detach())
        z_q = z + (z_q - z).detach()
        return z_q, indices, loss


class Autoencoder(nn.Module):
    """VQ or KL first stage. `encode` returns the latent that diffusion runs on."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if cfg.kind == "vq":
            self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
            self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim)
        else:
            self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    def encode(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Encode pixels (B, 3, H, W) in [-1, 1] to latents (B, embed_dim, H/f, W/f).

        VQ: the continuous output of `quant_conv`, not yet quantized (latent-diffusion's choice).
        KL: the posterior mean, or a sample from it when `sample` is set.
        """
        moments = self.quant_conv(self.encoder(x))
        if self.config.kind == "vq":
            return moments
        mean, logvar = moments.chunk(2, dim=1)
        if not sample:
            return mean
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device="cpu").to(mean.device)
        return mean + std * noise

    def quantize_latent(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Snap latents to the codebook; return (quantized latents, indices (B, H, W))."""
        indices = self.quantize.nearest_indices(z)
        return self.quantize.lookup(indices).to(z.dtype), indices

    def decode(self, z: torch.Tensor, force_not_quantize: bool = False) -> torch.Tensor:
        """Decode latents to pixels in about [-1, 1]. VQ models quantize first unless force_not_quantize is set."""
        if self.config.kind == "vq" and not force_not_quantize:
            z, _ = self.quantize_latent(z)
        return self.decoder(self.post_quant_conv(z))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Decode codebook indices (B, H, W) to pixels (B, 3, H*f, W*f)."""
        if self.config.kind != "vq":
            raise ValueError("decoding from code indices needs a VQ autoencoder")
        z = self.quantize.lookup(indices).to(self.post_quant_conv.weight.dtype)
        return self.decoder(self.post_quant_conv(z))


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1], after clamping and 8-bit rounding as a PNG would store them."""
    a = ((reconstruction.float().clamp(-1, 1) + 1) * 127.5).round()
    b = ((target.float().clamp(-1, 1) + 1) * 127.5).round()
    mse = F.mse_loss(a, b).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
