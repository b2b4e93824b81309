"""genart: image generation and super-resolution from the command line."""

__version__ = "0.1.0"
