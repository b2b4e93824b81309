"""`genart train autoencoder` and `genart train unet`: the training loops behind the default weights."""

from __future__ import annotations

from pathlib import Path

import click

from ..training.autoencoder import AutoencoderTraining, train_autoencoder
from ..training.unet import UNetTraining, train_unet
from ..training.upscaler import UpscalerTraining, train_upscaler


def common_options(func):
    options = [
        click.option("--data", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Folder of training images; transparency is composited onto white."),
        click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
                     help="Checkpoint to write (genart safetensors); rewritten at every save."),
        click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Folder for the resumable training state; an existing state is resumed."),
        click.option("--image-size", type=click.IntRange(8), default=64, show_default=True, help="Side in pixels."),
        click.option("--batch-size", type=click.IntRange(1), default=None, help="Images per step."),
        click.option("--max-steps", type=click.IntRange(1), default=None, help="Total optimizer steps."),
        click.option("--max-minutes", type=click.FloatRange(0), default=None,
                     help="Stop this run after so many minutes; running again resumes."),
        click.option("--learning-rate", type=click.FloatRange(0, min_open=True), default=None),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--fp32", is_flag=True, help="Train in fp32 instead of bf16 autocast."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def job_fields(**values) -> dict:
    """Drop unset options so the training dataclass defaults apply, and map --fp32 to bf16."""
    values["bf16"] = not values.pop("fp32")
    return {k: v for k, v in values.items() if v is not None}


@click.group("train", short_help="Train the models behind the default weights.")
def train_group():
    """Train the models behind the default weights (see weights/README.md)."""


@train_group.command("autoencoder")
@common_options
def train_autoencoder_command(**options):
    """Train a VQ-f4 autoencoder (L1 loss, codebook restarts), reporting held-out PSNR."""
    result = train_autoencoder(AutoencoderTraining(**job_fields(**options)), log=lambda m: click.echo(m, err=True))
    click.echo(f"held-out PSNR {result.get('psnr', float('nan')):.2f} dB", err=True)


@train_group.command("unet")
@common_options
@click.option("--autoencoder", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Trained autoencoder checkpoint; it is bundled into --out with the UNet.")
@click.option("--model-card", default="", help="One-line description stored in the checkpoint.")
def train_unet_command(**options):
    """Train an unconditional LDM UNet on the autoencoder's latents, with EMA weights."""
    result = train_unet(UNetTraining(**job_fields(**options)), log=lambda m: click.echo(m, err=True))
    click.echo(f"held-out loss raw {result['heldout_loss_raw']:.4f}, EMA {result['heldout_loss_ema']:.4f}", err=True)


@train_group.command("upscaler")
@click.option("--data", type=click.Path(path_type=Path), multiple=True, required=True,
              help="Folder of training photos (searched recursively); repeat for several.")
@click.option("--heldout", type=click.Path(path_type=Path), multiple=True, required=True,
              help="Held-out photo or folder, scored against bicubic; repeat for several.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Checkpoint to write (genart safetensors); rewritten at every save.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the resumable training state; an existing state is resumed.")
@click.option("--num-feat", type=click.IntRange(4), default=None, help="Channels of the body convs.")
@click.option("--num-block", type=click.IntRange(1), default=None, help="Body convs.")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Crops per step.")
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Total optimizer steps.")
@click.option("--max-minutes", type=click.FloatRange(0), default=None,
              help="Stop this run after so many minutes; running again resumes.")
@click.option("--learning-rate", type=click.FloatRange(0, min_open=True), default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fp32", is_flag=True, help="Train in fp32 instead of bf16 autocast.")
@click.option("--model-card", default="", help="One-line description stored in the checkpoint.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train_upscaler_command(**options):
    """Train an SRVGGNetCompact x4 upscaler on photos (L1 loss), scored against bicubic."""
    options["data"], options["heldout"] = list(options["data"]), list(options["heldout"])
    result = train_upscaler(UpscalerTraining(**job_fields(**options)), log=lambda m: click.echo(m, err=True))
    if result:
        click.echo(f"held-out PSNR-Y {result['psnr']:.2f} dB (bicubic {result['bicubic_psnr']:.2f}), "
                   f"SSIM {result['ssim']:.4f} (bicubic {result['bicubic_ssim']:.4f})", err=True)
