"""The `genart` command group. Each command lives in its own module and calls the engine."""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import GenartError
from .codec import decode_command, encode_command
from .convert import convert_command
from .inpaint import inpaint_command
from .inspect_command import inspect_command
from .sample import sample_command
from .train import train_group
from .upscale import upscale_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="genart")
def cli():
    """Generate and upscale images with latent diffusion and Real-ESRGAN-family models.

    Exit codes: 0 success, 1 internal error, 2 usage error, 3 invalid input file or
    unwritable output, 4 invalid or incompatible model, 5 NaN or Inf output, 130 interrupted.
    """


cli.add_command(sample_command)
cli.add_command(encode_command)
cli.add_command(decode_command)
cli.add_command(upscale_command)
cli.add_command(inpaint_command)
cli.add_command(inspect_command)
cli.add_command(convert_command)
cli.add_command(train_group)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and turn genart's errors into one line on stderr and a documented exit code."""
    try:
        code = cli.main(args=argv, prog_name="genart", standalone_mode=False)
    except click.ClickException as err:
        err.show()
        code = err.exit_code
    except click.exceptions.Abort:
        click.echo("genart: interrupted", err=True)
        code = 130
    except KeyboardInterrupt:
        click.echo("genart: interrupted; finished files were kept, no partial file was written", err=True)
        code = 130
    except GenartError as err:
        click.echo(f"genart: error: {err}", err=True)
        code = err.exit_code
    except OSError as err:
        # Reading and writing files: a full disk, a missing permission, a name too long.
        where = f"{err.filename}: " if err.filename else ""
        click.echo(f"genart: error: {where}{err.strerror or err}; check the path and free space", err=True)
        code = 3
    sys.exit(code if isinstance(code, int) else 0)
