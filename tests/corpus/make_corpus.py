"""Generate the malformed-input corpus in ``tests/corpus/malformed/`` and its ``manifest.csv``.

Run from anywhere: ``python tests/corpus/make_corpus.py``. The output is deterministic (fixed
seeds, no timestamps), small (every file < 100 KB) and committed, so the command line and app
tests can iterate over ``tests/corpus/manifest.csv`` without running this script.

The manifest is the contract: columns ``file`` (name under ``malformed/``), ``expect`` (``ok``: a
valid but awkward image that must load; ``error``: must be refused with one clear sentence),
``message_contains`` (a lower-case word the error message must contain; empty for ``ok``) and
``note`` (what the file is).
"""
from __future__ import annotations

import csv
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
OUT = HERE / "malformed"
MANIFEST = HERE / "manifest.csv"

rng = np.random.default_rng(20180618)  # CVPR 2018 — any fixed seed


# ----------------------------------------------------------------------------- helpers
def png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type+data (or the given, wrong, CRC)."""
    if crc is None:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes | None,
            *, ihdr_crc: int | None = None, idat: bytes | None = None) -> bytes:
    """A PNG written byte by byte (Pillow cannot write 16-bit RGB nor lie about its size).

    ``rows`` are the unfiltered scanlines without the filter byte; ``idat`` overrides the
    compressed data (e.g. garbage or a partial stream).
    """
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    if idat is None:
        stride = len(rows) // height
        filtered = b"".join(b"\x00" + rows[i * stride:(i + 1) * stride] for i in range(height))
        idat = zlib.compress(filtered, 9)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr, ihdr_crc) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def photo(width: int = 64, height: int = 48) -> Image.Image:
    """A smooth colourful test picture (compresses well, decodes to something non-trivial)."""
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                    (x + y) * 255 // max(width + height - 2, 1)], axis=-1).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def noisy_photo(width: int = 64, height: int = 48) -> Image.Image:
    arr = (np.asarray(photo(width, height), dtype=np.int16) + rng.integers(-20, 21, (height, width, 3)))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def jpeg_segments(data: bytes) -> dict[bytes, int]:
    """Offsets of the first occurrence of each JPEG marker before the scan data."""
    offsets, i = {}, 2
    while i < len(data) - 4 and data[i] == 0xFF:
        marker = data[i:i + 2]
        offsets.setdefault(marker, i)
        if marker == b"\xff\xda":
            break
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return offsets


# ----------------------------------------------------------------------------- the cases
CASES: list[tuple[str, str, str, str, bytes]] = []  # (file, expect, message_contains, note, data)


def case(file: str, expect: str, contains: str, note: str, data: bytes) -> None:
    assert expect in ("ok", "error") and (expect == "ok") == (contains == "")
    assert len(data) < 100_000, file
    CASES.append((file, expect, contains, note, data))


def build() -> None:
    base_png = encode(noisy_photo(), "PNG")
    base_jpeg = encode(noisy_photo(), "JPEG", quality=90)
    base_gif = encode(noisy_photo().convert("P", palette=Image.Palette.ADAPTIVE), "GIF")
    base_webp = encode(noisy_photo(), "WEBP", quality=80)
    base_tiff = encode(noisy_photo(), "TIFF")
    base_bmp = encode(noisy_photo(), "BMP")

    # --- not images at all -------------------------------------------------------------
    case("zero_bytes.png", "error", "empty", "empty file with an image extension", b"")
    case("text_named.png", "error", "text", "plain text file named .png",
         b"This is not a picture, just a note somebody renamed.\n")
    case("json_named.jpg", "error", "text", "JSON document named .jpg",
         b'{"label": 281, "name": "tabby"}\n')
    case("script_named.gif", "error", "text", "Python source named .gif",
         b"import os\nprint(os.getcwd())\n")
    case("random_bytes.jpg", "error", "supported format", "4 KB of random bytes named .jpg",
         rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    case("drawing.svg", "error", "svg", "SVG vector drawing",
         b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
         b'width="64" height="64"><rect width="64" height="64" fill="red"/></svg>\n')
    case("svg_named.png", "error", "svg", "SVG drawing (no XML prolog) named .png",
         b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><circle r="4"/></svg>')
    case("page.html", "error", "html", "HTML web page",
         b"<!DOCTYPE html>\n<html><head><title>cat</title></head><body><img src='cat.jpg'></body></html>\n")
    case("html_named.jpg", "error", "html", "HTML page saved as .jpg (a typical 'Save image as' mistake)",
         b"\xef\xbb\xbf<html>\n<body>Access denied</body></html>\n")
    case("document.pdf", "error", "pdf", "one-page PDF document",
         b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
         b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
    case("archive_named.png", "error", "zip", "ZIP archive named .png",
         b"PK\x03\x04" + bytes(26) + b"cat.png" + bytes(40))
    case("heic_photo.heic", "error", "heic", "HEIC container header (iPhone photo format)",
         struct.pack(">I", 24) + b"ftypheic" + bytes(4) + b"mif1heic" + bytes(64))
    case("photoshop.psd", "error", "photoshop", "Photoshop document header",
         b"8BPS\x00\x01" + bytes(6) + struct.pack(">HIIHH", 3, 64, 64, 8, 3) + bytes(64))
    case("icon.ico", "error", "icon", "valid Windows icon (ICO is not a photo format)",
         encode(photo(32, 32), "ICO", sizes=[(32, 32)]))

    # --- truncated / corrupt -----------------------------------------------------------
    case("truncated.jpg", "error", "incomplete", "JPEG cut at 60% of its length",
         base_jpeg[: int(len(base_jpeg) * 0.6)])
    case("truncated.png", "error", "incomplete", "PNG cut in the middle of its pixel data",
         base_png[: int(len(base_png) * 0.6)])
    case("truncated.gif", "error", "incomplete", "GIF cut at 60% of its length",
         base_gif[: int(len(base_gif) * 0.6)])
    case("truncated.webp", "error", "damaged", "WebP cut at 60% of its length",
         base_webp[: int(len(base_webp) * 0.6)])
    case("truncated.tif", "error", "incomplete", "TIFF cut in the middle of its strips",
         base_tiff[: int(len(base_tiff) * 0.6)])
    case("truncated.bmp", "error", "incomplete", "BMP cut at 60% of its length",
         base_bmp[: int(len(base_bmp) * 0.6)])
    case("truncated_header.png", "error", "incomplete",
         "PNG signature and half an IHDR chunk (cut inside the header)", base_png[:20])
    case("truncated_header.jpg", "error", "incomplete", "JPEG cut after its first 100 bytes", base_jpeg[:100])
    case("jpeg_soi_only.jpg", "error", "damaged", "just the JPEG start-of-image marker",
         b"\xff\xd8\xff")
    case("png_signature_only.png", "error", "damaged", "just the 8-byte PNG signature",
         base_png[:8])

    jpeg = bytearray(base_jpeg)
    dht = jpeg_segments(base_jpeg)[b"\xff\xc4"]
    # Huffman table definition: make every code-length count 0xFF so the table is impossible.
    jpeg[dht + 5: dht + 21] = b"\xff" * 16
    case("corrupt_huffman.jpg", "error", "damaged", "JPEG whose Huffman table is impossible", bytes(jpeg))

    arr = np.asarray(noisy_photo(32, 32)).tobytes()
    case("bad_crc.png", "error", "damaged", "PNG whose IHDR checksum (CRC) is wrong",
         raw_png(32, 32, 8, 2, arr, ihdr_crc=0x12345678))
    case("bad_zlib.png", "error", "damaged", "PNG whose compressed pixel data is garbage",
         raw_png(32, 32, 8, 2, None, idat=rng.integers(0, 256, 600, dtype=np.uint8).tobytes()))
    case("bad_color_type.png", "error", "damaged", "PNG with an undefined colour type (7)",
         raw_png(32, 32, 8, 7, arr[: 32 * 32]))
    case("webp_bad_chunk.webp", "error", "damaged", "RIFF/WEBP header followed by garbage",
         b"RIFF" + struct.pack("<I", 200) + b"WEBPVP8 " + struct.pack("<I", 188)
         + rng.integers(0, 256, 188, dtype=np.uint8).tobytes())
    tiff = bytearray(base_tiff)
    # Compression tag (259) set to an undefined scheme.
    ifd = struct.unpack("<I", tiff[4:8])[0]
    for k in range(struct.unpack("<H", tiff[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * k
        if struct.unpack("<H", tiff[entry:entry + 2])[0] == 259:
            tiff[entry + 8:entry + 10] = struct.pack("<H", 60000)
    case("tiff_bad_compression.tif", "error", "damaged", "TIFF declaring an undefined compression scheme",
         bytes(tiff))
    gif = bytearray(base_gif)
    image_descriptor = gif.index(b"\x2c", 13 + 3 * 256)  # after the global colour table
    gif[image_descriptor + 10] = 0x0F  # LZW minimum code size 15: impossible
    case("gif_bad_lzw.gif", "error", "damaged", "GIF whose LZW code size is impossible", bytes(gif))

    # --- sizes: too small, too large, absurd headers -------------------------------------
    case("one_by_one.png", "error", "small", "valid 1x1 PNG (too small to classify)",
         encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"))
    case("five_by_five.jpg", "error", "small", "valid 5x5 JPEG (too small to classify)",
         encode(photo(5, 5), "JPEG"))
    case("zero_width.gif", "error", "damaged", "GIF whose screen and image are 0 pixels wide",
         b"GIF89a" + struct.pack("<HHBBB", 0, 16, 0, 0, 0) + b"\x2c" + struct.pack("<HHHHB", 0, 0, 0, 16, 0)
         + b"\x02\x02\x44\x01\x00\x3b")
    case("too_elongated.png", "error", "elongated", "valid 8x2000 PNG strip (aspect ratio 250:1)",
         encode(photo(8, 2000), "PNG"))
    # Decompression bomb: a valid IHDR claiming 20000 x 20000 RGB (1.2 GB decoded) and a few
    # compressed rows only; it must be refused from the header, before any decoding.
    bomb_rows = zlib.compress(bytes(8 * (1 + 3 * 20000)), 9)
    case("bomb_20000x20000.png", "error", "megapixel",
         "PNG header says 20000x20000 (400 megapixels); only 8 rows of data", raw_png(
             20000, 20000, 8, 2, None, idat=bomb_rows))
    case("bomb_65535x65535.gif", "error", "megapixel", "GIF header says 65535x65535 (4.3 gigapixels)",
         b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0) + b"\x2c"
         + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x02\x02\x44\x01\x00\x3b")
    case("bomb_7000x7000.png", "error", "megapixel",
         "PNG header says 7000x7000 (49 megapixels): above our 40 MP limit, below Pillow's own",
         raw_png(7000, 7000, 8, 0, None, idat=zlib.compress(bytes(4 * 7001), 9)))
    bmp = bytearray(base_bmp)
    bmp[18:26] = struct.pack("<ii", 1 << 30, 1 << 30)  # width and height of 2^30 pixels
    case("bmp_absurd_header.bmp", "error", "megapixel", "BMP whose header claims 2^30 x 2^30 pixels",
         bytes(bmp))
    tiff = bytearray(base_tiff)
    for k in range(struct.unpack("<H", tiff[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * k
        tag, typ = struct.unpack("<HH", tiff[entry:entry + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength
            tiff[entry + 2:entry + 4] = struct.pack("<H", 4)  # LONG
            tiff[entry + 8:entry + 12] = struct.pack("<I", 100_000)
    case("tiff_absurd_dims.tif", "error", "megapixel", "TIFF whose IFD claims 100000x100000 pixels",
         bytes(tiff))

    # --- valid but awkward: must load ----------------------------------------------------
    case("png_named.jpg", "ok", "", "a valid PNG with a .jpg extension (content wins)", base_png)
    case("eight_by_eight.png", "ok", "", "valid 8x8 PNG: the smallest accepted size",
         encode(photo(8, 8), "PNG"))
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    case("cmyk_red.jpg", "ok", "", "CMYK JPEG, solid red (C=0 M=255 Y=255 K=0)",
         encode(cmyk, "JPEG", quality=95))
    gradient = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (16, 1))
    case("gray16_gradient.png", "ok", "", "16-bit grayscale PNG, horizontal gradient 0..65535",
         encode(Image.fromarray(gradient), "PNG"))
    case("gray16_gradient.tif", "ok", "", "16-bit grayscale TIFF, horizontal gradient 0..65535",
         encode(Image.fromarray(gradient), "TIFF"))
    rgb16 = np.zeros((16, 64, 3), dtype=">u2")
    rgb16[..., 0] = gradient
    rgb16[..., 1] = 65535 - gradient
    rgb16[..., 2] = 32896
    case("rgb16_gradient.png", "ok", "", "16-bit RGB PNG (R rises, G falls, B = 32896)",
         raw_png(64, 16, 16, 2, rgb16.tobytes()))
    pal = Image.new("P", (32, 32), 0)
    pal.putpalette([0, 0, 255] + [255, 0, 0] + [0, 0, 0] * 254)
    pal.paste(1, (16, 0, 32, 32))  # right half red, left half index 0 (blue) = transparent
    case("palette_transparent.png", "ok", "", "palette PNG: left half transparent (index 0), right half red",
         encode(pal, "PNG", transparency=0))
    case("palette_transparent.gif", "ok", "", "palette GIF with the same transparent left half",
         encode(pal, "GIF", transparency=0))
    la = np.zeros((32, 32, 2), dtype=np.uint8)
    la[..., 0] = 0
    la[:, 16:, 1] = 255  # right half opaque black, left half fully transparent
    case("gray_alpha.png", "ok", "", "LA PNG: left half transparent, right half opaque black",
         encode(Image.fromarray(la, "LA"), "PNG"))
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[..., 1] = 255
    rgba[..., 3] = 128
    case("rgba_half_green.png", "ok", "", "RGBA PNG: green at 50% opacity (white background -> pale green)",
         encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    case("grayscale.jpg", "ok", "", "8-bit grayscale JPEG", encode(photo().convert("L"), "JPEG"))
    case("bilevel.png", "ok", "", "1-bit black-and-white PNG", encode(photo().convert("1"), "PNG"))
    marker = Image.new("RGB", (48, 32), (255, 255, 255))
    marker.paste((255, 0, 0), (0, 0, 8, 8))  # red square in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation 6: the viewer must rotate 90 degrees clockwise
    case("exif_rotated_6.jpg", "ok", "", "48x32 JPEG, red marker top-left, EXIF orientation 6 (shows 32x48, "
         "marker top-right)", encode(marker, "JPEG", quality=95, exif=exif))
    frames = [Image.new("RGB", (32, 32), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    case("animated.gif", "ok", "", "3-frame animated GIF: red, green, blue (first frame red)",
         encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0))
    case("animated.png", "ok", "", "3-frame APNG: red, green, blue (first frame red)",
         encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100, loop=0))
    case("animated.webp", "ok", "", "3-frame animated WebP: red, green, blue (first frame red)",
         encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0,
                lossless=True))
    case("progressive.jpg", "ok", "", "progressive JPEG", encode(noisy_photo(), "JPEG", progressive=True))
    case("lossless.webp", "ok", "", "lossless WebP", encode(noisy_photo(), "WEBP", lossless=True))
    case("rgb.bmp", "ok", "", "24-bit BMP", base_bmp)
    case("rgb.tif", "ok", "", "uncompressed RGB TIFF", base_tiff)
    case("float.tif", "ok", "", "32-bit float grayscale TIFF with values in [0, 1]",
         encode(Image.fromarray(np.tile(np.linspace(0, 1, 64, dtype=np.float32), (16, 1)), "F"), "TIFF"))


def main() -> None:
    build()
    OUT.mkdir(parents=True, exist_ok=True)
    names = {c[0] for c in CASES}
    assert len(names) == len(CASES), "duplicate file names"
    for stale in OUT.iterdir():
        if stale.name not in names:
            stale.unlink()
    for file, _, _, _, data in CASES:
        (OUT / file).write_bytes(data)
    with MANIFEST.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file", "expect", "message_contains", "note"])
        for file, expect, contains, note, _ in CASES:
            writer.writerow([file, expect, contains, note])
    n_err = sum(c[1] == "error" for c in CASES)
    print(f"wrote {len(CASES)} files ({n_err} error, {len(CASES) - n_err} ok) to {OUT}")


if __name__ == "__main__":
    main()
