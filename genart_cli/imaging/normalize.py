"""Image files in and out for `genart upscale`: any input file to RGB floats and back.

`load_image` decodes a file into a `SourceImage`: RGB (1, 3, H, W) and alpha (1, 1, H, W), float32 in
[0, 1], plus what the file was (grey or colour, 8 or 16 bits, ICC profile, format). `save_image` writes
the upscaled result back in the same character where the output format can hold it.

16-bit PNGs: Pillow (checked with 13.0) opens 16-bit grey PNGs as mode I;16 with all 16 bits. It opens
48-bit RGB, 64-bit RGBA and 32-bit grey+alpha PNGs as 8-bit RGB or RGBA and keeps only the high byte of
each sample. For those, `load_image` reads the bit depth from the PNG header and decodes the file a
second time with the low byte unpacked, so all 16 bits reach the tensor. Pillow cannot write any
16-bit PNG except grey, so `save_image` writes 16-bit PNGs with a small numpy + zlib encoder here.
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import InputError, NumericalError
from .io import check_image_path, decode_errors
from ..runtime.atomic import atomic_path

logger = logging.getLogger(__name__)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types (PNG specification, IHDR): 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA.
_PNG_COLOUR_TYPE_BY_CHANNELS = {1: 0, 2: 4, 3: 2, 4: 6}
_GREY_16_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
# Modes that Pillow converts to RGB with its own formulas (LAB and HSV included).
_CONVERTIBLE_COLOUR_MODES = ("RGBX", "YCbCr", "LAB", "HSV")

_FORMAT_BY_SUFFIX = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
_FORMAT_BY_NAME = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
# Maximum width or height in pixels: JPEG stores sizes as 16-bit numbers, libwebp allows 16383.
_MAX_SIDE = {"JPEG": 65535, "WEBP": 16383}
# Bytes of zlib output per IDAT chunk in the 16-bit PNG encoder.
_IDAT_CHUNK_BYTES = 1 << 20


@dataclass
class SourceImage:
    """A decoded input image and the properties that `save_image` keeps in the output.

    `icc_profile` always matches the decoded samples: a GRAY profile for grey inputs and an RGB
    profile otherwise. A CMYK profile is used to convert the pixels to sRGB and is replaced by an
    sRGB profile. A profile of any other colour space is dropped.
    """

    rgb: torch.Tensor  # (1, 3, H, W) float32 in [0, 1], with the grey repeated in all 3 channels for grey inputs
    alpha: torch.Tensor | None  # (1, 1, H, W) float32 in [0, 1] with 1 = opaque, or None without alpha
    grey: bool  # the input had no colour (Pillow modes 1, L, LA, I;16*, and I from PNG or PGM)
    bit_depth: int  # bits per sample in the file, 8 or 16
    icc_profile: bytes | None
    format: str  # Pillow's format name, e.g. "PNG", "JPEG", "WEBP"
    mode: str  # Pillow's mode of the file as opened, e.g. "P", "CMYK", "I;16"
    path: Path


def load_image(path: str | Path) -> SourceImage:
    """Decode an image file into RGB and alpha floats in [0, 1], with EXIF orientation applied.

    Palette images become RGB, or RGBA when they have transparency. CMYK becomes RGB through the
    embedded ICC profile when there is one, and otherwise through Pillow's formula. YCbCr, LAB, HSV
    and RGBX become RGB. Float images (mode F) and 32-bit integer images (mode I, except from 16-bit
    PNG and PGM files) raise InputError, because their value range is not known.

    Raises InputError with a one-line message for a missing path, a folder, an unreadable, truncated
    or animated file, a decompression bomb or an unsupported mode.
    """
    path = check_image_path(path)
    with decode_errors(path):
        return _decode_file(path)


def _decode_file(path: Path) -> SourceImage:
    with Image.open(path) as image:
        if getattr(image, "n_frames", 1) > 1:
            raise InputError(f"{path}: animated images are not supported; extract one frame first, "
                             f"e.g. with `ffmpeg -i {path} -frames:v 1 frame.png`")
        source_format = image.format or "unknown"
        source_mode = image.mode
        icc_profile = image.info.get("icc_profile") or None
        png_header = _read_png_header(path) if source_format == "PNG" else None

        # Decode now so that truncated data fails inside load_image's error handling.
        image.load()
        upright = ImageOps.exif_transpose(image)
        samples, bit_depth, icc_profile = _decode_samples(upright, path, source_format, png_header, icc_profile)

    grey = samples.shape[2] in (1, 2)
    has_alpha = samples.shape[2] in (2, 4)
    icc_profile = _matching_icc_profile(icc_profile, grey, path)

    planes = torch.from_numpy(np.ascontiguousarray(samples.transpose(2, 0, 1)))[None]  # (1, C, H, W)
    colour = planes[:, :1].expand(-1, 3, -1, -1) if grey else planes[:, :3]
    alpha = planes[:, -1:].clone() if has_alpha else None
    return SourceImage(rgb=colour.contiguous(), alpha=alpha, grey=grey, bit_depth=bit_depth,
                       icc_profile=icc_profile, format=source_format, mode=source_mode, path=path)


def _decode_samples(image: Image.Image, path: Path, source_format: str, png_header: tuple[int, int] | None,
                    icc_profile: bytes | None) -> tuple[np.ndarray, int, bytes | None]:
    """Return (H, W, C) float32 samples in [0, 1] with C = 1, 2, 3 or 4, the bit depth and the ICC profile.

    C = 1 or 2 means grey (+ alpha), C = 3 or 4 means RGB (+ alpha).
    """
    mode = image.mode
    png_bit_depth, png_colour_type = png_header or (None, None)

    if png_bit_depth == 16 and png_colour_type in (2, 4, 6):
        return _decode_wide_png16(image, path, png_colour_type), 16, icc_profile

    if mode in ("1", "L", "La", "LA"):
        target = "LA" if mode in ("La", "LA") else "L"
        raw = _as_hwc(np.asarray(image.convert(target)))
        return _with_key_alpha(raw, image.info.get("transparency"), 255) / 255.0, 8, icc_profile

    if mode in _GREY_16_MODES or (mode == "I" and (png_bit_depth == 16 or source_format == "PPM")):
        # Pillow opens 16-bit PGM files as mode I, scaled to 0..65535.
        raw = _as_hwc(np.asarray(image).astype(np.int64))
        return _with_key_alpha(raw, image.info.get("transparency"), 65535) / 65535.0, 16, icc_profile

    if mode in ("I", "F"):
        kind = "32-bit integer" if mode == "I" else "32-bit float"
        raise InputError(f"{path}: {kind} images (mode {mode}) are not supported because their value range "
                         f"is unknown; convert the image to an 8- or 16-bit PNG")

    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("PA", "RGBa"):
        image = image.convert("RGBA")
    elif mode == "CMYK":
        image, icc_profile = _cmyk_to_rgb(image, icc_profile, path)
    elif mode in _CONVERTIBLE_COLOUR_MODES:
        image = image.convert("RGB")
    elif mode not in ("RGB", "RGBA"):
        raise InputError(f"{path}: image mode {mode} is not supported; convert the image to RGB or RGBA")

    key = image.info.get("transparency") if image.mode == "RGB" else None
    return _with_key_alpha(_as_hwc(np.asarray(image)), key, 255) / 255.0, 8, icc_profile


def _as_hwc(array: np.ndarray) -> np.ndarray:
    return array[:, :, None] if array.ndim == 2 else array


def _with_key_alpha(raw: np.ndarray, key: object, full_scale: int) -> np.ndarray:
    """Return the (H, W, C) samples as float32, with an alpha channel added for a PNG tRNS colour key.

    Pixels equal to the key become transparent. The key is an int for grey and an (r, g, b) tuple of
    ints for RGB, in the file's sample range (0..full_scale). Any other key, or raw samples that already
    have alpha, leave the samples as they are.
    """
    samples = raw.astype(np.float32)
    channels = raw.shape[2]
    if channels == 1 and isinstance(key, int):
        opaque = raw[:, :, 0] != key
    elif channels == 3 and isinstance(key, tuple) and len(key) == 3:
        opaque = np.any(raw != np.asarray(key), axis=2)
    else:
        return samples
    alpha = np.where(opaque, full_scale, 0.0).astype(np.float32)[:, :, None]
    return np.concatenate([samples, alpha], axis=2)


def _read_png_header(path: Path) -> tuple[int, int] | None:
    """Return (bit depth, colour type) from a PNG's IHDR chunk, or None if the file does not start with one."""
    with open(path, "rb") as file:
        head = file.read(33)
    # Layout: 8-byte signature, chunk length (4), b"IHDR", width (4), height (4), bit depth (1), colour type (1).
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _decode_wide_png16(image: Image.Image, path: Path, colour_type: int) -> np.ndarray:
    """Return (H, W, C) float32 samples in [0, 1] for a 16-bit RGB, RGBA or grey+alpha PNG.

    `image` is the upright image as Pillow opened it: RGB or RGBA holding the high byte of each sample
    (grey+alpha appears as RGBA with the grey repeated). The file is decoded again with a raw mode that
    unpacks the other bytes, and both are combined into the 16-bit values.
    """
    high = np.asarray(image).astype(np.int64)
    if colour_type == 4:
        # The "RGBA" raw mode reads the 4 bytes of a 16-bit grey+alpha pixel unchanged:
        # grey high, grey low, alpha high, alpha low.
        pixel_bytes = _redecode_png(path, expected_rawmode="LA;16B", rawmode="RGBA")
        values = None if pixel_bytes is None else pixel_bytes[:, :, 0::2] * 256 + pixel_bytes[:, :, 1::2]
        high = high[:, :, [0, 3]]
    else:
        # Both raw modes have the same bits per pixel, so Pillow undoes the PNG filters identically.
        # The ;16L variant keeps the byte that the ;16B variant drops.
        big_endian = "RGB;16B" if colour_type == 2 else "RGBA;16B"
        low = _redecode_png(path, expected_rawmode=big_endian, rawmode=big_endian.replace("16B", "16L"))
        values = None if low is None else high * 256 + low

    if values is None:
        # NOTE: only reached if a Pillow release lays out PNG tiles differently from Pillow 13.
        # The result still reports bit_depth 16, but each sample has only 8 bits of precision.
        logger.warning("%s: could not decode the low byte of the 16-bit samples; using 8 bits per sample", path)
        values = high * 257

    key = image.info.get("transparency") if colour_type == 2 else None
    return _with_key_alpha(values, key, 65535) / 65535.0


def _redecode_png(path: Path, expected_rawmode: str, rawmode: str) -> np.ndarray | None:
    """Decode a PNG again with another Pillow raw mode and return its upright (H, W, C) int64 array.

    Returns None when the file is not laid out as one zlib tile with `expected_rawmode`.
    """
    with Image.open(path) as image:
        tiles = image.tile
        if len(tiles) != 1 or tiles[0][0] != "zip" or tiles[0][3] != expected_rawmode:
            return None
        tile = tiles[0]
        image.tile = [tile._replace(args=rawmode) if hasattr(tile, "_replace") else (*tile[:3], rawmode)]
        image.load()
        return np.asarray(ImageOps.exif_transpose(image)).astype(np.int64)


def _cmyk_to_rgb(image: Image.Image, icc_profile: bytes | None, path: Path) -> tuple[Image.Image, bytes | None]:
    """Convert CMYK to RGB through its ICC profile to sRGB when it has one, else with Pillow's formula.

    Returns the RGB image and the profile that describes it: sRGB after a managed conversion, and
    None after Pillow's formula, which assumes no particular colour space.
    """
    if icc_profile is None or _icc_colour_space(icc_profile) != "CMYK":
        return image.convert("RGB"), None
    try:
        # Pillow builds without Little CMS have no ImageCms module.
        from PIL import ImageCms
    except ImportError as err:
        logger.warning("%s: CMYK colour management is unavailable (%s); converting without the ICC profile",
                       path, err)
        return image.convert("RGB"), None

    # NOTE: the tests cover only the fallback below, because they have no valid CMYK profile to embed.
    try:
        srgb = ImageCms.createProfile("sRGB")
        cmyk = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        converted = ImageCms.profileToProfile(image, cmyk, srgb, outputMode="RGB")
        return converted, ImageCms.ImageCmsProfile(srgb).tobytes()
    except (ImageCms.PyCMSError, OSError, ValueError) as err:
        logger.warning("%s: CMYK colour management failed (%s); converting without the ICC profile", path, err)
        return image.convert("RGB"), None


def _icc_colour_space(icc_profile: bytes) -> str:
    """Return the data colour space of an ICC profile, e.g. "RGB", "GRAY", "CMYK" (header bytes 16-19)."""
    return icc_profile[16:20].decode("ascii", errors="replace").strip()


def _matching_icc_profile(icc_profile: bytes | None, grey: bool, path: Path) -> bytes | None:
    if icc_profile is None:
        return None
    expected = "GRAY" if grey else "RGB"
    if _icc_colour_space(icc_profile) != expected:
        logger.warning("%s: dropping the ICC profile because it is for %s data, not %s",
                       path, _icc_colour_space(icc_profile), expected)
        return None
    return icc_profile


def save_image(path: str | Path, rgb: torch.Tensor, alpha: torch.Tensor | None, source: SourceImage,
               fmt: str | None = None, quality: int = 95) -> Path:
    """Write an upscaled image atomically in the source's mode, bit depth and ICC profile, and return the path.

    `rgb` is (1, 3, H, W) and `alpha` (1, 1, H, W) or None, float in [0, 1]; values are clamped, then
    rounded to the output depth. `fmt` is "png", "jpg" or "webp"; None takes it from the path's suffix.
    `quality` (1-100) applies to JPEG and WebP.

    What the output keeps:
    - Grey sources give grey output (the mean of the three channels): L or LA, or 16-bit grey for
      16-bit PNG sources. WebP has no grey mode, so grey goes to WebP as RGB(A) without its ICC profile.
    - 16-bit sources give 16 bits per sample only in PNG. JPEG and WebP output is 8-bit.
    - Palette and 1-bit sources give 8-bit RGB(A) and grey, because upscaling creates new colours.
    - Alpha is kept in PNG and WebP. JPEG cannot store alpha, so alpha with JPEG raises InputError.
    - The ICC profile is written to PNG, JPEG and WebP. EXIF data is not written, because the
      orientation is already applied to the pixels.

    Raises InputError for an unknown format or suffix, JPEG with alpha, an image too large for the
    format, or an unwritable path; NumericalError for NaN or Inf values.
    """
    path = Path(path)
    out_format = _output_format(path, fmt)
    samples = _output_samples(rgb, alpha, source.grey, path)  # (H, W, C) float32 in [0, 1]
    height, width, channels = samples.shape

    if out_format == "JPEG" and alpha is not None:
        raise InputError(f"{path}: JPEG cannot store the alpha channel of {source.path.name}; "
                         f"use --format png or --format webp")
    max_side = _MAX_SIDE.get(out_format)
    if max_side is not None and max(height, width) > max_side:
        raise InputError(f"{path}: {width}x{height} is too large for {out_format} "
                         f"(at most {max_side} pixels per side); save as png instead")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1-100, got {quality}")

    try:
        with atomic_path(path) as tmp:
            if out_format == "PNG" and source.bit_depth == 16:
                values = np.round(samples * 65535.0).astype(np.uint16)
                _write_png16(tmp, values, source.icc_profile)
            else:
                if source.bit_depth == 16:
                    logger.info("%s: %s stores 8 bits per sample; the 16-bit source is reduced to 8 bits",
                                path, out_format)
                _write_8bit(tmp, samples, out_format, source.icc_profile, quality)
    except OSError as err:
        raise InputError(f"{path}: writing the image failed ({err}); check that the folder is writable "
                         f"and the disk has space") from None
    return path


def _output_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        out_format = _FORMAT_BY_NAME.get(fmt.lower())
        if out_format is None:
            raise InputError(f"{path}: unknown output format {fmt!r}; use png, jpg or webp")
        return out_format
    out_format = _FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if out_format is None:
        raise InputError(f"{path}: unknown output suffix {path.suffix!r}; "
                         f"use .png, .jpg, .jpeg or .webp, or pass --format")
    return out_format


def _output_samples(rgb: torch.Tensor, alpha: torch.Tensor | None, grey: bool, path: Path) -> np.ndarray:
    """Return (H, W, C) float32 in [0, 1]: C = 1 or 2 for grey (+ alpha), 3 or 4 for RGB (+ alpha)."""
    if rgb.ndim != 4 or rgb.shape[:2] != (1, 3):
        raise ValueError(f"rgb must be (1, 3, H, W), got {tuple(rgb.shape)}")
    if alpha is not None and tuple(alpha.shape) != (1, 1, *rgb.shape[2:]):
        raise ValueError(f"alpha must be (1, 1, {rgb.shape[2]}, {rgb.shape[3]}), got {tuple(alpha.shape)}")

    planes = rgb.detach().float().cpu()[0]  # (3, H, W)
    if grey:
        planes = planes.mean(dim=0, keepdim=True)
    if alpha is not None:
        planes = torch.cat([planes, alpha.detach().float().cpu()[0]], dim=0)
    if not torch.isfinite(planes).all():
        raise NumericalError(f"{path}: the upscaled image contains NaN or Inf; nothing was written")
    return planes.clamp(0.0, 1.0).permute(1, 2, 0).numpy()


def _write_8bit(target: Path, samples: np.ndarray, out_format: str, icc_profile: bytes | None,
                quality: int) -> None:
    values = np.round(samples * 255.0).astype(np.uint8)
    image = Image.fromarray(values[:, :, 0] if values.shape[2] == 1 else values,
                            mode={1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[values.shape[2]])
    if out_format == "WEBP" and image.mode in ("L", "LA"):
        image = image.convert("RGBA" if image.mode == "LA" else "RGB")
        icc_profile = None  # a GRAY profile does not describe RGB data

    options: dict[str, object] = {}
    if icc_profile is not None:
        options["icc_profile"] = icc_profile
    if out_format in ("JPEG", "WEBP"):
        options["quality"] = quality
    image.save(target, format=out_format, **options)


def _write_png16(target: Path, values: np.ndarray, icc_profile: bytes | None) -> None:
    """Write (H, W, C) uint16 values as a 16-bit PNG: C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA.

    Pillow 13 can write only 16-bit grey PNGs, so this builds the chunks itself. Each row uses
    PNG filter type 1 (Sub): every byte minus the byte of the same sample one pixel to the left,
    modulo 256, which shrinks smooth images several times under zlib.
    """
    height, width, channels = values.shape
    row_bytes = values.astype(">u2").reshape(height, width * channels).view(np.uint8)  # (H, W * C * 2)
    pixel_bytes = 2 * channels
    filtered = row_bytes.copy()
    filtered[:, pixel_bytes:] -= row_bytes[:, :-pixel_bytes]  # uint8 arithmetic wraps modulo 256
    scanlines = np.concatenate([np.ones((height, 1), dtype=np.uint8), filtered], axis=1)
    compressed = zlib.compress(scanlines.tobytes(), 6)

    header = struct.pack(">IIBBBBB", width, height, 16, _PNG_COLOUR_TYPE_BY_CHANNELS[channels], 0, 0, 0)
    with open(target, "wb") as file:
        file.write(_PNG_SIGNATURE)
        file.write(_png_chunk(b"IHDR", header))
        if icc_profile is not None:
            # iCCP: profile name, NUL, compression method 0 (zlib), compressed profile.
            file.write(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile)))
        for start in range(0, max(len(compressed), 1), _IDAT_CHUNK_BYTES):
            file.write(_png_chunk(b"IDAT", compressed[start:start + _IDAT_CHUNK_BYTES]))
        file.write(_png_chunk(b"IEND", b""))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    # Length, type, data, then CRC-32 over type and data.
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
