"""`genart convert`: rewrite a checkpoint of any supported layout as genart's safetensors."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from ..checkpoints.ldm_layout import LdmSettings
from ..checkpoints.loader import WEIGHT_CHOICES, from_state_dict, load_model, read_pickle_state, read_yaml_settings, sniff_format
from ..checkpoints.native import save_bundle
from .common import check_outputs, stderr_console


@click.command("convert", short_help="Convert a checkpoint or pickle to genart safetensors.")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="genart safetensors file to write.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The original yaml config, if the checkpoint came with one.")
@click.option("--weights", type=click.Choice(WEIGHT_CHOICES), default="ema", show_default=True,
              help="Which UNet weights to keep when the source has an EMA copy.")
@click.option("--fp16", is_flag=True, help="Store the weights in fp16, halving the file size.")
@click.option("--overwrite", is_flag=True, help="Replace the output file if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="No notes on stderr; errors are still printed.")
def convert_command(source, out, config_path, weights, fp16, overwrite, quiet):
    """Convert a .ckpt/.pth pickle (read with weights_only), a latent-diffusion safetensors file or a
    diffusers folder into one self-describing genart safetensors file."""
    console = stderr_console(quiet)
    check_outputs([out], overwrite)
    if source.is_file() and sniff_format(source) == "pickle":
        settings = read_yaml_settings(config_path, str(source)) if config_path else LdmSettings()
        bundle, report = from_state_dict(read_pickle_state(source), source, settings, weights)
    else:
        bundle, report = load_model(source, config_path, weights)
    for note in report.notes:
        console.print(f"note: {note}")
    save_bundle(out, autoencoder=bundle.autoencoder, unet=bundle.unet, upscaler=bundle.upscaler,
                class_embedder=bundle.class_embedder, schedule=bundle.schedule,
                scale_factor=bundle.scale_factor, conditioning=bundle.conditioning,
                model_card=bundle.model_card or f"converted from {source.name}",
                extra={"converted_from": source.name, "layout": report.layout, "weights": report.weights,
                       "read": report.read, "inferred": report.inferred, "defaulted": report.defaulted},
                dtype=torch.float16 if fp16 else torch.float32)
    click.echo(out)
