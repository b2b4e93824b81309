"""Bad inputs and models: one stderr line naming the file, the documented exit code, no output file.

Exit codes from genart_cli/errors.py: 2 usage error, 3 invalid input file, 4 invalid or
incompatible model. encode and decode also print a summary line such as "0 written, 1 failed"
after the per-file messages, and the checks below ignore it.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import run_cli, write_test_image

USAGE_ERROR = 2
INPUT_ERROR = 3
MODEL_ERROR = 4
BATCH_SUMMARY = re.compile(r"^genart: \d+ written, \d+ failed$")


def message_lines(stderr: str) -> list[str]:
    """Return the stderr lines other than the batch summary."""
    return [line for line in stderr.splitlines() if not BATCH_SUMMARY.match(line)]


def assert_rejected(result, exit_code: int, name: str, out_dir: Path) -> str:
    """Check the exit code, a single message line naming `name`, and an empty output folder.

    Returns the message line, for checks on its wording.
    """
    lines = message_lines(result.stderr)

    assert result.returncode == exit_code, result.stderr
    assert len(lines) == 1, result.stderr
    assert name in lines[0], result.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == [], "output or temporary files were left"
    return lines[0]


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return (tensors, metadata) of a safetensors file."""
    with safe_open(str(path), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        metadata = handle.metadata() or {}
    return tensors, metadata


@pytest.fixture
def out_dir(tmp_path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def encode(model: Path, cwd: Path, *args: object):
    return run_cli(cwd, "encode", "--model", model, *args)


def sample(model: Path, cwd: Path):
    return run_cli(cwd, "sample", "--model", model, "--steps", "1", "-o", "out/sample.png")


def test_encode_missing_image(tiny_model, tmp_path, out_dir):
    result = encode(tiny_model, tmp_path, "absent.png", "-o", "out/absent.latent.safetensors")

    line = assert_rejected(result, INPUT_ERROR, "absent.png", out_dir)
    assert "not found" in line


def test_encode_text_as_png(tiny_model, tmp_path, out_dir):
    (tmp_path / "notes.png").write_text("these are notes, not pixels\n")

    result = encode(tiny_model, tmp_path, "notes.png", "-o", "out/notes.latent.safetensors")

    assert_rejected(result, INPUT_ERROR, "notes.png", out_dir)


def test_encode_truncated_png(tiny_model, tmp_path, out_dir):
    path = write_test_image(tmp_path / "cut.png", 32, 32)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    result = encode(tiny_model, tmp_path, "cut.png", "-o", "out/cut.latent.safetensors")

    line = assert_rejected(result, INPUT_ERROR, "cut.png", out_dir)
    assert "truncated" in line


def write_png_header_only(path: Path, width: int, height: int) -> None:
    """Write a 1x1 PNG whose IHDR chunk claims width x height, with a valid CRC."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    # Bytes 8-15 are the IHDR length and type, 16-28 its data (width and height first), 29-32 its CRC.
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def test_encode_oversized_png(tiny_model, tmp_path, out_dir):
    write_png_header_only(tmp_path / "huge.png", 20000, 20000)

    result = encode(tiny_model, tmp_path, "huge.png", "-o", "out/huge.latent.safetensors")

    assert_rejected(result, INPUT_ERROR, "huge.png", out_dir)


def test_sample_missing_model(tmp_path, out_dir):
    result = sample(tmp_path / "absent.safetensors", tmp_path)

    line = assert_rejected(result, MODEL_ERROR, "absent.safetensors", out_dir)
    assert "not found" in line


def test_sample_truncated_model(tiny_model, tmp_path, out_dir):
    data = tiny_model.read_bytes()
    path = tmp_path / "half.safetensors"
    path.write_bytes(data[: len(data) // 2])

    result = sample(path, tmp_path)

    assert_rejected(result, MODEL_ERROR, "half.safetensors", out_dir)


def test_sample_unknown_layout(tmp_path, out_dir):
    """A safetensors file with neither genart metadata nor a known tensor layout."""
    path = tmp_path / "plain.safetensors"
    save_file({"layer.weight": torch.zeros(2, 2), "layer.bias": torch.zeros(2)}, str(path))

    result = sample(path, tmp_path)

    line = assert_rejected(result, MODEL_ERROR, "plain.safetensors", out_dir)
    assert "unrecognised tensor layout" in line


def test_sample_vae_only_ldm_file(tiny_model, tmp_path, out_dir):
    """The first stage alone, in the original layout, given where a whole model is expected."""
    tensors, _ = read_checkpoint(tiny_model)
    path = tmp_path / "vae.safetensors"
    save_file({k: v for k, v in tensors.items() if k.startswith("first_stage_model.")}, str(path))

    result = sample(path, tmp_path)

    line = assert_rejected(result, MODEL_ERROR, "vae.safetensors", out_dir)
    assert "no UNet" in line


def test_sample_stripped_prefix(tiny_model, tmp_path, out_dir):
    """The UNet's prefix model.diffusion_model. stripped: a bare UNet beside a prefixed first stage."""
    tensors, _ = read_checkpoint(tiny_model)
    path = tmp_path / "stripped.safetensors"
    save_file({k.removeprefix("model.diffusion_model."): v for k, v in tensors.items()}, str(path))

    result = sample(path, tmp_path)

    line = assert_rejected(result, MODEL_ERROR, "stripped.safetensors", out_dir)
    assert "no UNet" in line


def test_sample_model_missing_tensors(tiny_model, tmp_path, out_dir):
    """Every tenth tensor, 35 of 341, is removed from the file."""
    tensors, metadata = read_checkpoint(tiny_model)
    names = sorted(tensors)
    for name in names[::10]:
        del tensors[name]
    path = tmp_path / "sparse.safetensors"
    save_file(tensors, str(path), metadata=metadata)

    result = sample(path, tmp_path)

    line = assert_rejected(result, MODEL_ERROR, "sparse.safetensors", out_dir)
    assert "missing" in line
    assert names[0] in line


def test_sample_model_wrong_shape(tiny_model, tmp_path, out_dir):
    tensors, metadata = read_checkpoint(tiny_model)
    name = "model.diffusion_model.out.2.weight"
    tensors[name] = torch.zeros(3, 32, 1, 1)
    path = tmp_path / "misshaped.safetensors"
    save_file(tensors, str(path), metadata=metadata)

    result = sample(path, tmp_path)

    line = assert_rejected(result, MODEL_ERROR, "misshaped.safetensors", out_dir)
    assert "wrong shape" in line
    assert name in line


def test_decode_other_autoencoder(tiny_model, other_ae_model, tmp_path, out_dir):
    write_test_image(tmp_path / "input.png", 16, 16)
    encoded = encode(tiny_model, tmp_path, "input.png", "-o", "input.latent.safetensors", "-q")
    assert encoded.returncode == 0, encoded.stderr

    result = run_cli(tmp_path, "decode", "--model", other_ae_model, "input.latent.safetensors", "-o", "out/input.png")

    line = assert_rejected(result, INPUT_ERROR, "input.latent.safetensors", out_dir)
    assert "another autoencoder" in line


def test_decode_non_latent(tiny_model, tmp_path, out_dir):
    save_file({"weights": torch.zeros(2, 2)}, str(tmp_path / "weights.safetensors"))

    result = run_cli(tmp_path, "decode", "--model", tiny_model, "weights.safetensors", "-o", "out/weights.png")

    line = assert_rejected(result, INPUT_ERROR, "weights.safetensors", out_dir)
    assert "not a genart latent" in line


def test_sample_autoencoder_only(ae_only_model, tmp_path, out_dir):
    result = sample(ae_only_model, tmp_path)

    line = assert_rejected(result, MODEL_ERROR, ae_only_model.name, out_dir)
    assert "autoencoder only" in line


def test_sample_usage_error(tiny_model, tmp_path, out_dir):
    result = run_cli(tmp_path, "sample", "--model", tiny_model, "--steps", "0", "-o", "out/sample.png")

    assert result.returncode == USAGE_ERROR, result.stderr
    assert "--steps" in result.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == []


def test_encode_batch_one_bad(tiny_model, tmp_path, out_dir):
    """The good images are encoded, the bad one is reported and sets the exit code."""
    write_test_image(tmp_path / "a.png", 16, 16, seed=1)
    (tmp_path / "bad.png").write_text("not an image\n")
    write_test_image(tmp_path / "c.png", 16, 16, seed=2)

    result = encode(tiny_model, tmp_path, "a.png", "bad.png", "c.png", "-o", "out")

    lines = message_lines(result.stderr)
    assert result.returncode == INPUT_ERROR, result.stderr
    assert len(lines) == 1, result.stderr
    assert "bad.png" in lines[0]
    assert "2 written, 1 failed" in result.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.latent.safetensors", "c.latent.safetensors"]
    assert result.stdout.splitlines() == ["out/a.latent.safetensors", "out/c.latent.safetensors"]


def test_encode_quiet_still_reports(tiny_model, tmp_path, out_dir):
    result = encode(tiny_model, tmp_path, "absent.png", "-o", "out/absent.latent.safetensors", "--quiet")

    assert result.returncode == INPUT_ERROR
    assert "absent.png" in result.stderr


@pytest.mark.parametrize("options", [
    ("--eta", "1.2"),
    ("--eta", "nan"),
    ("--seed", "4294967295", "-n", "2"),
    ("-o", "out/a-%d-%d.png"),
    ("-o", "out/x.jpg"),
    ("-o", "out/s.png", "--grid", "out/s.png"),
])
def test_sample_invalid_options(tiny_model, tmp_path, out_dir, options):
    result = run_cli(tmp_path, "sample", "--model", tiny_model, "--steps", "1", *options)
    assert result.returncode == USAGE_ERROR, result.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == []


def test_sample_output_under_file(tiny_model, tmp_path, out_dir):
    (out_dir / "plain.txt").write_text("not a folder")
    result = run_cli(tmp_path, "sample", "--model", tiny_model, "--steps", "1", "-o", "out/plain.txt/x.png")
    lines = message_lines(result.stderr)
    assert result.returncode == INPUT_ERROR, result.stderr
    assert len(lines) == 1, result.stderr
    assert "is a file" in lines[0]


def test_decode_nan_latent(tiny_model, tmp_path, out_dir):
    write_test_image(tmp_path / "in.png", 8, 8)
    assert encode(tiny_model, tmp_path, "in.png", "-o", "in.latent.safetensors").returncode == 0
    with safe_open(str(tmp_path / "in.latent.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    tensors["latent"] = torch.full_like(tensors["latent"], float("nan"))
    save_file(tensors, str(tmp_path / "nan.latent.safetensors"), metadata=metadata)

    result = run_cli(tmp_path, "decode", "--model", tiny_model, "nan.latent.safetensors", "-o", "out/x.png")

    line = assert_rejected(result, 5, "nan.latent.safetensors", out_dir)
    assert "NaN" in line


def test_decode_image_file(tiny_model, tmp_path, out_dir):
    write_test_image(tmp_path / "photo.png", 8, 8)
    result = run_cli(tmp_path, "decode", "--model", tiny_model, "photo.png", "-o", "out/x.png")
    line = assert_rejected(result, INPUT_ERROR, "photo.png", out_dir)
    assert "genart encode" in line


def test_decode_several_to_file_name(tiny_model, tmp_path, out_dir):
    write_test_image(tmp_path / "in.png", 8, 8)
    assert encode(tiny_model, tmp_path, "in.png", "-o", "a.latent.safetensors").returncode == 0
    assert encode(tiny_model, tmp_path, "in.png", "-o", "b.latent.safetensors").returncode == 0
    result = run_cli(tmp_path, "decode", "--model", tiny_model, "a.latent.safetensors", "b.latent.safetensors",
                     "-o", "out/one.png")
    assert result.returncode == USAGE_ERROR, result.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == []
