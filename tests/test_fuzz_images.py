"""Fuzz test of the image reader (issue 2 item 4): random and mutated image bytes never crash it.

Hypothesis feeds ``load_image`` with random bytes and with valid PNG/JPEG/GIF/BMP/TIFF/WebP
files (and a few awkward variants: 16-bit, palette with transparency, animated, EXIF-rotated)
mutated by byte flips, insertions, deletions, overwrites, header-field changes and truncation.
The only acceptable outcomes are a (1, 3, 224, 224) float32 tensor in [0, 1] or an
:class:`ImageError` whose message is one plain sentence. Anything else (another exception type,
a hang, a crash of a C decoder) fails the test. Bounded: 450 examples, each with a deadline, and
a pytest-timeout guard on the whole test.
"""
from __future__ import annotations

import io
import struct
from datetime import timedelta

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from corpus_cases import CORPUS_OK, assert_one_sentence
from pd_core.images import ImageError, load_image


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    arr = np.clip(np.mgrid[0:24, 0:32][1][..., None] * 8 + rng.integers(0, 40, (24, 32, 3)), 0, 255)
    img = Image.fromarray(arr.astype(np.uint8), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    palette = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 255, 0)]]
    return {
        "png": _encode(img, "PNG"),
        "jpeg": _encode(img, "JPEG", quality=85),
        "jpeg_progressive_exif": _encode(img, "JPEG", quality=70, progressive=True, exif=exif),
        "gif": _encode(palette, "GIF"),
        "gif_animated": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50),
        "bmp": _encode(img, "BMP"),
        "tiff": _encode(img, "TIFF"),
        "tiff_deflate": _encode(img, "TIFF", compression="tiff_adobe_deflate"),
        "webp": _encode(img, "WEBP", quality=80),
        "webp_lossless": _encode(img, "WEBP", lossless=True),
        "png_palette_transparent": _encode(palette, "PNG", transparency=0),
        "png16": _encode(Image.fromarray((arr[..., 0] * 257).astype(np.uint16)), "PNG"),
        "png_rgba": _encode(img.convert("RGBA"), "PNG"),
    }


SEEDS = _seeds()
# The awkward valid files of the corpus too (CMYK, 16-bit TIFF, APNG, animated WebP, float TIFF...).
SEEDS.update({f"corpus/{case.file}": case.path.read_bytes() for case in CORPUS_OK})


@st.composite
def mutated_image(draw) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "overwrite", "insert", "delete", "header_int", "truncate"]))
        n = len(data)
        if n == 0:
            break
        # Headers are where parsers trust sizes and offsets: aim half of the edits at the first 64 bytes.
        pos = draw(st.one_of(st.integers(0, min(n, 64) - 1), st.integers(0, n - 1)))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[pos:pos + len(chunk)] = chunk
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif op == "header_int":  # an absurd width/height/length/offset field
            value = draw(st.sampled_from([0, 1, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF]))
            fmt = draw(st.sampled_from(["<H", ">H", "<I", ">I"]))
            field = struct.pack(fmt, value & (0xFFFF if "H" in fmt else 0xFFFFFFFF))
            data[pos:pos + len(field)] = field
        else:
            del data[pos:]
    return bytes(data)


def _check(data: bytes) -> None:
    try:
        x = load_image(data)
    except ImageError as error:
        assert_one_sentence(str(error))
        return
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1


FUZZ = settings(max_examples=300, deadline=timedelta(seconds=5), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.timeout(120)
@FUZZ
@given(mutated_image())
def test_mutated_images_never_crash_the_reader(data):
    _check(data)


@pytest.mark.timeout(120)
@settings(FUZZ, max_examples=150)
@given(st.one_of(st.binary(max_size=4096),
                 # random bytes behind a real signature reach each decoder's header parser
                 st.tuples(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM",
                                            b"II*\x00", b"MM\x00*", b"RIFF\x00\x01\x00\x00WEBPVP8 "]),
                           st.binary(max_size=2048)).map(lambda t: t[0] + t[1])))
def test_random_bytes_never_crash_the_reader(data):
    _check(data)


def test_the_seeds_themselves_load():
    """So that the mutation test starts from files the reader accepts (else it could not fail)."""
    for name, data in SEEDS.items():
        x = load_image(data)
        assert x.shape == (1, 3, 224, 224), name
