"""`genart encode` and `genart decode`: images to latent files and back through the autoencoder."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError, ModelError
from ..imaging.io import load_image, save_png
from ..latents import decode, decode_indices, encode, load_latent, save_latent
from ..runtime.batch import run_batch
from .common import model_options, plan_outputs, png_settings


def require_autoencoder(bundle) -> None:
    if bundle.autoencoder is None:
        raise ModelError(f"{bundle.path}: contains no autoencoder; pass a model file that has one with --model")


def report_error(message: str) -> None:
    """Print a skipped input's error; errors reach stderr even with --quiet."""
    click.echo(f"genart: {message}", err=True)


def finish(ctx: click.Context, result) -> None:
    if result.failed:
        if len(result.written) + len(result.failed) > 1:
            report_error(f"{len(result.written)} written, {len(result.failed)} failed")
        ctx.exit(result.exit_code)


@click.command("encode", short_help="Encode images to latent files.")
@model_options
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(), required=True,
              help="Output file for one image, or a folder (NAME.latent.safetensors per image).")
@click.option("--overwrite", is_flag=True, help="Replace output files that exist already.")
@click.pass_context
def encode_command(ctx, bundle, runtime, console, images, out, overwrite):
    """Encode images to latent files (the latent, its codebook indices and the image size)."""
    require_autoencoder(bundle)
    outputs = plan_outputs(list(images), out, ".latent.safetensors", overwrite)
    autoencoder = runtime.prepare(bundle.autoencoder)

    def job(source: Path, target: Path):
        def run() -> Path:
            pixels = load_image(source)
            latent, indices = encode(autoencoder, pixels, runtime)
            return save_latent(target, latent, indices, autoencoder_sha256=bundle.autoencoder_sha256,
                               model_name=bundle.name, image_size=tuple(pixels.shape[-2:]))
        return str(source), run

    result = run_batch((job(s, t) for s, t in zip(images, outputs)), report_error, click.echo)
    finish(ctx, result)


@click.command("decode", short_help="Decode latent files to PNG images.")
@model_options
@click.argument("latents", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(), required=True,
              help="Output PNG for one latent, or a folder (NAME.png per latent).")
@click.option("--from-indices", is_flag=True,
              help="Decode the stored codebook indices instead of the latent (VQ autoencoders only).")
@click.option("--overwrite", is_flag=True, help="Replace output files that exist already.")
@click.pass_context
def decode_command(ctx, bundle, runtime, console, latents, out, from_indices, overwrite):
    """Decode latent files written by `genart encode` back to PNG images."""
    require_autoencoder(bundle)
    outputs = plan_outputs(list(latents), out, ".png", overwrite)
    autoencoder = runtime.prepare(bundle.autoencoder)

    def job(source: Path, target: Path):
        def run() -> Path:
            if target.suffix.lower() != ".png":
                raise InputError(f"{target}: genart decode writes PNG images; give --out a .png name or a folder")
            stored = load_latent(source, bundle.autoencoder_sha256)
            if stored.latent.shape[1] != bundle.autoencoder.config.embed_dim:
                raise InputError(f"{source}: latent has {stored.latent.shape[1]} channels, the autoencoder expects "
                                 f"{bundle.autoencoder.config.embed_dim}; encode the image again")
            if from_indices:
                if stored.indices is None:
                    raise InputError(f"{source}: no codebook indices in this latent file; decode without --from-indices")
                pixels = decode_indices(autoencoder, stored.indices, runtime, label=str(source))
            else:
                pixels = decode(autoencoder, stored.latent, runtime, label=str(source))
            height, width = stored.image_size
            f = bundle.autoencoder.downsample_factor
            latent_h, latent_w = stored.latent.shape[-2:]
            if not ((latent_h - 1) * f < height <= latent_h * f and (latent_w - 1) * f < width <= latent_w * f):
                raise InputError(f"{source}: stored image size {height}x{width} does not fit a {latent_h}x{latent_w} "
                                 "latent; encode the image again")
            pixels = pixels[0, :, :height, :width]
            return save_png(pixels, target, png_settings(bundle, runtime, source=source.name))
        return str(source), run

    result = run_batch((job(s, t) for s, t in zip(latents, outputs)), report_error, click.echo)
    finish(ctx, result)
