"""`genart upscale`: upscale image files and folders with the default or a given upscaler."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import click

from ..diffusion.pipeline import SampleSettings
from ..errors import InputError
from ..imaging.normalize import load_image, save_image
from ..latents import is_image_file
from ..runtime.batch import run_batch
from ..upscaling import auto_tiling, describe, model_scale, resample, upscale, upscale_alpha
from .common import check_outputs, model_options, names_folder, progress_bar
from .sample import MAX_SEED

FORMATS = {"png": ".png", "jpg": ".jpg", "webp": ".webp"}
KEEP_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


@dataclass
class Job:
    source: Path
    target: Path


def parse_tile(value: str) -> int | None:
    """--tile: "auto" (None here, resolved per model), "0" (no tiling) or a side in input pixels."""
    if value == "auto":
        return None
    try:
        side = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: use auto, 0 (no tiles) or a tile side in pixels", param_hint="--tile")
    if side < 0 or 0 < side < 8:
        raise click.BadParameter(f"{side}: a tile needs at least 8 pixels a side (0 turns tiling off)",
                                 param_hint="--tile")
    return side


# Files in a folder with these suffixes are inputs even if they do not decode, so that a damaged
# image fails the run instead of being skipped as "not an image".
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".pgm", ".ppm"}


def find_inputs(inputs: list[Path], recursive: bool, note) -> tuple[list[tuple[Path, Path]], int]:
    """Return ((file, path relative to its input folder) pairs, count of skipped non-image files).

    Each input file counts once, however often it is named.
    """
    found, seen, skipped = [], set(), 0

    def add(path: Path, relative: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append((path, relative))

    for item in inputs:
        if item.is_dir():
            files = sorted(p for p in (item.rglob("*") if recursive else item.iterdir()) if p.is_file())
            for path in files:
                if path.name.startswith("."):
                    continue
                if path.suffix.lower() in IMAGE_SUFFIXES or is_image_file(path):
                    add(path, path.relative_to(item))
                else:
                    note(f"skipping {path}: not an image")
                    skipped += 1
        elif item.is_file() or not item.exists():
            # A missing file fails later with its own message; the other inputs still run.
            add(item, Path(item.name))
        else:
            raise InputError(f"{item}: not a file or folder")
    return found, skipped


def output_suffix(source: Path, fmt: str | None) -> str:
    if fmt:
        return FORMATS[fmt]
    return source.suffix.lower() if source.suffix.lower() in KEEP_SUFFIXES else ".png"


def plan_jobs(inputs: list[Path], found: list[tuple[Path, Path]], out: str | None, fmt: str | None,
              label: str) -> list[Job]:
    """Map inputs to outputs: next to each input (NAME_x4.EXT) without --out, else into --out."""
    single_file = len(found) == 1 and not any(i.is_dir() for i in inputs)
    # --out is a folder unless one file is upscaled and --out is a file name with a suffix.
    out_is_file = out is not None and single_file and not names_folder(out) and bool(Path(out).suffix)
    if out is None and any(i.is_dir() for i in inputs):
        raise click.BadParameter("folders need an output folder: pass --out DIR", param_hint="--out")
    if out is not None and not single_file and not names_folder(out) and Path(out).suffix:
        raise click.BadParameter(f"{len(found)} inputs need an output folder, not the file name {out}; end the "
                                 "folder name with /", param_hint="--out")
    jobs = []
    for source, relative in found:
        name = f"{relative.stem}_{label}{output_suffix(source, fmt)}"
        if out is None:
            target = source.with_name(name)
        elif out_is_file:
            target = Path(out)
        else:
            target = Path(out) / relative.parent / name
        jobs.append(Job(source, target))
    seen: dict[Path, Path] = {}
    for job in jobs:
        key = Path(os.path.normcase(job.target.resolve()))
        if key in seen:
            raise InputError(f"{job.source}: its output {job.target} would also be written for {seen[key]}; "
                             "rename one input or choose another --format")
        if key == Path(os.path.normcase(job.source.resolve())):
            raise InputError(f"{job.source}: the output would replace the input; choose another --out")
        seen[key] = job.source
    return jobs


def complete_image(path: Path) -> bool:
    """True when the file decodes to the end; a truncated output from an interrupted run does not."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
        return True
    except Exception:  # any decode failure means the file must be written again
        return False


@click.command("upscale", short_help="Upscale images and folders of images.")
@model_options(upscaler=True)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(), default=None,
              help="Output file (one input file) or folder (needed for folder inputs). Default: beside each "
                   "input, as NAME_x4.EXT with the scale in the name.")
@click.option("--scale", type=click.FloatRange(0, 16, min_open=True), default=None,
              help="Output scale. Another scale than the model's runs the model, then resamples (Lanczos).")
@click.option("--tile", default="auto", show_default=True,
              help="Tile side in input pixels, 0 for none; auto bounds memory by the model's tile size.")
@click.option("--tile-overlap", type=click.IntRange(0), default=None,
              help="Context pixels around each tile. Default for feed-forward models: the receptive radius up "
                   "to 32 (exact for SRVGGNetCompact); for latent diffusion: a quarter tile.")
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS), case_sensitive=False), default=None,
              help="Output format. Default: the input's (PNG for other formats).")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True, help="JPEG and WebP quality.")
@click.option("--recursive", "-r", is_flag=True, help="Descend into sub-folders and mirror them under --out.")
@click.option("--skip-existing", is_flag=True, help="Skip inputs whose output exists and decodes completely.")
@click.option("--overwrite", is_flag=True, help="Replace outputs that exist already.")
@click.option("--steps", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="DDIM steps (latent-diffusion models only).")
@click.option("--eta", type=click.FloatRange(0.0, 1.0), default=1.0, show_default=True,
              help="DDIM noise (latent-diffusion models only).")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True,
              help="Noise seed (latent-diffusion models only).")
@click.pass_context
def upscale_command(ctx, bundle, runtime, console, inputs, out, scale, tile, tile_overlap, fmt, quality, recursive,
                    skip_existing, overwrite, steps, eta, seed):
    """Upscale images or folders of images; the output keeps the input's mode, depth, alpha and ICC profile."""
    native = model_scale(bundle)
    scale = scale or native
    label = f"x{scale:g}"
    if skip_existing and overwrite:
        raise click.BadParameter("choose one of --skip-existing and --overwrite", param_hint="--skip-existing")
    tiling = auto_tiling(bundle, parse_tile(tile), tile_overlap)
    settings = SampleSettings(steps=steps, eta=eta, seed=seed)

    fmt = fmt.lower() if fmt else None
    found, not_images = find_inputs(list(inputs), recursive, lambda m: console.print(f"note: {m}"))
    jobs = plan_jobs(list(inputs), found, out, fmt, label)
    skipped = []
    if skip_existing:
        skipped = [job for job in jobs if job.target.exists() and complete_image(job.target)]
        jobs = [job for job in jobs if job not in skipped]
    check_outputs([job.target for job in jobs], overwrite or skip_existing)
    if not jobs and not skipped:
        raise InputError("no images to upscale in the given inputs")
    note = "" if scale == native else f", then Lanczos to x{scale:g}"
    console.print(f"upscaling {len(jobs)} image(s) with {bundle.name} ({describe(bundle)}{note}) "
                  f"on {runtime.describe()}" + (f"; {len(skipped)} skipped, their outputs exist" if skipped else ""))

    with progress_bar(console) as progress:
        task = progress.add_task("upscale", total=len(jobs))

        def job_runner(job: Job):
            def run() -> Path:
                source = load_image(job.source)
                h, w = source.rgb.shape[-2:]
                size = (max(1, round(h * scale)), max(1, round(w * scale)))
                if max(size) > 65535:
                    raise InputError(f"{job.source}: the output would be {size[1]}x{size[0]} pixels, beyond what "
                                     "image formats hold; use a smaller --scale")
                # A second bar follows the tiles (feed-forward) or steps (latent diffusion) of this file.
                part = progress.add_task(job.source.name, total=None)
                rgb = upscale(bundle, source.rgb, runtime, tiling, settings,
                              on_progress=lambda done, total: progress.update(part, completed=done, total=total))
                progress.remove_task(part)
                alpha = upscale_alpha(source.alpha, native) if source.alpha is not None else None
                if scale != native:
                    rgb = resample(rgb, size)
                    alpha = resample(alpha, size) if alpha is not None else None
                written = save_image(job.target, rgb, alpha, source, fmt=fmt, quality=quality)
                progress.advance(task)
                return written
            return str(job.source), run

        result = run_batch((job_runner(job) for job in jobs), lambda m: click.echo(f"genart: {m}", err=True),
                           click.echo)
    summary = f"{len(result.written)} upscaled, {len(result.failed)} failed"
    if skipped:
        summary += f", {len(skipped)} skipped (output exists)"
    if not_images:
        summary += f", {not_images} not images"
    console.print(summary)
    if result.failed:
        ctx.exit(result.exit_code)

