"""Decoding untrusted files: any path, bytes or binary stream -> an 8-bit RGB ``PIL.Image``.

:func:`open_image` is hardened against malformed input. Size limits are checked *before*
decoding (bytes from the file system or the stream length, pixels from the header), so a
decompression bomb costs a header read. Every failure is an :class:`ImageError` whose message is
one plain-language sentence saying what is wrong and what to do; nothing else escapes (fuzz-tested).

Colour handling (what :func:`open_image` returns for each kind of file):

* EXIF orientation applied (a phone photo comes out the way it is shown), the tag then ignored.
* Animated GIF / PNG / WebP: the first frame.
* Transparency (RGBA, LA, PA, palette or grey/RGB with a transparent colour) composited on white.
* Grayscale and 1-bit: replicated to three channels. CMYK and YCbCr: Pillow's conversion
  (no ICC colour management).
* 16-bit grayscale (modes ``I;16*``): scaled by 1/257 and rounded, so 65535 -> 255 and the whole
  range is kept (a plain ``convert("L")`` would clip everything above 255 to white).
  16-bit RGB(A) PNG: Pillow itself decodes it to 8 bits by keeping the high byte (``v >> 8``),
  which differs from ``round(v / 257)`` by at most one level.
* 32-bit integer (``I``): taken as 8-bit when all values lie in [0, 255], as 16-bit when in
  [0, 65535] (scaled by 1/257), min-max scaled otherwise. 32-bit float (``F``): taken as [0, 1]
  when it lies there, as [0, 255] when it lies there, min-max scaled otherwise.

Pillow's process-wide settings are left alone: ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay
``False`` (truncated files are errors, not half-grey pictures) and ``Image.MAX_IMAGE_PIXELS`` is
not changed; our own pixel limit is checked on the header first, so Pillow's limit only acts as a
backstop (Pillow refuses images above ``2 * MAX_IMAGE_PIXELS``, about 179 megapixels by default,
whatever ``max_pixels`` says, and may print a ``DecompressionBombWarning`` above 89 megapixels
before we refuse the image ourselves).
"""
from __future__ import annotations

import io
import os
import re
import stat
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError, shown_name, megabytes, megapixels, the_file, the_image

MAX_BYTES = 20_000_000
"""Largest accepted file, in bytes (20 MB): far above any photo a classifier at 224 px needs."""

MAX_PIXELS = 40_000_000
"""Largest accepted width x height (40 megapixels); decoding it takes about 120 MB as 8-bit RGB."""

MIN_SIDE = 8
"""Smallest accepted width or height in pixels: below it there is nothing to classify."""

MAX_ASPECT = 20.0
"""Largest accepted ratio of the long side to the short side (resizing the short side of a
10 x 40 000 strip to 256 pixels would make a 1-gigapixel image)."""

SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "DIB", "TIFF", "GIF")
"""Pillow plug-ins allowed to parse untrusted bytes (JPEG includes the MPO variant of cameras).
The dozens of other plug-ins (EPS calls Ghostscript, exotic scientific formats) are never tried."""

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".dib",
                              ".tif", ".tiff", ".gif"})
"""File extensions taken as images when listing a folder (the content decides when opening)."""

_FORMAT_LIST = "PNG, JPEG, WebP, BMP, TIFF or GIF"

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image]


# ----------------------------------------------------------------------------- reading bytes
def _read_source(source: Source, max_bytes: int) -> tuple[bytes, str | None]:
    """Read at most ``max_bytes`` from a path, bytes or stream; refuse larger input unread."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > max_bytes:
            raise ImageError(f"The file is {megabytes(len(data))} MB, above the {megabytes(max_bytes)} MB limit; "
                             "please choose a smaller or more compressed image.", "too_many_bytes")
        return data, None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = shown_name(path)
        try:
            info = path.stat()
        except FileNotFoundError:
            raise ImageError(f"{the_file(name)} does not exist; please check its name and folder.",
                             "not_found") from None
        except (OSError, ValueError):  # permission, name too long, NUL byte in the name
            raise ImageError(f"{the_file(name)} cannot be read; please check that it exists "
                             "and that you may open it.", "unreadable") from None
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"'{name}' is a folder, not an image file; please choose a file inside it.",
                             "unreadable")
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device could block or never end
            raise ImageError(f"{the_file(name)} is not a regular file; please choose an image file.",
                             "unreadable")
        if info.st_size > max_bytes:
            raise ImageError(f"{the_file(name)} is {megabytes(info.st_size)} MB, above the {megabytes(max_bytes)} "
                             "MB limit; please choose a smaller or more compressed image.", "too_many_bytes")
        try:
            with path.open("rb") as f:
                data = f.read(max_bytes + 1)
        except (OSError, ValueError):
            raise ImageError(f"{the_file(name)} cannot be read; please check that it exists "
                             "and that you may open it.", "unreadable") from None
    elif hasattr(source, "read"):
        name = shown_name(getattr(source, "name", None))
        try:
            if getattr(source, "seekable", lambda: False)():
                source.seek(0)  # a Streamlit upload read once before still yields the whole file
            data = source.read(max_bytes + 1)
        except (OSError, ValueError):
            raise ImageError(f"{the_file(name)} cannot be read; please upload it again.",
                             "unreadable") from None
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, bytes):
            raise TypeError("open_image needs a stream opened in binary mode ('rb'), not text mode")
    else:
        raise TypeError(f"open_image expects a path, bytes or a binary file, not {type(source).__name__}")
    if len(data) > max_bytes:
        raise ImageError(f"{the_file(name)} is larger than the {megabytes(max_bytes)} MB limit; "
                         "please choose a smaller or more compressed image.", "too_many_bytes")
    return data, name


# ----------------------------------------------------------------------------- sniffing
_KNOWN_IMAGE_MAGIC = (  # formats we decode: a failure to open them means the file is damaged
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "TIFF"), (b"MM\x00+", "TIFF"), (b"BM", "BMP"),
)


def _known_format(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    for magic, fmt in _KNOWN_IMAGE_MAGIC:
        if head.startswith(magic):
            return fmt
    return None


def _not_an_image(data: bytes, name: str | None) -> ImageError | None:
    """A specific message for common non-image files (documents, archives, text, other formats)."""
    the = the_file(name)
    head = data[:64]
    if head.startswith(b"%PDF"):
        return ImageError(f"{the} is a PDF document, not an image; please export the page as PNG or JPEG "
                          "first.", "not_an_image")
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08") or head[:2] == b"\x1f\x8b" \
            or head[:6] == b"7z\xbc\xaf\x27\x1c" or head[:4] == b"Rar!":
        return ImageError(f"{the} is a compressed archive (ZIP, GZIP, 7z or RAR), not an image; please "
                          "extract the pictures from it first.", "not_an_image")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"):
            return ImageError(f"{the} is a HEIC/AVIF photo, which is not supported here; please convert it "
                              f"to JPEG or PNG (for example with the Photos app) first.", "unsupported_format")
        return ImageError(f"{the} is a video or media file, not an image; please choose a photo "
                          f"({_FORMAT_LIST}).", "not_an_image")
    if head.startswith(b"8BPS"):
        return ImageError(f"{the} is a Photoshop document, which is not supported here; please export "
                          "it as PNG or JPEG first.", "unsupported_format")
    if head[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00"):
        return ImageError(f"{the} is a Windows icon or cursor, not a photo; please choose a PNG or JPEG "
                          "image instead.", "unsupported_format")
    if head.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")):
        return ImageError(f"{the} is a JPEG 2000 image, which is not supported here; please convert it "
                          "to PNG or ordinary JPEG first.", "unsupported_format")
    if _known_format(head):
        return None
    text = _as_text(data[:4096])
    if text is not None:
        lowered = text.lstrip().lower()
        if lowered.startswith("<svg") or (lowered.startswith("<?xml") and "<svg" in lowered):
            return ImageError(f"{the} is an SVG vector drawing, which cannot be classified directly; please "
                              "convert it to PNG first.", "not_an_image")
        if lowered.startswith(("<!doctype html", "<html", "<head", "<body")) or "<html" in lowered[:512]:
            return ImageError(f"{the} is a web page (HTML), not an image; please save the picture itself "
                              f"({_FORMAT_LIST}) and choose that.", "not_an_image")
        return ImageError(f"{the} contains text, not an image; please choose a photo ({_FORMAT_LIST}).",
                          "not_an_image")
    return None


def _as_text(head: bytes) -> str | None:
    """The decoded text if ``head`` looks like a text file (UTF-8 or Latin-1, printable)."""
    if not head or b"\x00" in head:
        return None
    head = head.removeprefix(b"\xef\xbb\xbf")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not merely a multi-byte character cut at the end
            return None
        text = head[:exc.start].decode("utf-8")
    if not text:
        return None
    printable = sum(ch.isprintable() or ch in "\t\r\n\f" for ch in text)
    return text if printable >= 0.95 * len(text) else None


# ----------------------------------------------------------------------------- decoding
_PIXELS_RE = re.compile(r"\((\d+) pixels\)")


def _too_many_pixels(name: str | None, pixels: int | None, max_pixels: int,
                     width: int | None = None, height: int | None = None) -> ImageError:
    size = f"{width} x {height} pixels ({megapixels(pixels)} megapixels)" if width and height else (
        f"{megapixels(pixels)} megapixels" if pixels else "too many pixels")
    return ImageError(f"{the_image(name)} is {size}, above the {megapixels(max_pixels)} megapixel limit; please "
                      "downscale it before uploading.", "too_many_pixels")


def _damaged(name: str | None, fmt: str | None = None) -> ImageError:
    what = f"looks like a {fmt} image but is damaged or incomplete" if fmt else "is damaged or incomplete"
    return ImageError(f"{the_file(name)} {what} and its pixels cannot be decoded; please export or "
                      "download it again.", "damaged")


def _truncated(name: str | None) -> ImageError:
    return ImageError(f"{the_file(name)} is incomplete (it was cut off, for example by an interrupted "
                      "download); please download or export it again.", "truncated")


def _out_of_memory(name: str | None) -> ImageError:
    return ImageError(f"{the_image(name)} needs more memory to decode than is available; please choose a "
                      "smaller image.", "out_of_memory")


def _unsupported(name: str | None) -> ImageError:
    return ImageError(f"{the_file(name)} is not an image in a supported format ({_FORMAT_LIST}); please "
                      "choose a photo in one of these formats.", "unsupported_format")


def _pillow_error(exc: BaseException, name: str | None, fmt: str | None, max_pixels: int) -> ImageError:
    """Translate anything Pillow (or its C decoders) raised into one clear sentence."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        found = _PIXELS_RE.search(str(exc))
        return _too_many_pixels(name, int(found.group(1)) if found else None, max_pixels)
    if isinstance(exc, MemoryError):
        return _out_of_memory(name)
    if isinstance(exc, OSError) and "truncated" in str(exc).lower():
        return _truncated(name)
    if isinstance(exc, UnidentifiedImageError) and fmt is None:
        return _unsupported(name)
    return _damaged(name, fmt)


def _check_size(width: int, height: int, name: str | None, max_pixels: int, min_side: int,
                max_aspect: float) -> None:
    if width * height > max_pixels:
        raise _too_many_pixels(name, width * height, max_pixels, width, height)
    if min(width, height) < min_side:
        raise ImageError(f"{the_image(name)} is too small ({width} x {height} pixels); images must be at least "
                         f"{min_side} pixels on each side.", "too_small")
    if max(width, height) > max_aspect * min(width, height):
        raise ImageError(f"{the_image(name)} is {width} x {height} pixels, too elongated to classify (more "
                         f"than {max_aspect:g} to 1); please crop it first.", "too_elongated")


def open_image(source: Source, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
               min_side: int = MIN_SIDE, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Decode ``source`` into an 8-bit RGB ``PIL.Image``, or raise :class:`ImageError`.

    ``source``: a path, bytes, a binary stream (a Streamlit upload: its ``.name`` is used in
    messages, and it is read from the start) or an already decoded ``PIL.Image``.
    Limits, checked before the pixels are decoded: ``max_bytes`` (file size), ``max_pixels``
    (width x height from the header), ``min_side`` (pixels), ``max_aspect`` (long/short side).

    The result is a new, fully loaded image detached from the file: EXIF orientation applied,
    first frame of an animation, transparency composited on white, every colour mode converted
    to RGB as described in the module docstring. Any failure, including every exception type
    Pillow's decoders can raise, becomes an :class:`ImageError` with one plain sentence.
    """
    if isinstance(source, Image.Image):
        _check_size(*source.size, None, max_pixels, min_side, max_aspect)
        try:
            source.load()
        except Exception as exc:
            raise _pillow_error(exc, None, source.format, max_pixels) from None
        return _finish(source, None)
    data, name = _read_source(source, max_bytes)
    if not data:
        raise ImageError(f"{the_file(name)} is empty (0 bytes); please choose an image file.", "empty")
    refusal = _not_an_image(data, name)
    if refusal is not None:
        raise refusal
    fmt = _known_format(data[:16])
    try:
        # Reads the header only: nothing is decoded before our size checks.
        img = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
        width, height = img.size
    except Exception as exc:  # every Pillow failure mode, C decoders included
        raise _pillow_error(exc, name, fmt, max_pixels) from None
    try:
        _check_size(width, height, name, max_pixels, min_side, max_aspect)
        try:
            img.load()  # full decode of the first frame; truncated data raises (never patched)
            if img.size != (width, height):
                _check_size(*img.size, name, max_pixels, min_side, max_aspect)
        except ImageError:
            raise
        except Exception as exc:
            raise _pillow_error(exc, name, fmt, max_pixels) from None
        return _finish(img, name)
    finally:
        img.close()


def _finish(img: Image.Image, name: str | None) -> Image.Image:
    try:
        img = _exif_upright(img)
        return to_rgb(img)
    except ImageError:
        raise
    except MemoryError:
        raise _out_of_memory(name) from None
    except Exception:
        raise ImageError(f"{the_image(name)} uses the colour mode '{img.mode}', which cannot be converted to "
                         "RGB; please save it as an ordinary RGB PNG or JPEG.", "unsupported_mode") from None


_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _exif_upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF Orientation tag (like ``ImageOps.exif_transpose``, minus its metadata
    rewriting). A broken EXIF block is ignored: it is metadata and must not cost the user the photo."""
    try:
        orientation = img.getexif().get(0x0112, 1)
        method = _ORIENTATION_TRANSPOSE.get(int(orientation))
    except Exception:
        method = None
    return img.transpose(method) if method is not None else img


def _scaled_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map a 16/32-bit integer or float grayscale array to uint8 (see the module docstring)."""
    if mode.startswith("I;16"):
        return np.rint(arr.astype(np.float32) / 257.0).astype(np.uint8)
    arr = arr.astype(np.float64)
    arr = np.where(np.isfinite(arr), arr, 0.0)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if mode == "F" and lo >= 0 and hi <= 1:
        scaled = arr * 255.0
    elif lo >= 0 and hi <= 255:
        scaled = arr
    elif mode == "I" and lo >= 0 and hi <= 65535:
        scaled = arr / 257.0
    else:
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, as described in the module docstring (no size checks)."""
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = Image.fromarray(_scaled_to_uint8(np.asarray(img), mode), "L")
        return gray.convert("RGB")
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        mode in ("P", "L", "RGB", "1") and img.info.get("transparency") is not None)
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")
