"""Errors of :mod:`pd_core.images` and the pieces of their one-sentence messages.

Every failure a user can cause is an :class:`InputError` whose ``str()`` is one plain sentence
saying what is wrong and what to do; messages echo only the user's own file name
(:func:`shown_name`), never the server's folders.
"""
from __future__ import annotations

import os
from pathlib import PurePosixPath, PureWindowsPath


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
def shown_name(name: object) -> str | None:
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


def the_file(name: str | None) -> str:
    """The subject of a file message: "The file 'cat.png'", or "The file" when no name can be shown."""
    return f"The file '{name}'" if name else "The file"


def the_image(name: str | None) -> str:
    """The subject of an image message: "The image 'cat.png'", or "The image"."""
    return f"The image '{name}'" if name else "The image"


def megabytes(n: float) -> str:
    """``n`` bytes in megabytes (10^6), one decimal, trailing zeros dropped: 2500000 -> "2.5"."""
    return f"{n / 1e6:.1f}".rstrip("0").rstrip(".")


def megapixels(n: float) -> str:
    """``n`` pixels in megapixels, one decimal below a billion megapixels, thousands-separated above."""
    return f"{n / 1e6:.1f}".rstrip("0").rstrip(".") if n < 1e9 else f"{n / 1e6:,.0f}"
