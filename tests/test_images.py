"""Every image mode decodes to RGB; every kind of bad file gets a clear reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bmcell.core.data.images import BadImageError, decode_rgb, load_rgb
from tests.conftest import jpeg_bytes


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


GRADIENT = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))


@pytest.mark.parametrize(
    ("image", "fmt"),
    [
        (Image.fromarray(np.dstack([GRADIENT] * 3)), "PNG"),
        (Image.fromarray(np.dstack([GRADIENT] * 3 + [np.full_like(GRADIENT, 128)])), "PNG"),
        (Image.fromarray(GRADIENT), "PNG"),
        (Image.fromarray(GRADIENT).convert("P"), "PNG"),
        (Image.fromarray(GRADIENT).convert("LA"), "PNG"),
        (Image.fromarray(GRADIENT > 100).convert("1"), "BMP"),
        (Image.fromarray(GRADIENT.astype(np.uint16) * 257), "TIFF"),
        (Image.fromarray(GRADIENT.astype(np.int32) * 1000), "TIFF"),
        (Image.fromarray(np.dstack([GRADIENT] * 3)).convert("CMYK"), "JPEG"),
        (Image.fromarray(np.dstack([GRADIENT] * 3)).convert("CMYK"), "TIFF"),
        (Image.fromarray(np.dstack([GRADIENT] * 3)), "BMP"),
    ],
    ids=["rgb-png", "rgba-png", "l-png", "p-png", "la-png", "1-bmp", "i16-tiff", "i32-tiff", "cmyk-jpeg",
         "cmyk-tiff", "rgb-bmp"],
)
def test_every_mode_becomes_rgb(image, fmt):
    decoded = decode_rgb(_encode(image, fmt), f"x.{fmt.lower()}")
    assert decoded.mode == "RGB" and decoded.size == (64, 64)
    array = np.asarray(decoded)
    assert array[:, -1].mean() > array[:, 0].mean()  # the gradient survived the conversion


def test_sixteen_bit_scales_full_range():
    image = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    assert np.asarray(decode_rgb(_encode(image, "TIFF"))).tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_alpha_is_composited_on_white():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(decode_rgb(_encode(image, "PNG"))).min() == 255


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (jpeg_bytes()[:300], "truncated"),
        (b"this is a text file, not a picture\n", "not an image"),
        (_encode(Image.new("1", (9000, 9000)), "PNG"), "decompression bomb"),
    ],
    ids=["zero-bytes", "truncated-jpeg", "text-as-png", "decompression-bomb"],
)
def test_bad_bytes_are_named(data, reason):
    with pytest.raises(BadImageError, match=reason):
        decode_rgb(data, "cell.png")


def test_unreadable_path_is_named(tmp_path):
    with pytest.raises(BadImageError, match="unreadable"):
        load_rgb(tmp_path)  # a folder cannot be read as a file
    with pytest.raises(BadImageError, match="unreadable"):
        load_rgb(tmp_path / "missing.jpg")


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height 1-bit pixels (its header is all Pillow reads before its size checks)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [9_000, 12_000, 20_000], ids=["81M", "144M", "400M"])
def test_decompression_bomb_limit_is_ours_at_every_size(side):
    """One limit, MAX_PIXELS, whatever Pillow's own guard would have said (a warning above its 89,478,485 pixels,
    an error above 178,956,970): the message states our number and the image's size."""
    from bmcell.core.data.images import MAX_PIXELS

    with pytest.raises(BadImageError) as refused:
        decode_rgb(_png_header(side, side), "huge.png")
    message = str(refused.value)
    assert f"{MAX_PIXELS:,}-pixel limit" in message and "decompression bomb" in message, message
    assert f"{side}x{side}" in message or f"{side * side:,}" in message, message
    assert "89478485" not in message and "178956970" not in message and "128,000,000" not in message


@pytest.mark.parametrize(("width", "height"), [(4_000_000, 1), (1, 4_000_000), (10_001, 100)],
                         ids=["strip", "column", "just-over"])
def test_an_extreme_aspect_ratio_is_refused_from_the_header(width, height):
    """Under the pixel limit, a 4,000,000x1 strip would still resize to ~49 GB at the model's size: anything longer
    than MAX_ASPECT times its shorter side is refused, named, before it is decoded."""
    with pytest.raises(BadImageError, match=f"strip.png: {width}x{height} pixels is over the 100:1 aspect-ratio limit"):
        decode_rgb(_png_header(width, height), "strip.png")
    assert decode_rgb(_encode(Image.new("RGB", (10_000, 100)), "PNG")).size == (10_000, 100)  # 100:1 itself is fine


def test_a_degenerate_image_in_a_training_folder_is_a_named_bad_file(synthetic_copy, tmp_path):
    """The start check names a 4,000,000x1 PNG as a bad file; if one appears after it (replaced on disk), the cache
    build stands in another image of its class, as for any file gone bad, and keeps no .partial file."""
    from bmcell.core.data.cache import decoded_images
    from bmcell.core.data.folder import ImageRecord, check_images

    Image.new("1", (4_000_000, 1)).save(synthetic_copy / "ig" / "strip.png")
    labelled = {f"{label}/{path.name}": label for label in ("ig", "basophil")
                for path in sorted((synthetic_copy / label).glob("*.jpg"))[:2]} | {"ig/strip.png": "ig"}
    good, bad = check_images(synthetic_copy, labelled)
    assert [b.path for b in bad] == ["ig/strip.png"] and "100:1 aspect-ratio limit" in bad[0].reason
    assert len(good) == len(labelled) - 1

    cache = tmp_path / "cache"
    records = [*good, ImageRecord("ig/strip.png", "ig", good[0].sha256)]  # gone bad after the start check
    array = decoded_images(synthetic_copy, records, 32, cache, workers=1)
    assert any((array[-1] == array[i]).all() for i, record in enumerate(good) if record.label == "ig")
    assert [p.name for p in cache.iterdir()] == [p.name for p in cache.glob("decoded-*.npy")]


def test_a_failed_cache_build_leaves_no_partial_file(synthetic_data, tmp_path):
    """Every image of a class unreadable when the cache is built: the build fails, and no half-written file stays."""
    from bmcell.core.data.cache import decoded_images
    from bmcell.core.data.folder import ImageRecord

    records = [ImageRecord("gone/missing.jpg", "gone", "0" * 64),
               *(ImageRecord(p.relative_to(synthetic_data).as_posix(), "ig", "1" * 64)
                 for p in sorted((synthetic_data / "ig").glob("*.jpg"))[:2])]
    with pytest.raises(BadImageError, match="every image of class 'gone'"):
        decoded_images(synthetic_data, records, 32, tmp_path / "cache", workers=1)
    assert not list((tmp_path / "cache").iterdir())
