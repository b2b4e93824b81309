"""Options and helpers shared by the commands: model, device and precision, output paths, console."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..checkpoints.loader import WEIGHT_CHOICES, load_model
from ..checkpoints.native import ModelBundle
from ..errors import InputError, ModelError
from ..runtime.device import DEVICES, PRECISIONS, Runtime, resolve_runtime

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_NAME = "emoji-ldm-vqf4.safetensors"


def default_model() -> Path:
    """GENART_MODEL if set, else the default weights shipped in the repository's weights/ folder."""
    return Path(os.environ.get("GENART_MODEL") or PACKAGE_ROOT / "weights" / DEFAULT_MODEL_NAME)


def stderr_console(quiet: bool) -> Console:
    return Console(stderr=True, quiet=quiet, soft_wrap=True, highlight=False)


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, disable=console.quiet)


DEFAULT_UPSCALER_NAME = "upscaler-x4.safetensors"


def default_upscaler() -> Path:
    """GENART_UPSCALER if set, else the default x4 upscaler shipped in weights/."""
    return Path(os.environ.get("GENART_UPSCALER") or PACKAGE_ROOT / "weights" / DEFAULT_UPSCALER_NAME)


def model_options(func=None, *, upscaler: bool = False):
    """Add --model, --config, --weights, --device, --precision and --quiet; pass a bundle and Runtime instead.

    With upscaler=True the default model is the bundled upscaler ($GENART_UPSCALER) instead of the
    bundled diffusion model ($GENART_MODEL).
    """
    if func is None:
        return functools.partial(model_options, upscaler=upscaler)
    if upscaler:
        variable, default = "GENART_UPSCALER", default_upscaler
        model_help = ("Upscaler: genart or Real-ESRGAN/ESRGAN safetensors, or a latent-diffusion super-resolution "
                      "checkpoint or diffusers folder. Default: $GENART_UPSCALER or the bundled x4 upscaler.")
    else:
        variable, default = "GENART_MODEL", default_model
        model_help = ("Checkpoint: genart or latent-diffusion safetensors, or a diffusers folder. "
                      "Default: $GENART_MODEL or the bundled emoji model.")

    @click.option("--model", "model_path", type=click.Path(path_type=Path), default=None, help=model_help)
    @click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="The original yaml config of a latent-diffusion or taming checkpoint.")
    @click.option("--weights", type=click.Choice(WEIGHT_CHOICES), default="ema", show_default=True,
                  help="UNet weights of checkpoints that carry an EMA copy.")
    @click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                  help="Where to run: auto picks CUDA, then MPS, then the CPU.")
    @click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
                  help="Compute precision: auto is fp16 autocast on CUDA and fp32 elsewhere.")
    @click.option("--quiet", "-q", is_flag=True, help="No progress or notes on stderr; errors are still printed.")
    @functools.wraps(func)
    def wrapper(model_path, config_path, weights, device, precision, quiet, **kwargs):
        runtime = resolve_runtime(device, precision)
        console = stderr_console(quiet)
        if model_path is None and os.environ.get(variable) and not default().exists():
            raise ModelError(f"{default()}: not found; {variable} points to it: fix or unset {variable}")
        bundle, report = load_model(model_path or default(), config_path, weights)
        for note in report.notes:
            console.print(f"note: {note}")
        if report.weights in ("ema", "raw"):
            console.print(f"using the {report.weights} weights of {bundle.name}")
        return func(bundle=bundle, runtime=runtime, console=console, **kwargs)

    return wrapper


def names_folder(out: str) -> bool:
    """True when --out (the raw option string) ends with a path separator or is an existing folder."""
    return out.endswith(("/", os.sep)) or Path(out).is_dir()


def plan_outputs(inputs: list[Path], out_option: str, suffix: str, overwrite: bool) -> list[Path]:
    """Map each input to its output path. With several inputs, or a folder, out is a folder.

    Raises InputError for name collisions and, without --overwrite, for outputs that exist already.
    """
    out = Path(out_option)
    if len(inputs) > 1 and not names_folder(out_option) and out.suffix:
        raise click.BadParameter(f"{len(inputs)} inputs need a folder, not the file name {out_option}; "
                                 "end the folder name with /", param_hint="--out")
    if names_folder(out_option) or len(inputs) > 1:
        outputs = [out / (output_stem(path) + suffix) for path in inputs]
    else:
        outputs = [out]
    seen = {}
    for source, target in zip(inputs, outputs):
        if target in seen:
            raise InputError(f"{source}: its output {target} collides with that of {seen[target]}; rename one input")
        seen[target] = source
    check_outputs(outputs, overwrite)
    return outputs


def output_stem(path: Path) -> str:
    name = path.name
    for ending in (".latent.safetensors", ".safetensors"):
        if name.endswith(ending):
            return name[: -len(ending)]
    return path.stem


def check_outputs(outputs: list[Path], overwrite: bool) -> None:
    """Fail before any work when an output exists (without --overwrite) or cannot be created.

    An output cannot be created when one of its parent paths is a file, or is a folder that exists
    but is not writable.
    """
    for path in outputs:
        if path.is_dir():
            raise InputError(f"{path}: output is a folder; choose a file name for --out")
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise InputError(f"{path}: cannot create it because {parent} is a file; choose another --out")
        if not os.access(parent, os.W_OK):
            raise InputError(f"{path}: {parent} is not writable; choose another --out")
    if overwrite:
        return
    existing = [p for p in outputs if p.exists()]
    if existing:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise InputError(f"{existing[0]}{more}: output exists already; pass --overwrite or choose another --out")


def png_settings(bundle: ModelBundle, runtime: Runtime, **settings) -> dict[str, object]:
    from .. import __version__

    return {"model": bundle.name, "device": runtime.device.type, "precision": runtime.precision, **settings,
            "version": __version__}
