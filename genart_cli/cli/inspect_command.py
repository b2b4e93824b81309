"""`genart inspect`: what a checkpoint is, how genart reads it, and which values were guessed."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ..checkpoints.loader import WEIGHT_CHOICES, load_model
from ..models.autoencoder import parameter_count


def describe_kind(bundle) -> str:
    if bundle.upscaler is not None:
        return f"upscaler ({'RRDBNet' if bundle.upscaler.config.arch == 'rrdbnet' else 'SRVGGNetCompact'})"
    if bundle.unet is not None and bundle.conditioning == "concat-lowres":
        return "upscaler (latent-diffusion super-resolution bundle: autoencoder + UNet)"
    if bundle.unet is not None and bundle.autoencoder is not None:
        return "latent-diffusion bundle (autoencoder + UNet)"
    if bundle.autoencoder is not None:
        return f"{bundle.autoencoder.config.kind.upper()} autoencoder"
    return "UNet"


@click.command("inspect", short_help="Show what a checkpoint contains and how genart reads it.")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The original yaml config, if the checkpoint came with one.")
@click.option("--weights", type=click.Choice(WEIGHT_CHOICES), default="ema", show_default=True,
              help="Which weights to describe when the checkpoint has an EMA copy.")
def inspect_command(path, config_path, weights):
    """Show a checkpoint's layout, architecture, parameter counts, dtype, EMA and conditioning."""
    bundle, report = load_model(path, config_path, weights)
    table = Table(title=str(path), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("layout", report.layout)
    table.add_row("kind", describe_kind(bundle))

    if bundle.autoencoder is not None:
        ae = bundle.autoencoder.config
        codebook = f", {ae.n_embed} codes" if ae.kind == "vq" else ""
        table.add_row("autoencoder", f"{ae.kind.upper()}-f{ae.downsample_factor}: ch {ae.ch}, ch_mult {list(ae.ch_mult)}, "
                      f"{ae.num_res_blocks} res blocks, attention at {list(ae.attn_resolutions)} px, "
                      f"mid attention {'yes' if ae.mid_attention else 'no'}, {ae.embed_dim} latent channels{codebook}")
        table.add_row("autoencoder parameters", f"{parameter_count(bundle.autoencoder) / 1e6:.2f}M")

    if bundle.upscaler is not None:
        c = bundle.upscaler.config
        body = (f"{c.num_block} RRDB blocks, {c.num_grow_ch} growth channels" if c.arch == "rrdbnet"
                else f"{c.num_block} body convs, {c.act_type}")
        table.add_row("upscaler", f"x{c.scale}, {c.num_feat} features, {body}")
        table.add_row("upscaler parameters", f"{parameter_count(bundle.upscaler) / 1e6:.2f}M")
        table.add_row("weights used", report.weights)

    if bundle.unet is not None:
        u = bundle.unet.config
        heads = f"{u.num_head_channels} channels per head" if u.num_head_channels != -1 else f"{u.num_heads} heads"
        table.add_row("UNet", f"{u.in_channels} -> {u.out_channels} channels, model_channels {u.model_channels}, "
                      f"channel_mult {list(u.channel_mult)}, {u.num_res_blocks} res blocks, attention at "
                      f"downsampling {sorted(u.attention_resolutions)}, {heads}, scale-shift norm "
                      f"{'yes' if u.use_scale_shift_norm else 'no'}, resblock up/down {'yes' if u.resblock_updown else 'no'}, "
                      f"classes {u.num_classes or 'none'}")
        table.add_row("UNet parameters", f"{parameter_count(bundle.unet) / 1e6:.2f}M")
        table.add_row("EMA copy", "yes" if report.ema_available else "no")
        table.add_row("weights used", report.weights)
        s = bundle.schedule
        table.add_row("schedule", f"{s.beta_schedule} {s.linear_start:g} to {s.linear_end:g}, {s.num_timesteps} steps")
        table.add_row("conditioning", bundle.conditioning)
        table.add_row("scale_factor", f"{bundle.scale_factor:g}")

    table.add_row("dtype", report.dtype or "unknown")
    table.add_row("read from file or config", "; ".join(report.read) or "-")
    table.add_row("inferred from tensors", "; ".join(report.inferred) or "-")
    table.add_row("documented defaults", "; ".join(report.defaulted) or "-")
    for note in report.notes:
        table.add_row("note", note)
    if bundle.model_card:
        table.add_row("model card", bundle.model_card)
    Console(soft_wrap=False).print(table)
