"""The shipped default weights, end to end through the CLI with few steps."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import read_pixels, run_cli
from genart_cli.checkpoints.native import load_bundle
from genart_cli.cli.common import default_model
from genart_cli.imaging.io import read_png_settings


@pytest.fixture(scope="module")
def default_sample(tmp_path_factory):
    """Four 5-step samples from the default model, written to a folder."""
    cwd = tmp_path_factory.mktemp("default")
    result = run_cli(cwd, "sample", "--steps", "5", "-n", "4", "--batch-size", "4", "--out", "out/", "--quiet")
    assert result.returncode == 0, result.stderr
    return cwd, [cwd / line for line in result.stdout.split()]


def test_default_weights_load():
    bundle = load_bundle(default_model())
    assert bundle.autoencoder is not None
    assert bundle.unet is not None
    assert bundle.model_card


def test_default_sample_writes_64px(default_sample):
    _, paths = default_sample
    assert len(paths) == 4
    for path in paths:
        assert read_pixels(path).shape == (64, 64, 3)


def test_default_sample_settings(default_sample):
    _, paths = default_sample
    settings = read_png_settings(paths[2])
    assert settings["model"] == default_model().name
    assert settings["seed"] == "2"
    assert settings["steps"] == "5"


def test_default_samples_differ(default_sample):
    _, paths = default_sample
    assert np.abs(read_pixels(paths[0]) - read_pixels(paths[1])).max() > 50


def test_default_seed_reproducible(default_sample):
    """The same seed and settings on the same device give the same pixels."""
    cwd, paths = default_sample
    again = run_cli(cwd, "sample", "--steps", "5", "-n", "4", "--batch-size", "4", "--out", "again/", "--quiet")
    assert again.returncode == 0, again.stderr
    repeated = [cwd / line for line in again.stdout.split()]
    for first, second in zip(paths, repeated):
        assert np.array_equal(read_pixels(first), read_pixels(second)), second.name


def test_default_round_trip_psnr(default_sample):
    """A sample lies in the autoencoder's range, so encode and decode should keep it closely."""
    cwd, paths = default_sample
    encoded = run_cli(cwd, "encode", paths[0], "--out", "s.latent.safetensors", "--quiet")
    assert encoded.returncode == 0, encoded.stderr
    decoded = run_cli(cwd, "decode", "s.latent.safetensors", "--out", "back.png", "--quiet")
    assert decoded.returncode == 0, decoded.stderr
    error = (read_pixels(cwd / "back.png") - read_pixels(paths[0])).astype(np.float64)
    psnr = 10 * np.log10(255.0**2 / max(np.mean(error**2), 1e-12))
    assert psnr > 25.0


def test_default_batch_size_invariant(default_sample):
    """Batch 1 against batch 4: CPU kernels may round differently, by at most one 8-bit level."""
    cwd, paths = default_sample
    single = run_cli(cwd, "sample", "--steps", "5", "-n", "4", "--batch-size", "1", "--out", "single/", "--quiet")
    assert single.returncode == 0, single.stderr
    for batched, alone in zip(paths, [cwd / line for line in single.stdout.split()]):
        assert np.abs(read_pixels(batched) - read_pixels(alone)).max() <= 1, alone.name
