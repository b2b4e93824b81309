"""The original latent-diffusion and taming layouts, and their yaml configs.

A latent-diffusion checkpoint's `state_dict` has the UNet under `model.diffusion_model.`, the
first stage under `first_stage_model.`, the conditioning model under `cond_stage_model.`, the
schedule buffers (`betas`, `alphas_cumprod`, ...) at the top, and, when trained with EMA, one
`model_ema.<name without dots>` per UNet parameter. Standalone first stages (latent-diffusion's
vq-f4 and kin, taming's VQGANs) have `encoder.`, `decoder.`, `quantize.`, `quant_conv.` and
`post_quant_conv.` at the top, plus training-only `loss.*` tensors that are ignored here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..diffusion.schedule import ScheduleConfig
from ..errors import ModelError
from ..models.autoencoder import AutoencoderConfig
from ..models.unet import UNetConfig

UNET = "model.diffusion_model."
COND_STAGE = "cond_stage_model."
FIRST_STAGE = "first_stage_model."
EMA = "model_ema."
AE_TOP_LEVEL = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")


@dataclass
class LdmSettings:
    """Settings from a latent-diffusion yaml config; a field is None where the config does not set it."""

    autoencoder: AutoencoderConfig | None = None
    unet: UNetConfig | None = None
    schedule: ScheduleConfig | None = None
    scale_factor: float | None = None
    conditioning: str | None = None
    use_ema: bool | None = None
    read: list[str] = field(default_factory=list)


def ema_name(unet_name: str) -> str:
    """Return the EMA tensor name of a UNet parameter: 'model_ema.' + 'diffusion_model.<name>' without dots."""
    return EMA + ("diffusion_model." + unet_name).replace(".", "")


def schedule_from_betas(betas: torch.Tensor, label: str) -> ScheduleConfig:
    """Recover linear_start and linear_end from a saved `betas` buffer and check the curve's shape."""
    betas = betas.double()
    config = ScheduleConfig(num_timesteps=len(betas), linear_start=betas[0].item(), linear_end=betas[-1].item())
    from ..diffusion.schedule import make_betas

    if not torch.allclose(make_betas(config), betas, rtol=1e-4, atol=1e-8):
        raise ModelError(f"{label}: the saved betas are not latent-diffusion's 'linear' schedule; "
                         "genart implements only that one")
    return config


def conditioning_from_channels(unet_in: int, latent_channels: int) -> str:
    """Guess the conditioning from the UNet's input channels when no config sets it."""
    if unet_in == latent_channels:
        return "none"
    if unet_in == 2 * latent_channels:
        return "concat-lowres"  # bsr_sr: the low-resolution image after the latent
    if unet_in == 2 * latent_channels + 1:
        return "concat-inpaint"  # inpainting_big: masked-image latent and mask after the latent
    return f"concat-{unet_in - latent_channels}ch"


def settings_from_yaml(document: dict, label: str) -> LdmSettings:
    """Read a latent-diffusion or taming yaml config (already parsed) into LdmSettings."""
    settings = LdmSettings()
    model = document.get("model", document)
    params = model.get("params", {})
    target = model.get("target", "")

    if "ddconfig" in params:  # a standalone first stage
        settings.autoencoder = autoencoder_from_ddconfig(params, target, label)
        settings.read.append("autoencoder")
        return settings

    first = params.get("first_stage_config", {})
    if "params" in first:
        settings.autoencoder = autoencoder_from_ddconfig(first["params"], first.get("target", ""), label)
        settings.read.append("autoencoder")
    unet_params = params.get("unet_config", {}).get("params")
    if unet_params:
        if unet_params.get("use_spatial_transformer") and unet_params.get("use_linear_in_transformer"):
            raise ModelError(f"{label}: linear projections in the transformer (Stable Diffusion 2) are not "
                             "supported")
        settings.unet = UNetConfig(
            in_channels=unet_params["in_channels"],
            out_channels=unet_params["out_channels"],
            model_channels=unet_params["model_channels"],
            num_res_blocks=unet_params["num_res_blocks"],
            # The yaml lists downsampling factors; a factor that no level reaches is harmless.
            attention_resolutions=tuple(unet_params.get("attention_resolutions", ())),
            channel_mult=tuple(unet_params.get("channel_mult", (1, 2, 4, 8))),
            num_heads=unet_params.get("num_heads", -1) if unet_params.get("num_head_channels", -1) == -1 else -1,
            num_head_channels=unet_params.get("num_head_channels", -1),
            use_scale_shift_norm=unet_params.get("use_scale_shift_norm", False),
            resblock_updown=unet_params.get("resblock_updown", False),
            num_classes=unet_params.get("num_classes"),
            context_dim=unet_params.get("context_dim") if unet_params.get("use_spatial_transformer") else None,
            transformer_depth=unet_params.get("transformer_depth", 1),
            image_size=unet_params.get("image_size", 64),
        )
        settings.read.append("unet")
    if "linear_start" in params or "linear_end" in params or "timesteps" in params:
        if params.get("beta_schedule", "linear") != "linear":
            raise ModelError(f"{label}: beta_schedule {params['beta_schedule']!r} is not supported; genart "
                             "implements latent-diffusion's 'linear'")
        settings.schedule = ScheduleConfig(num_timesteps=params.get("timesteps", 1000),
                                           linear_start=params.get("linear_start", 1e-4),
                                           linear_end=params.get("linear_end", 2e-2))
        settings.read.append("schedule")
    if "scale_factor" in params:
        settings.scale_factor = float(params["scale_factor"])
        settings.read.append("scale_factor")
    if "use_ema" in params:
        settings.use_ema = bool(params["use_ema"])
        settings.read.append("use_ema")
    settings.conditioning = conditioning_from_yaml(params)
    if settings.conditioning is not None:
        settings.read.append("conditioning")
    return settings


def conditioning_from_yaml(params: dict) -> str | None:
    """latent-diffusion's rule: conditioning_key if set, else concat_mode decides; unconditional wins."""
    cond_stage = params.get("cond_stage_config")
    if cond_stage == "__is_unconditional__":
        return "none"
    key = params.get("conditioning_key")
    if key is None and "concat_mode" in params:
        key = "concat" if params["concat_mode"] else "crossattn"
    if key == "concat":
        return "concat-inpaint" if params.get("cond_stage_key") == "masked_image" else "concat-lowres"
    return key


def autoencoder_from_ddconfig(params: dict, target: str, label: str) -> AutoencoderConfig:
    dd = params["ddconfig"]
    kind = "kl" if "AutoencoderKL" in target or dd.get("double_z", False) else "vq"
    if kind == "vq" and "n_embed" not in params:
        raise ModelError(f"{label}: VQ first-stage config without n_embed")
    return AutoencoderConfig(
        kind=kind, in_channels=dd.get("in_channels", 3), out_ch=dd.get("out_ch", 3), ch=dd["ch"],
        ch_mult=tuple(dd["ch_mult"]), num_res_blocks=dd["num_res_blocks"],
        attn_resolutions=tuple(dd.get("attn_resolutions", ())), resolution=dd.get("resolution", 256),
        z_channels=dd["z_channels"], embed_dim=params["embed_dim"],
        n_embed=params.get("n_embed", 0) if kind == "vq" else 0,
        mid_attention=dd.get("attn_type", "vanilla") != "none", dropout=dd.get("dropout", 0.0),
    )
