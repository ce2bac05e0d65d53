"""Images in and out: the only place where PIL, NumPy arrays or encoded bytes meet ``pd_core``.

Everything inside the library is a float tensor (N, 3, H, W) in [0, 1] at the model's input
resolution (SPEC §1). This module turns user files into such tensors and back:

* :func:`open_image` — any path, bytes or binary stream -> a decoded 8-bit RGB ``PIL.Image``,
  hardened against malformed input. Size limits are checked *before* decoding (bytes from the
  file system or the stream length, pixels from the header), so a decompression bomb costs a
  header read. Every failure is an :class:`ImageError` whose message is one plain-language
  sentence saying what is wrong and what to do; nothing else escapes (fuzz-tested).
* :func:`to_model_tensor`, :func:`load_image`, :func:`load_batch` — the classifier's
  preprocessing (short side resized to ``resize`` with ``interpolation``, centre crop
  ``input_size``; the fields of :class:`pd_core.models.ModelSpec`), same result as torchvision's
  ``Resize(resize) + CenterCrop(input_size)`` on the PIL image.
* :func:`tensor_to_uint8`, :func:`tensor_to_pil`, :func:`to_png_bytes`, :func:`quantize` — the
  way out. A PNG holds 8-bit values, so saving rounds every value to the nearest multiple of
  1/255: the saved PNG *is* ``quantize(x)``. Attacks should report ``quantize(x_adv)`` (and check
  its label), so that the downloaded file keeps the adversarial label after the round trip.
* :func:`gallery` — the labelled sample photos that ship with Foolbox and scikit-image.
* :func:`read_labelled_folder`, :func:`safe_resolve` — a folder of labelled images for the
  benchmark, and user-chosen paths kept inside a configured root.

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

import csv
import importlib.util
import io
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO, Iterable, Union

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

__all__ = [
    "InputError",
    "ImageError",
    "PathError",
    "MAX_BYTES",
    "MAX_PIXELS",
    "MIN_SIDE",
    "MAX_ASPECT",
    "SUPPORTED_FORMATS",
    "IMAGE_EXTENSIONS",
    "open_image",
    "to_rgb",
    "to_model_tensor",
    "load_image",
    "load_batch",
    "pil_to_tensor",
    "uint8_to_tensor",
    "tensor_to_uint8",
    "tensor_to_pil",
    "to_png_bytes",
    "quantize",
    "GalleryImage",
    "gallery",
    "gallery_image",
    "LabelledFiles",
    "read_labelled_folder",
    "imagenet_wnids",
    "safe_resolve",
]

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


class InputError(ValueError):
    """Bad user input; ``str(error)`` is one sentence meant for the user, ``reason`` a short code."""

    def __init__(self, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.reason = reason


class ImageError(InputError):
    """An image could not be used. Reasons: ``not_found``, ``unreadable``, ``too_many_bytes``,
    ``empty``, ``not_an_image``, ``unsupported_format``, ``damaged``, ``truncated``,
    ``too_many_pixels``, ``too_small``, ``too_elongated``, ``out_of_memory``,
    ``unsupported_mode``, ``no_images``."""


class PathError(InputError):
    """A user-chosen path is not acceptable (outside the allowed root, missing, not a folder) or a
    labels file cannot be used."""


# ----------------------------------------------------------------------------- messages
def _clean_name(name: object) -> str | None:
    """The user's own file name, safe to show: last path component only (never the server's
    folders), control characters replaced, at most 80 characters."""
    if not isinstance(name, (str, os.PathLike)):
        return None
    text = os.fspath(name)
    if not isinstance(text, str) or not text or text.startswith("<"):  # "<stdin>", "<memory>"
        return None
    text = PureWindowsPath(PurePosixPath(text).name).name or text
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= 80 else text[:77] + "..."


def _the_file(name: str | None) -> str:
    return f"The file '{name}'" if name else "The file"


def _the_image(name: str | None) -> str:
    return f"The image '{name}'" if name else "The image"


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}".rstrip("0").rstrip(".")


def _mp(n: float) -> str:
    return f"{n / 1e6:.1f}".rstrip("0").rstrip(".") if n < 1e9 else f"{n / 1e6:,.0f}"


# ----------------------------------------------------------------------------- reading bytes
def _read_source(source: Source, max_bytes: int) -> tuple[bytes, str | None]:
    """Read at most ``max_bytes`` from a path, bytes or stream; refuse larger input unread."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > max_bytes:
            raise ImageError(f"The file is {_mb(len(data))} MB, above the {_mb(max_bytes)} MB limit; "
                             "please choose a smaller or more compressed image.", "too_many_bytes")
        return data, None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = _clean_name(path)
        try:
            info = path.stat()
        except FileNotFoundError:
            raise ImageError(f"{_the_file(name)} does not exist; please check its name and folder.",
                             "not_found") from None
        except (OSError, ValueError):  # permission, name too long, NUL byte in the name
            raise ImageError(f"{_the_file(name)} cannot be read; please check that it exists "
                             "and that you may open it.", "unreadable") from None
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"'{name}' is a folder, not an image file; please choose a file inside it.",
                             "unreadable")
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device could block or never end
            raise ImageError(f"{_the_file(name)} is not a regular file; please choose an image file.",
                             "unreadable")
        if info.st_size > max_bytes:
            raise ImageError(f"{_the_file(name)} is {_mb(info.st_size)} MB, above the {_mb(max_bytes)} "
                             "MB limit; please choose a smaller or more compressed image.", "too_many_bytes")
        try:
            with path.open("rb") as f:
                data = f.read(max_bytes + 1)
        except (OSError, ValueError):
            raise ImageError(f"{_the_file(name)} cannot be read; please check that it exists "
                             "and that you may open it.", "unreadable") from None
    elif hasattr(source, "read"):
        name = _clean_name(getattr(source, "name", None))
        try:
            if getattr(source, "seekable", lambda: False)():
                source.seek(0)  # a Streamlit upload read once before still yields the whole file
            data = source.read(max_bytes + 1)
        except (OSError, ValueError):
            raise ImageError(f"{_the_file(name)} cannot be read; please upload it again.",
                             "unreadable") from None
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, bytes):
            raise TypeError("open_image needs a stream opened in binary mode ('rb'), not text mode")
    else:
        raise TypeError(f"open_image expects a path, bytes or a binary file, not {type(source).__name__}")
    if len(data) > max_bytes:
        raise ImageError(f"{_the_file(name)} is larger than the {_mb(max_bytes)} MB limit; "
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
    the = _the_file(name)
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
    size = f"{width} x {height} pixels ({_mp(pixels)} megapixels)" if width and height else (
        f"{_mp(pixels)} megapixels" if pixels else "too many pixels")
    return ImageError(f"{_the_image(name)} is {size}, above the {_mp(max_pixels)} megapixel limit; please "
                      "downscale it before uploading.", "too_many_pixels")


def _damaged(name: str | None, fmt: str | None = None) -> ImageError:
    what = f"looks like a {fmt} image but is damaged or incomplete" if fmt else "is damaged or incomplete"
    return ImageError(f"{_the_file(name)} {what} and its pixels cannot be decoded; please export or "
                      "download it again.", "damaged")


def _truncated(name: str | None) -> ImageError:
    return ImageError(f"{_the_file(name)} is incomplete (it was cut off, for example by an interrupted "
                      "download); please download or export it again.", "truncated")


def _out_of_memory(name: str | None) -> ImageError:
    return ImageError(f"{_the_image(name)} needs more memory to decode than is available; please choose a "
                      "smaller image.", "out_of_memory")


def _unsupported(name: str | None) -> ImageError:
    return ImageError(f"{_the_file(name)} is not an image in a supported format ({_FORMAT_LIST}); please "
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
        raise ImageError(f"{_the_image(name)} is too small ({width} x {height} pixels); images must be at least "
                         f"{min_side} pixels on each side.", "too_small")
    if max(width, height) > max_aspect * min(width, height):
        raise ImageError(f"{_the_image(name)} is {width} x {height} pixels, too elongated to classify (more "
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
        raise ImageError(f"{_the_file(name)} is empty (0 bytes); please choose an image file.", "empty")
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
        raise ImageError(f"{_the_image(name)} uses the colour mode '{img.mode}', which cannot be converted to "
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


# ----------------------------------------------------------------------------- to the model
_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
}


def pil_to_tensor(img: Image.Image, device: str | torch.device | None = None) -> torch.Tensor:
    """An RGB ``PIL.Image`` at its own size -> float32 tensor (1, 3, H, W) in [0, 1] (value/255)."""
    if img.mode != "RGB":
        img = to_rgb(img)
    return uint8_to_tensor(np.array(img, dtype=np.uint8), device)


def uint8_to_tensor(arr: np.ndarray, device: str | torch.device | None = None) -> torch.Tensor:
    """A uint8 array (H, W, 3) -> float32 tensor (1, 3, H, W) in [0, 1] (value/255)."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 array of shape (H, W, 3), got {arr.dtype} {arr.shape}")
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).unsqueeze(0)
    return t.to(device=device, dtype=torch.float32).div_(255.0).contiguous()


def to_model_tensor(img: Image.Image, input_size: int = 224, resize: int | None = 256,
                    interpolation: str = "bicubic",
                    device: str | torch.device | None = None) -> torch.Tensor:
    """The classifier's preprocessing: (1, 3, input_size, input_size) float32 in [0, 1].

    The short side is resized to ``resize`` pixels (the long side to
    ``int(resize * long / short)``, as torchvision's ``Resize``) with ``interpolation``
    (``bicubic``, ``bilinear``, ``nearest``, ``lanczos``, ``box`` or ``hamming``; Pillow's
    antialiased filters on the 8-bit image), then the centre ``input_size`` square is cropped
    (offsets rounded as torchvision's ``CenterCrop``). ``resize=None`` resizes the short side to
    ``input_size``. Normalisation (mean/std) is the model's job, not done here.
    """
    resize = input_size if resize is None else int(resize)
    if resize < input_size:
        raise ValueError(f"resize ({resize}) must be at least input_size ({input_size})")
    try:
        resample = _RESAMPLING[interpolation.lower()]
    except KeyError:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose one of: {', '.join(_RESAMPLING)}") \
            from None
    if img.mode != "RGB":
        img = to_rgb(img)
    width, height = img.size
    if width <= height:
        new_size = (resize, int(resize * height / width))
    else:
        new_size = (int(resize * width / height), resize)
    if new_size != img.size:
        img = img.resize(new_size, resample)
    left = int(round((new_size[0] - input_size) / 2.0))
    top = int(round((new_size[1] - input_size) / 2.0))
    img = img.crop((left, top, left + input_size, top + input_size))
    return pil_to_tensor(img, device)


def _preprocessing(spec, size: int, resize: int | None, interpolation: str, device):
    """Take input_size/resize/interpolation (and the device) from a ModelSpec or a Classifier."""
    if spec is None:
        return size, resize, interpolation, device
    model_device = getattr(spec, "device", None)
    spec = getattr(spec, "spec", spec)
    return spec.input_size, spec.resize, spec.interpolation, device if device is not None else model_device


def load_image(source: Source, size: int = 224, resize: int | None = 256, interpolation: str = "bicubic",
               device: str | torch.device | None = None, *, spec=None, **limits) -> torch.Tensor:
    """Open, check and preprocess one image: (1, 3, S, S) float32 in [0, 1].

    ``spec`` (a :class:`pd_core.models.ModelSpec`, or a ``Classifier`` whose spec and device are
    used) overrides ``size``, ``resize`` and ``interpolation``. ``limits`` are passed to
    :func:`open_image` (``max_bytes``, ``max_pixels``, ``min_side``, ``max_aspect``).
    Raises :class:`ImageError` for anything that is not a usable image.
    """
    size, resize, interpolation, device = _preprocessing(spec, size, resize, interpolation, device)
    return to_model_tensor(open_image(source, **limits), size, resize, interpolation, device)


def load_batch(sources: Iterable[Source], spec=None, size: int = 224, resize: int | None = 256,
               interpolation: str = "bicubic", device: str | torch.device | None = None,
               **limits) -> torch.Tensor:
    """Load several images into one batch (N, 3, S, S); the first bad one raises its ImageError."""
    size, resize, interpolation, device = _preprocessing(spec, size, resize, interpolation, device)
    tensors = [to_model_tensor(open_image(s, **limits), size, resize, interpolation) for s in sources]
    if not tensors:
        raise ImageError("No images were given; please choose at least one image.", "no_images")
    return torch.cat(tensors).to(device)


# ----------------------------------------------------------------------------- the way out
def _as_chw(t: torch.Tensor) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"expected one RGB image of shape (3, H, W) or (1, 3, H, W), got {tuple(t.shape)}")
    return t


def quantize(t: torch.Tensor) -> torch.Tensor:
    """Round to the nearest multiple of 1/255 after clamping to [0, 1] (same shape, dtype, device).

    This is exactly what an 8-bit PNG stores: ``quantize(x)`` equals the image read back from
    ``to_png_bytes(x)`` (as value/255). NaN becomes 0. Attacks report ``quantize(x_adv)``.
    """
    return torch.round(torch.nan_to_num(t, nan=0.0).clamp(0.0, 1.0) * 255.0) / 255.0


def tensor_to_uint8(t: torch.Tensor) -> np.ndarray:
    """One image (3, H, W) or (1, 3, H, W) in [0, 1] -> uint8 array (H, W, 3), rounded to nearest."""
    t = _as_chw(t).detach().to("cpu", torch.float32)
    return quantize(t).mul_(255.0).round_().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def tensor_to_pil(t: torch.Tensor) -> Image.Image:
    """One image tensor in [0, 1] -> 8-bit RGB ``PIL.Image`` (values rounded as :func:`quantize`)."""
    return Image.fromarray(tensor_to_uint8(t), "RGB")


def to_png_bytes(t: torch.Tensor) -> bytes:
    """Lossless 8-bit RGB PNG of one image tensor. The file holds ``quantize(t)`` exactly: the only
    loss is the rounding to multiples of 1/255 that any 8-bit image format implies."""
    buf = io.BytesIO()
    tensor_to_pil(t).save(buf, "PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- the gallery
@dataclass(frozen=True)
class GalleryImage:
    """A labelled sample photo that installs with the dependencies.

    ``name``: what the user sees; ``label_index``: ImageNet class (0-999); ``label``: its name;
    ``path``: the file; ``source``: which package ships it."""

    name: str
    label_index: int
    label: str
    path: Path
    source: str


# scikit-image sample -> (ImageNet class, friendly name). Indices checked against
# pd_core.labels.IMAGENET_CLASSES in the tests.
_SKIMAGE_SAMPLES = (
    ("chelsea.png", 281, "tabby cat (scikit-image chelsea)"),
    ("coffee.png", 967, "espresso (scikit-image coffee)"),
    ("rocket.jpg", 657, "missile (scikit-image rocket)"),
    ("motorcycle_left.png", 665, "moped (scikit-image motorcycle)"),
    ("camera.png", 872, "tripod (scikit-image cameraman)"),
)
_FOOLBOX_RE = re.compile(r"^imagenet_(\d\d)_(\d+)\.jpg$")


def _package_dir(package: str) -> Path | None:
    """Where an installed package lives, without importing it (Foolbox imports are slow)."""
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0])


def gallery() -> list[GalleryImage]:
    """The sample photos: scikit-image's 5 (the tabby cat first, a good default) then Foolbox's 20
    ImageNet samples (``foolbox/data/imagenet_XX_<class>.jpg``). Files are located in the installed
    packages, never downloaded; a package that is missing simply contributes nothing."""
    from pd_core.labels import IMAGENET_CLASSES

    images: list[GalleryImage] = []
    skimage_dir = _package_dir("skimage")
    if skimage_dir is not None:
        for file, index, name in _SKIMAGE_SAMPLES:
            path = skimage_dir / "data" / file
            if path.is_file():
                images.append(GalleryImage(name, index, IMAGENET_CLASSES[index], path, "scikit-image"))
    foolbox_dir = _package_dir("foolbox")
    if foolbox_dir is not None and (foolbox_dir / "data").is_dir():
        for path in sorted((foolbox_dir / "data").iterdir()):
            match = _FOOLBOX_RE.match(path.name)
            if match:
                index = int(match.group(2))
                label = IMAGENET_CLASSES[index]
                images.append(GalleryImage(f"{label} (Foolbox sample {match.group(1)})", index, label, path,
                                           "Foolbox"))
    return images


def gallery_image(name: str) -> GalleryImage:
    """The gallery entry called ``name`` (its display name, or its file name with or without
    extension, e.g. ``"chelsea"`` or ``"imagenet_00_243"``; case-insensitive)."""
    wanted = name.strip().lower()
    for image in gallery():
        if wanted in (image.name.lower(), image.path.name.lower(), image.path.stem.lower()):
            return image
    raise ImageError(f"There is no gallery image called '{_clean_name(name) or name[:80]}'; please pick one "
                     "from the gallery list.", "not_found")


# ----------------------------------------------------------------------------- labelled folders
class LabelledFiles(list):
    """A list of ``(path, class_index)`` with ``.skipped``: ``(path, reason)`` for every file left out."""

    def __init__(self, items=(), skipped=()):
        super().__init__(items)
        self.skipped: list[tuple[Path, str]] = list(skipped)


_WNID_RE = re.compile(r"^(n\d{8})(?![0-9])")
_wnid_table: dict[str, int] | None = None


def imagenet_wnids() -> dict[str, int]:
    """WordNet id (``n01440764``) -> ImageNet-1k class index, offline from timm's ``ImageNetInfo``."""
    global _wnid_table
    if _wnid_table is None:
        from timm.data import ImageNetInfo

        wnids = ImageNetInfo("imagenet-1k").label_names()
        if len(wnids) != 1000:
            raise RuntimeError("timm's ImageNet-1k class list does not have 1000 entries")
        _wnid_table = {wnid: i for i, wnid in enumerate(wnids)}
    return _wnid_table


def read_labelled_folder(folder: str | os.PathLike, labels_csv: str | os.PathLike | None = None) -> LabelledFiles:
    """List the labelled images of ``folder`` as ``[(path, class_index), ...]``.

    Labels come from ``labels_csv`` or, when it is not given, from ``folder/labels.csv`` if that
    exists (columns ``file`` and ``class_index``, other columns ignored; ``file`` relative to
    ``folder`` and kept inside it). Otherwise the whole tree is listed and each file's class comes
    from a WordNet id at the start of its name (``n01440764_123.JPEG``) or of a parent folder's
    name (the ImageFolder layout ``n01440764/xyz.jpg``). Files are not decoded here: a listed file
    can still fail in :func:`open_image`. Every file left out is in ``result.skipped`` with the
    reason (not an image extension, no class, class out of range, missing, duplicate).
    """
    root = Path(folder)
    if not root.is_dir():
        raise PathError(f"The folder '{_clean_name(root) or root}' does not exist or is not a folder; "
                        "please choose a folder of images.", "not_found")
    csv_path = Path(labels_csv) if labels_csv is not None else root / "labels.csv"
    if labels_csv is not None or csv_path.is_file():
        return _from_labels_csv(root, csv_path)
    items, skipped = [], []
    wnids = imagenet_wnids()
    real_root = root.resolve()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if not path.resolve().is_relative_to(real_root):  # a symbolic link leading out of the folder
            skipped.append((path, "a link to a file outside the folder"))
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append((path, f"not an image file extension ({path.suffix or 'none'})"))
            continue
        candidates = [path.name] + [part for part in reversed(path.relative_to(root).parts[:-1])]
        index = None
        for text in candidates:
            match = _WNID_RE.match(text)
            if match and match.group(1) in wnids:
                index = wnids[match.group(1)]
                break
        if index is None:
            skipped.append((path, "no ImageNet WordNet id (like n01440764_...) in its name or folder, "
                                  "and no labels.csv"))
            continue
        items.append((path, index))
    return LabelledFiles(items, skipped)


def _from_labels_csv(root: Path, csv_path: Path) -> LabelledFiles:
    shown = _clean_name(csv_path) or "labels.csv"
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise PathError(f"The labels file '{shown}' does not exist; please check its name.", "not_found") from None
    except (OSError, UnicodeDecodeError, csv.Error):
        raise PathError(f"The labels file '{shown}' cannot be read as CSV text; please save it as a UTF-8 "
                        "CSV file with columns file and class_index.", "unreadable") from None
    if not rows or not {"file", "class_index"} <= set(rows[0]):
        raise PathError(f"The labels file '{shown}' needs a header row with the columns file and class_index "
                        "and at least one row; please fix it.", "invalid")
    items, skipped, seen, mentioned = [], [], set(), set()
    for row in rows:
        file = (row.get("file") or "").strip()
        try:
            path = safe_resolve(root, file, must_exist=True)
        except PathError as exc:
            skipped.append((root / file, str(exc)))
            continue
        mentioned.add(path)
        if path.is_dir() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append((path, "not an image file"))
            continue
        try:
            index = int(str(row.get("class_index", "")).strip())
        except ValueError:
            index = -1
        if not 0 <= index < 1000:
            skipped.append((path, f"class_index {row.get('class_index')!r} is not an ImageNet class (0-999)"))
            continue
        if path in seen:
            skipped.append((path, "listed twice in the labels file (first row kept)"))
            continue
        seen.add(path)
        items.append((path, index))
    csv_resolved = csv_path.resolve()
    for path in sorted(p for p in root.resolve().rglob("*") if p.is_file()):
        if path not in mentioned and path != csv_resolved:
            skipped.append((path, "not listed in the labels file"))
    return LabelledFiles(items, skipped)


# ----------------------------------------------------------------------------- safe paths
def safe_resolve(root: str | os.PathLike, relative: str | os.PathLike, *, must_exist: bool = True) -> Path:
    """Resolve a user-chosen ``relative`` path inside the configured ``root`` or raise :class:`PathError`.

    Refused: absolute paths (POSIX or Windows drive/UNC), NUL bytes, and anything whose resolved
    location (after ``..`` and symbolic links) is outside ``root``. With ``must_exist`` the target
    must exist. Messages echo only the user's own input, never the server's folders. An empty
    string or ``"."`` is the root itself.
    """
    try:
        base = Path(root).resolve(strict=True)
    except (OSError, RuntimeError):
        raise PathError("The data folder configured on this server is not available; please ask the "
                        "administrator to check it.", "not_found") from None
    text = os.fspath(relative) if relative is not None else ""
    if not isinstance(text, str):
        raise PathError("Please give the path as text.", "invalid")
    shown = "".join(ch if ch.isprintable() else "?" for ch in text)[:120]
    if "\x00" in text:
        raise PathError(f"The path '{shown}' contains an invalid character; please choose another.", "invalid")
    if os.path.isabs(text) or PureWindowsPath(text).drive or PureWindowsPath(text).root:
        # Not echoed: an absolute path may name the server's own folders.
        raise PathError("Absolute paths are not accepted; please give a path relative to the data folder.",
                        "outside_root")
    try:
        target = (base / text).resolve(strict=False)
    except (OSError, RuntimeError):  # symlink loops
        raise PathError(f"The path '{shown}' cannot be resolved (it may contain a link loop); please choose "
                        "another.", "invalid") from None
    if target != base and not target.is_relative_to(base):
        raise PathError(f"The path '{shown}' points outside the data folder; please choose a folder inside it.",
                        "outside_root")
    if must_exist and not target.exists():
        raise PathError(f"The path '{shown}' does not exist in the data folder; please check its name.",
                        "not_found")
    return target
