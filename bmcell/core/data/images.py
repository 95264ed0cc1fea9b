"""Decode any supported cell image into an 8-bit RGB picture, or say exactly why not."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bmcell.core.errors import BmcellError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})
MAX_PIXELS = 64_000_000  # a cell crop is far smaller; anything bigger is treated as a decompression bomb
# Pillow's own guard (a warning above MAX_IMAGE_PIXELS, an error above twice that) uses the same number wherever
# bmcell opens an image, and decode_rgb answers both with our message: one limit, stated as MAX_PIXELS.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
MAX_ASPECT = 100  # longer side over shorter: a 4,000,000x1 strip would resize to ~49 GB, a 100:1 one to ~25 MB


class BadImageError(BmcellError):
    """An image file that cannot be used, with the reason in the message."""


def is_image_file(path: Path) -> bool:
    """True when the file name has one of the supported image suffixes."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode (RGBA, LA, P, L, 1, I;16, I, F, CMYK, YCbCr...) to RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        full_scale = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        array = np.clip(array / full_scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _too_many_pixels(name: str, size: str | None) -> BadImageError:
    """The refusal of an image over MAX_PIXELS, with its size when known."""
    return BadImageError(f"{name}: {f'{size} pixels' if size else 'the image'} exceeds the {MAX_PIXELS:,}-pixel "
                         "limit (possible decompression bomb); crop or downscale it first")


def _refuse_size(name: str, width: int, height: int) -> None:
    """Refuse, from the header's size, an image over MAX_PIXELS or longer than MAX_ASPECT times its shorter side."""
    if width * height > MAX_PIXELS:
        raise _too_many_pixels(name, f"{width}x{height}")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise BadImageError(f"{name}: {width}x{height} pixels is over the {MAX_ASPECT}:1 aspect-ratio limit (a cell "
                            "picture is near square; resizing this one would take far too much memory); crop it first")


def decode_rgb(data: bytes, name: str = "<bytes>") -> Image.Image:
    """Decode image bytes fully into RGB, raising BadImageError with the reason; an image of more than MAX_PIXELS
    pixels or with an aspect ratio over MAX_ASPECT:1 is refused from its header, before it is decoded."""
    if not data:
        raise BadImageError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_PIXELS in Image.open; our check below gives the message, with the size
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _refuse_size(name, *image.size)
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError(f"{name}: not an image Pillow can read (jpg, png, tif, bmp, webp expected)") from None
    except Image.DecompressionBombError as error:  # Pillow refuses twice MAX_PIXELS in Image.open, before our check
        count = re.search(r"\((\d+) pixels\)", str(error))
        raise _too_many_pixels(name, f"{int(count[1]):,}" if count else None) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(f"{name}: cannot decode ({error}); the file may be truncated or corrupt") from None


def load_rgb(path: Path) -> Image.Image:
    """Read and fully decode an image file into RGB, raising BadImageError with the reason."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise BadImageError(f"{path}: unreadable ({error.strerror or error})") from None
    return decode_rgb(data, str(path))
