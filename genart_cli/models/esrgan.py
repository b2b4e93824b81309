"""Feed-forward super-resolution networks in Real-ESRGAN's layouts: RRDBNet and SRVGGNetCompact.

Both map RGB pixels (B, 3, H, W) in [0, 1] to (B, 3, s H, s W) in about [0, 1], with s the
network's scale. Module names follow the released BasicSR weights, so their state dicts load
without renaming:

- RRDBNet (ESRGAN, Real-ESRGAN x4plus and x2plus): conv_first, body.N.rdb{1,2,3}.conv{1..5},
  conv_body, conv_up1, conv_up2, conv_hr, conv_last. Scales 2 and 1 first fold pixels into
  channels (pixel-unshuffle by 2 or 4) and then upsample by 4 like the x4 network.
- SRVGGNetCompact (realesr-general-x4v3, realesr-animevideov3): a flat `body` list of convs and
  activations, a pixel shuffle, plus a nearest-upsampled copy of the input as a residual.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHITECTURES = ("rrdbnet", "srvgg")
ACTIVATIONS = ("prelu", "relu", "leakyrelu")


@dataclass
class UpscalerConfig:
    arch: str  # "rrdbnet" or "srvgg"
    scale: int  # output side / input side: 1, 2 or 4 for rrdbnet; any for srvgg
    num_feat: int = 64
    num_block: int = 23  # rrdbnet: residual-in-residual dense blocks; srvgg: body convs
    num_grow_ch: int = 32  # rrdbnet only: channels each dense conv adds
    act_type: str = "prelu"  # srvgg only
    in_channels: int = 3
    out_channels: int = 3

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown upscaler architecture {self.arch!r}; expected one of {ARCHITECTURES}")
        if self.arch == "rrdbnet" and self.scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet supports scales 1, 2 and 4, got {self.scale}")
        if self.act_type not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.act_type!r}; expected one of {ACTIVATIONS}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> UpscalerConfig:
        return cls(**values)


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and every earlier conv's output."""

    def __init__(self, num_feat: int, num_grow_ch: int):
        super().__init__()
        for k in range(1, 5):
            setattr(self, f"conv{k}", nn.Conv2d(num_feat + (k - 1) * num_grow_ch, num_grow_ch, 3, 1, 1))
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for k in range(1, 5):
            out = getattr(self, f"conv{k}")(torch.cat(features, dim=1))
            features.append(F.leaky_relu(out, 0.2))
        # The 0.2 residual scaling keeps the deep trunk stable (ESRGAN, section 3.1).
        return x + 0.2 * self.conv5(torch.cat(features, dim=1))


class RRDB(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    def __init__(self, config: UpscalerConfig):
        super().__init__()
        self.config = config
        # Scales 2 and 1 fold 2x2 or 4x4 pixel blocks into channels, then upsample by 4.
        self.unshuffle = {4: 1, 2: 2, 1: 4}[config.scale]
        feat = config.num_feat
        self.conv_first = nn.Conv2d(config.in_channels * self.unshuffle**2, feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(feat, config.num_grow_ch) for _ in range(config.num_block)])
        self.conv_body = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(feat, config.out_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) -> (B, 3, s H, s W); H and W must be multiples of 4 / s."""
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


def activation(config: UpscalerConfig) -> nn.Module:
    if config.act_type == "prelu":
        return nn.PReLU(num_parameters=config.num_feat)
    if config.act_type == "relu":
        return nn.ReLU()
    return nn.LeakyReLU(0.1)


class SRVGGNetCompact(nn.Module):
    def __init__(self, config: UpscalerConfig):
        super().__init__()
        self.config = config
        feat = config.num_feat
        layers: list[nn.Module] = [nn.Conv2d(config.in_channels, feat, 3, 1, 1), activation(config)]
        for _ in range(config.num_block):
            layers += [nn.Conv2d(feat, feat, 3, 1, 1), activation(config)]
        layers.append(nn.Conv2d(feat, config.out_channels * config.scale**2, 3, 1, 1))
        self.body = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) -> (B, 3, s H, s W)."""
        out = x
        for layer in self.body:
            out = layer(out)
        out = F.pixel_shuffle(out, self.config.scale)
        # The network predicts the difference from a nearest-neighbour upscale.
        return out + F.interpolate(x, scale_factor=self.config.scale, mode="nearest")


def build_upscaler(config: UpscalerConfig) -> nn.Module:
    return RRDBNet(config) if config.arch == "rrdbnet" else SRVGGNetCompact(config)


def input_multiple(config: UpscalerConfig) -> int:
    """The input sides must be multiples of this (pixel-unshuffle for RRDBNet x2 and x1)."""
    return {4: 1, 2: 2, 1: 4}[config.scale] if config.arch == "rrdbnet" else 1


def receptive_radius(config: UpscalerConfig) -> int:
    """Return how many input pixels beyond a tile edge can change the tile's output.

    Each 3x3 conv reaches one pixel further. Tiles that overlap by at least this much on every
    side give exactly the untiled result. RRDBNet's convs after unshuffling reach `unshuffle`
    input pixels each, and its upsampling convs reach half a pixel each.
    """
    if config.arch == "srvgg":
        return config.num_block + 2
    unshuffle = {4: 1, 2: 2, 1: 4}[config.scale]
    trunk_convs = 1 + 15 * config.num_block + 1
    return unshuffle * (trunk_convs + 1) + 2  # +1 for unshuffle alignment, +2 covers conv_up1..conv_last
