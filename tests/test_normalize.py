"""Tests for the upscale image boundary: every input kind to RGB floats and back to a file of the same kind."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from genart_cli.errors import InputError
from genart_cli.imaging.normalize import load_image, save_image


def write_png16(path: Path, values: np.ndarray) -> None:
    """Write (H, W, C) uint16 values as a 16-bit PNG with unfiltered rows, built from the chunk layout."""
    height, width, channels = values.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = values.astype(">u2").reshape(height, -1).tobytes()
    row_length = width * channels * 2
    scanlines = b"".join(b"\x00" + rows[y * row_length:(y + 1) * row_length] for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines))
                     + chunk(b"IEND", b""))


def png_bit_depth_and_colour_type(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:26]
    return head[24], head[25]


def srgb_profile_bytes() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (3, 2), 1)
    image.putpalette([0, 0, 0, 200, 10, 30] + [0] * (256 * 3 - 6))
    image.putpixel((0, 0), 0)
    image.save(tmp_path / "p.png", transparency=0)

    source = load_image(tmp_path / "p.png")

    assert source.mode == "P"
    assert not source.grey
    assert source.bit_depth == 8
    assert source.alpha is not None
    assert source.alpha[0, 0, 0, 0].item() == 0.0
    assert source.alpha[0, 0, 1, 1].item() == 1.0
    assert torch.allclose(source.rgb[0, :, 1, 1], torch.tensor([200, 10, 30]) / 255.0)


def test_palette_without_transparency_has_no_alpha(tmp_path):
    Image.new("P", (3, 2), 0).save(tmp_path / "p.png")
    source = load_image(tmp_path / "p.png")
    assert source.alpha is None
    assert source.rgb.shape == (1, 3, 2, 3)


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grey_round_trip(tmp_path, mode):
    values = np.array([[0, 255, 255], [255, 0, 255]], dtype=np.uint8) if mode == "1" else \
        np.array([[0, 17, 128], [200, 254, 255]], dtype=np.uint8)
    Image.fromarray(values, mode="L").convert(mode).save(tmp_path / "grey.png")

    source = load_image(tmp_path / "grey.png")
    assert source.grey
    assert source.bit_depth == 8
    assert source.alpha is None
    assert source.rgb.shape == (1, 3, 2, 3)
    assert source.rgb.dtype == torch.float32
    assert torch.equal(source.rgb[:, 0], source.rgb[:, 2])
    assert torch.equal(torch.round(source.rgb[0, 0] * 255).to(torch.uint8), torch.from_numpy(values))

    out = save_image(tmp_path / "out.png", source.rgb, source.alpha, source)
    with Image.open(out) as written:
        assert written.mode == "L"
        assert np.array_equal(np.asarray(written), values)


def test_grey_with_alpha_round_trip(tmp_path):
    grey = np.array([[10, 20], [30, 40]], dtype=np.uint8)
    alpha = np.array([[0, 85], [170, 255]], dtype=np.uint8)
    Image.fromarray(np.stack([grey, alpha], axis=2), mode="LA").save(tmp_path / "la.png")

    source = load_image(tmp_path / "la.png")
    assert source.grey
    assert source.alpha is not None
    assert torch.equal(torch.round(source.alpha[0, 0] * 255).to(torch.uint8), torch.from_numpy(alpha))

    out = save_image(tmp_path / "out.png", source.rgb, source.alpha, source)
    with Image.open(out) as written:
        assert written.mode == "LA"
        assert np.array_equal(np.asarray(written)[:, :, 1], alpha)


def test_grey_16bit_low_values_stay_16bit(tmp_path):
    # The maximum is 256, so a loader that guessed the depth from the values would call this 8-bit.
    values = np.array([[0, 1, 255], [256, 2, 100]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")

    source = load_image(tmp_path / "g16.png")
    assert source.bit_depth == 16
    assert source.grey
    assert source.rgb.max().item() < 0.01
    assert torch.equal(torch.round(source.rgb[0, 0] * 65535).to(torch.int64), torch.from_numpy(values.astype(np.int64)))

    out = save_image(tmp_path / "out.png", source.rgb, None, source)
    assert png_bit_depth_and_colour_type(out) == (16, 0)
    with Image.open(out) as written:
        assert written.mode.startswith("I")
        assert np.array_equal(np.asarray(written).astype(np.int64), values.astype(np.int64))


@pytest.mark.parametrize("channels", [2, 3, 4], ids=["grey-alpha", "rgb", "rgba"])
def test_png_16bit_keeps_all_bits(tmp_path, channels):
    # Low bytes differ from high bytes, so 8-bit precision (high byte only) would fail the equality check.
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, size=(3, 5, channels), dtype=np.uint16)
    values[0, 0] = 0x1234
    write_png16(tmp_path / "in.png", values)

    source = load_image(tmp_path / "in.png")
    assert source.bit_depth == 16
    assert source.grey == (channels == 2)
    assert source.rgb.dtype == torch.float32
    planes = [source.rgb[:, :1]] if source.grey else [source.rgb]
    if channels in (2, 4):
        planes.append(source.alpha)
    loaded = torch.cat(planes, dim=1)  # (1, C, H, W)
    assert torch.equal(torch.round(loaded[0] * 65535).to(torch.int64).permute(1, 2, 0),
                       torch.from_numpy(values.astype(np.int64)))

    out = save_image(tmp_path / "out.png", source.rgb, source.alpha, source)
    assert png_bit_depth_and_colour_type(out) == (16, {2: 4, 3: 2, 4: 6}[channels])
    again = load_image(out)
    assert torch.equal(torch.round(again.rgb * 65535), torch.round(source.rgb * 65535))


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)

    source = load_image(tmp_path / "cmyk.jpg")
    assert source.mode == "CMYK"
    assert not source.grey
    red, green, blue = source.rgb[0, :, 4, 4].tolist()
    assert red > 0.9
    assert green < 0.1
    assert blue < 0.1


def test_exif_orientation_applied(tmp_path):
    image = Image.new("RGB", (4, 2), (0, 0, 255))
    image.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    image.save(tmp_path / "rotated.png", exif=exif.tobytes())

    source = load_image(tmp_path / "rotated.png")
    assert source.rgb.shape == (1, 3, 4, 2)
    # Clockwise rotation moves the stored top-left pixel to the top-right corner.
    assert source.rgb[0, 0, 0, 1].item() == 1.0
    assert source.rgb[0, 0, 0, 0].item() == 0.0

    out = save_image(tmp_path / "out.png", source.rgb, None, source)
    with Image.open(out) as written:
        assert written.size == (2, 4)
        assert 0x0112 not in written.getexif()


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_icc_profile_round_trip(tmp_path, suffix):
    profile = srgb_profile_bytes()
    Image.new("RGB", (4, 4), (10, 120, 230)).save(tmp_path / "in.png", icc_profile=profile)

    source = load_image(tmp_path / "in.png")
    assert source.icc_profile == profile

    out = save_image(tmp_path / f"out{suffix}", source.rgb, None, source)
    with Image.open(out) as written:
        assert written.info.get("icc_profile") == profile


def test_alpha_round_trip(tmp_path):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = [[0, 1, 127], [128, 254, 255]]
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "in.png")

    source = load_image(tmp_path / "in.png")
    out = save_image(tmp_path / "out.png", source.rgb, source.alpha, source)
    with Image.open(out) as written:
        assert written.mode == "RGBA"
        assert np.array_equal(np.asarray(written), rgba)

    webp = save_image(tmp_path / "out.webp", source.rgb, source.alpha, source)
    with Image.open(webp) as written:
        assert written.mode == "RGBA"


def test_jpeg_with_alpha_rejected(tmp_path):
    Image.new("RGBA", (2, 2), (1, 2, 3, 100)).save(tmp_path / "in.png")
    source = load_image(tmp_path / "in.png")

    with pytest.raises(InputError, match="--format png or --format webp"):
        save_image(tmp_path / "out.jpg", source.rgb, source.alpha, source)
    assert not (tmp_path / "out.jpg").exists()


def test_format_argument_overrides_suffix(tmp_path):
    Image.new("RGB", (2, 2), (1, 2, 3)).save(tmp_path / "in.png")
    source = load_image(tmp_path / "in.png")

    out = save_image(tmp_path / "out.img", source.rgb, None, source, fmt="jpg", quality=80)
    with Image.open(out) as written:
        assert written.format == "JPEG"


def test_unknown_suffix_rejected(tmp_path):
    Image.new("RGB", (2, 2)).save(tmp_path / "in.png")
    source = load_image(tmp_path / "in.png")
    with pytest.raises(InputError, match=r"out\.bmp.*\.png, \.jpg, \.jpeg or \.webp"):
        save_image(tmp_path / "out.bmp", source.rgb, None, source)


def test_animated_gif_rejected(tmp_path):
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])

    with pytest.raises(InputError, match=r"anim\.gif.*animated") as caught:
        load_image(tmp_path / "anim.gif")
    assert "\n" not in str(caught.value)


def test_truncated_png_rejected(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])

    with pytest.raises(InputError, match=r"cut\.png.*truncated"):
        load_image(tmp_path / "cut.png")


@pytest.mark.parametrize("kind", ["text", "missing", "folder"])
def test_bad_path_rejected(tmp_path, kind):
    path = tmp_path / "notes.txt"
    if kind == "text":
        path.write_text("not an image\n")
    elif kind == "folder":
        path.mkdir()

    with pytest.raises(InputError, match=r"notes\.txt") as caught:
        load_image(path)
    assert "\n" not in str(caught.value)


def test_float_mode_rejected(tmp_path):
    Image.fromarray(np.full((2, 2), 0.5, dtype=np.float32), mode="F").save(tmp_path / "f.tiff")
    with pytest.raises(InputError, match="mode F"):
        load_image(tmp_path / "f.tiff")


def test_failed_save_leaves_no_files(tmp_path, monkeypatch):
    Image.new("RGB", (2, 2)).save(tmp_path / "in.png")
    source = load_image(tmp_path / "in.png")
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def fail_half_way(image, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", fail_half_way)
    with pytest.raises(InputError, match="writing the image failed"):
        save_image(out_dir / "out.png", source.rgb, None, source)
    assert list(out_dir.iterdir()) == []


def test_colour_key_transparency_becomes_alpha(tmp_path):
    image = Image.new("L", (2, 1), 5)
    image.putpixel((1, 0), 9)
    image.save(tmp_path / "key.png", transparency=5)

    source = load_image(tmp_path / "key.png")
    assert source.grey
    assert source.alpha is not None
    assert source.alpha.flatten().tolist() == [0.0, 1.0]


def test_cmyk_invalid_profile_falls_back(tmp_path):
    # A header that claims CMYK but is not a valid profile, so colour management fails.
    invalid_profile = bytes(16) + b"CMYK" + bytes(108)
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", icc_profile=invalid_profile)

    source = load_image(tmp_path / "cmyk.jpg")
    assert source.icc_profile is None
    assert source.rgb[0, 0, 2, 2].item() > 0.9
    assert source.rgb[0, 1, 2, 2].item() < 0.1
