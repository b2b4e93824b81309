"""`genart inpaint`: repaint the masked region of an image."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch

from ..errors import InputError
from ..imaging.io import save_png
from ..imaging.normalize import load_image
from ..inpainting import InpaintSettings, check_can_inpaint, inpaint, inpaint_cropped
from .common import check_outputs, model_options, png_settings, progress_bar
from .sample import MAX_SEED, sample_paths


def load_mask(path: Path, size: tuple[int, int], image_path: Path, invert: bool) -> torch.Tensor:
    """Read a mask file as (1, 1, H, W) {0, 1}: grey values at or above one half mean repaint."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise InputError(f"{path}: mask file not found; check the path")
    try:
        with Image.open(path) as image:
            if getattr(image, "n_frames", 1) > 1:
                raise InputError(f"{path}: an animated mask; save one frame as a PNG")
            grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image; the mask must be a PNG or JPEG with white where to repaint") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{path}: the mask could not be decoded ({err}); the file may be truncated") from None
    if grey.shape != size:
        raise InputError(f"{path}: the mask is {grey.shape[1]}x{grey.shape[0]} pixels but {image_path} is "
                         f"{size[1]}x{size[0]}; make them the same size")
    mask = torch.from_numpy((grey >= 0.5).astype(np.float32))[None, None]
    return 1 - mask if invert else mask


@click.command("inpaint", short_help="Repaint the masked region of an image.")
@model_options
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--mask", "mask_path", type=click.Path(path_type=Path), default=None,
              help="Mask image of the same size: white (at or above half grey) is repainted.")
@click.option("--invert-mask", is_flag=True, help="Repaint the black part of the mask instead.")
@click.option("--mask-from-alpha", is_flag=True, help="Repaint the transparent pixels of IMAGE (no --mask).")
@click.option("--out", "-o", type=click.Path(), default="inpainted.png", show_default=True,
              help="A .png file, a folder, or a pattern with a counter such as fill-%03d.png.")
@click.option("--steps", type=click.IntRange(1, 1000), default=50, show_default=True, help="DDIM steps.")
@click.option("--eta", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True, help="DDIM noise.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True,
              help="Seed of image 0; image k uses seed + k.")
@click.option("--num-images", "-n", type=click.IntRange(1), default=1, show_default=True,
              help="Results to make, each with its own seed.")
@click.option("--resample", type=click.IntRange(1, 20), default=1, show_default=True,
              help="RePaint (unconditional models): redo each step this many times, for a better fit.")
@click.option("--mask-blur", type=click.FloatRange(0, 256), default=0.0, show_default=True,
              help="Feather the seam over about this many pixels, inside the mask only.")
@click.option("--crop-to-mask", "crop_padding", type=click.IntRange(0), default=None,
              help="Work on the box around the mask grown by this many pixels, at the model's size, "
                   "then paste it back (for large photos).")
@click.option("--overwrite", is_flag=True, help="Replace output files that exist already.")
def inpaint_command(bundle, runtime, console, image, mask_path, invert_mask, mask_from_alpha, out, steps, eta, seed,
                    num_images, resample, mask_blur, crop_padding, overwrite):
    """Repaint the masked region of IMAGE; pixels outside the mask stay exactly as they were."""
    path = check_can_inpaint(bundle)
    if (mask_path is None) == (not mask_from_alpha):
        raise click.UsageError("pass exactly one of --mask MASK and --mask-from-alpha")
    if resample > 1 and path == "dedicated":
        raise click.UsageError("--resample applies to unconditional models (RePaint); this is an inpainting model")
    paths = sample_paths(out, num_images)
    check_outputs(paths, overwrite)
    source = load_image(image)
    size = tuple(source.rgb.shape[-2:])
    if mask_from_alpha:
        if source.alpha is None:
            raise InputError(f"{image}: no transparency to take the mask from; pass --mask instead")
        mask = (source.alpha < 0.5).float()
        mask = 1 - mask if invert_mask else mask
    else:
        mask = load_mask(mask_path, size, image, invert_mask)
        if source.alpha is not None:
            console.print(f"note: {image} has transparency; it is ignored (pass --mask-from-alpha to use it)")
    settings = InpaintSettings(steps=steps, eta=eta, seed=seed, num_images=num_images, resample=resample,
                               mask_blur=mask_blur)
    meta_base = dict(steps=steps, eta=eta, source=image.name, mask=mask_path.name if mask_path else "alpha",
                     invert_mask=invert_mask, resample=resample, mask_blur=mask_blur, run_seed=seed)

    if mask.sum() == 0:
        console.print(f"warning: the mask of {image} is empty; the image is copied through unchanged")
        for k in range(num_images):
            click.echo(save_png(source.rgb[0] * 2 - 1, paths[k], png_settings(bundle, runtime, seed=seed + k,
                                                                              index=k, **meta_base)))
        return
    console.print(f"inpainting {image} ({int(mask.sum())} of {size[0] * size[1]} pixels) with {bundle.name} "
                  f"({'inpainting model' if path == 'dedicated' else 'RePaint'}), {steps} steps, seed {seed}, "
                  f"on {runtime.describe()}")
    with progress_bar(console) as progress:
        task = progress.add_task("inpaint", total=num_images * steps)

        def on_step(count: int) -> None:
            progress.advance(task, count)

        run = (inpaint(bundle, runtime, source.rgb, mask, settings, on_step) if crop_padding is None else
               inpaint_cropped(bundle, runtime, source.rgb, mask, settings, crop_padding, on_step))
        for k, pixels in run:
            meta = png_settings(bundle, runtime, seed=seed + k, index=k, **meta_base)
            if crop_padding is not None:
                meta["crop_to_mask"] = crop_padding
            click.echo(save_png(pixels[0] * 2 - 1, paths[k], meta))
