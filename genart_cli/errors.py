"""Errors that the CLI turns into a one-line message and a documented exit code.

Exit codes: 0 success, 1 unexpected internal error, 2 usage error (Click), 3 invalid input file or
unwritable output, 4 invalid or incompatible model, 5 numerical failure (NaN or Inf output),
130 interrupted.
"""


class GenartError(Exception):
    exit_code = 1


class InputError(GenartError):
    """An input image, latent or mask file is missing, unreadable or incompatible."""

    exit_code = 3


class ModelError(GenartError):
    """A checkpoint is missing, unreadable, of the wrong kind or does not match its config."""

    exit_code = 4


class NumericalError(GenartError):
    """A model produced NaN or Inf even in fp32."""

    exit_code = 5
