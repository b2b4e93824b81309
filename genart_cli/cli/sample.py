"""`genart sample`: generate images with an unconditional latent-diffusion model."""

from __future__ import annotations

import math
import re
from pathlib import Path

import click
import torch

from ..diffusion.pipeline import SampleSettings, check_can_sample, check_class_settings, sample
from ..diffusion.samplers import SAMPLERS
from ..imaging.io import make_grid, save_png
from ..checkpoints.loader import load_model
from ..upscaling import model_scale, upscale_sample
from .common import check_outputs, default_upscaler, model_options, names_folder, png_settings, progress_bar

COUNTER = re.compile(r"%0?\d*d")
# torch's CPU generator keeps only the low 32 bits of a seed, so larger seeds would repeat images.
MAX_SEED = 2**32 - 1


def sample_paths(out_option: str, num_images: int) -> list[Path]:
    """Output path of each image.

    A pattern with a printf counter (art-%03d.png) numbers the images from 0. A folder (existing,
    or given with a trailing slash, or without a suffix) gets sample-00000.png and so on. A file
    name is used as it is for one image; for several, a counter is added before the suffix.
    """
    out = Path(out_option)
    if len(COUNTER.findall(out_option)) > 1:
        raise click.BadParameter(f"{out_option!r} has more than one counter; use one, as in art-%03d.png",
                                 param_hint="--out")
    if COUNTER.search(out_option):
        return [Path(COUNTER.sub(lambda m: m.group(0) % k, out_option, count=1)) for k in range(num_images)]
    if names_folder(out_option) or not out.suffix:
        return [out / f"sample-{k:05d}.png" for k in range(num_images)]
    if out.suffix.lower() != ".png":
        raise click.BadParameter(f"{out}: genart writes PNG images; give a .png name, a folder or a pattern",
                                 param_hint="--out")
    if num_images == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{k:05d}{out.suffix}") for k in range(num_images)]


@click.command("sample", short_help="Generate images with a latent-diffusion model.")
@model_options
@click.option("--steps", type=click.IntRange(1, 1000), default=50, show_default=True, help="Sampler steps.")
@click.option("--eta", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="DDIM noise, from 0 (deterministic) to 1 (DDPM-like).")
@click.option("--sampler", type=click.Choice(sorted(SAMPLERS)), default="ddim", show_default=True,
              help="Sampling method.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True,
              help="Seed of image 0; image k uses seed + k.")
@click.option("--num-images", "-n", type=click.IntRange(1), default=1, show_default=True,
              help="Images to make; a .png --out name gets a counter (art-00000.png, ...) when above 1.")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True,
              help="Images per forward pass; results do not depend on it.")
@click.option("--out", "-o", type=click.Path(), default="sample.png", show_default=True,
              help="A .png file, a folder, or a pattern with a counter such as art-%03d.png.")
@click.option("--grid", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write all images tiled into this PNG.")
@click.option("--class-label", "class_labels", type=click.IntRange(0), multiple=True,
              help="Class of a class-conditional model (cin256: an ImageNet index); repeat to cycle classes over images.")
@click.option("--guidance-scale", type=click.FloatRange(0, 50), default=1.0, show_default=True,
              help="Classifier-free guidance for class-conditional models with a no-class entry (cin256-v2: 3.0).")
@click.option("--upscale", type=click.FloatRange(1, 16), default=None,
              help="Upscale each image by this factor with the bundled upscaler ($GENART_UPSCALER).")
@click.option("--overwrite", is_flag=True, help="Replace output files that exist already.")
def sample_command(bundle, runtime, console, steps, eta, sampler, seed, num_images, batch_size, out, grid,
                   class_labels, guidance_scale, upscale, overwrite):
    """Generate images from noise and write them as PNGs with their settings embedded."""
    check_can_sample(bundle)
    if not math.isfinite(eta):
        raise click.BadParameter(f"{eta} is not a number between 0 and 1", param_hint="--eta")
    if seed + num_images - 1 > MAX_SEED:
        raise click.BadParameter(f"image {num_images - 1} would need seed {seed + num_images - 1}, above {MAX_SEED}",
                                 param_hint="--seed")
    paths = sample_paths(out, num_images)
    if grid is not None and grid in paths:
        raise click.BadParameter(f"{grid} is also the path of a sample; choose another grid file", param_hint="--grid")
    check_outputs(paths + ([grid] if grid else []), overwrite)
    settings = SampleSettings(steps=steps, eta=eta, seed=seed, sampler=sampler, num_images=num_images,
                              batch_size=min(batch_size, num_images), class_labels=tuple(class_labels),
                              guidance_scale=guidance_scale)
    try:
        check_class_settings(bundle, settings)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    upscaler = None
    if upscale is not None and upscale != 1:
        upscaler, report = load_model(default_upscaler())
        model_scale(upscaler)  # fails early, with the file named, if it is no upscaler
    console.print(f"sampling {num_images} image(s), {steps} {sampler} steps, eta {eta}, seed {seed}, "
                  f"on {runtime.describe()} with {bundle.name}"
                  + (f", upscaled x{upscale:g} with {upscaler.name}" if upscaler else ""))

    images = []
    with progress_bar(console) as progress:
        task = progress.add_task("sample", total=num_images * steps)
        for k, pixels in sample(bundle, runtime, settings, on_step=lambda n: progress.advance(task, n)):
            meta = png_settings(bundle, runtime, seed=seed + k, steps=steps, sampler=sampler, eta=eta,
                                run_seed=seed, index=k)
            if class_labels:
                meta.update(class_label=class_labels[k % len(class_labels)], guidance_scale=guidance_scale)
            if upscaler is not None:
                pixels = upscale_sample(upscaler, pixels, runtime, upscale)
                meta.update(upscale=f"{upscale:g}", upscaler=upscaler.name)
            click.echo(save_png(pixels, paths[k], meta))
            if grid:
                images.append(pixels)
    if grid:
        meta = png_settings(bundle, runtime, seed=seed, steps=steps, sampler=sampler, eta=eta, num_images=num_images)
        click.echo(save_png(make_grid(torch.stack(images)), grid, meta))
