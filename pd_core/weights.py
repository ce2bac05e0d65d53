"""The paper's classifiers on demand: torchvision's published weights into the torch hub cache.

ResNet-50, VGG-19 and Inception-v3 (the paper's models, §7) load from torchvision's published
ImageNet weight files (``ResNet50_Weights.IMAGENET1K_V1`` etc.), which the registry
(:mod:`pd_core.models`) looks for in ``torch.hub.get_dir()/checkpoints``. This module puts them
there, on an operator's explicit request only (``pdlab models --download ...`` or
``--from FILE``): the web app never imports it, and nothing downloads at run time.

Every file is checked as ``torch.hub.download_url_to_file(..., hash_prefix=...)`` checks it: the
hexadecimal part of torchvision's file name (``resnet50-0676ba61.pth`` -> ``0676ba61``) must be
the start of the file's SHA-256 digest. Bytes are written to a temporary file beside the target
and renamed over it (``os.replace``, atomic on one file system) only once complete and checked,
so a corrupt, truncated or interrupted transfer leaves nothing behind.

``PD_WEIGHTS_MIRROR=URL`` (or ``mirror=``) replaces torchvision's host and path:
the file is fetched from ``URL/<file name>`` (``file://`` URLs work too).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import BinaryIO, Callable
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from .models import MODELS, ModelSpec, hub_checkpoint_dir

__all__ = ["WeightsError", "DOWNLOADABLE", "MIRROR_ENV", "download", "install_file", "source_url",
           "expected_hash_prefix"]

MIRROR_ENV = "PD_WEIGHTS_MIRROR"
CHUNK_BYTES = 1 << 20
CONNECT_TIMEOUT_S = 30.0
# torch.hub's convention: "<name>-<hex>.<ext>", the hex being a prefix of the SHA-256 digest.
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{6,64})\.[A-Za-z0-9]+$")


class WeightsError(RuntimeError):
    """A weight file could not be fetched or installed; the message is one sentence for the operator."""


def _downloadable() -> tuple[str, ...]:
    return tuple(name for name, spec in MODELS.items() if spec.weights_file and spec.weights_url)


DOWNLOADABLE: tuple[str, ...] = _downloadable()


def _spec(name: str) -> ModelSpec:
    spec = MODELS.get(name)
    if spec is None:
        raise WeightsError(f"Unknown model {name!r}; the downloadable ones are: {', '.join(_downloadable())}.")
    if not (spec.weights_file and spec.weights_url):
        raise WeightsError(f"{spec.title} needs no download: its weights ship with its Python package.")
    return spec


def expected_hash_prefix(file_name: str) -> str:
    """The SHA-256 prefix torchvision encodes in ``file_name`` (``resnet50-0676ba61.pth`` -> ``0676ba61``)."""
    match = _HASH_IN_NAME.search(file_name)
    if match is None:
        raise WeightsError(f"The file name {file_name} carries no hash to check the file against.")
    return match.group(1)


def source_url(name: str, mirror: str | None = None) -> str:
    """Where ``name``'s weights are fetched from: torchvision's URL, or ``<mirror>/<file name>``.

    ``mirror`` defaults to the ``PD_WEIGHTS_MIRROR`` environment variable.
    """
    spec = _spec(name)
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return spec.weights_url
    return f"{mirror.rstrip('/')}/{spec.weights_file}"


def download(name: str, *, mirror: str | None = None, progress: bool = True) -> Path:
    """Fetch ``name``'s torchvision weights into the torch hub cache and return the file's path.

    Parameters
    ----------
    name : str
        A registry name with published weights: ``resnet50``, ``vgg19`` or ``inception_v3``.
    mirror : str, optional
        Base URL replacing torchvision's host and path; defaults to ``$PD_WEIGHTS_MIRROR``.
    progress : bool
        Draw a text progress bar on stderr.

    A file already in the cache that passes the hash check is kept and not fetched again.

    Raises
    ------
    WeightsError
        Unreachable server, HTTP error, truncated transfer or hash mismatch; nothing is left in
        the cache in any of these cases.
    """
    spec = _spec(name)
    target = hub_checkpoint_dir() / spec.weights_file
    prefix = expected_hash_prefix(spec.weights_file)
    if target.is_file() and _sha256_of(target).startswith(prefix):
        return target
    url = source_url(name, mirror)
    host = urlsplit(url).netloc or url
    try:
        response = urlopen(Request(url, headers={"User-Agent": "pdlab"}), timeout=CONNECT_TIMEOUT_S)
    except HTTPError as exc:
        raise WeightsError(f"The server {host} answered HTTP {exc.code} for {spec.weights_file}: "
                           f"check the URL or {MIRROR_ENV}, or use --from FILE.") from None
    except (URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsError(f"Could not reach {host} ({reason}): check the network "
                           f"or use --from FILE / {MIRROR_ENV}.") from None
    with response:
        size = response.headers.get("Content-Length")
        total = int(size) if size and size.isdigit() else None
        bar = _ProgressBar(spec.weights_file, total) if progress else None
        return _install_stream(response, target, prefix, total=total, origin=url, on_chunk=bar)


def install_file(name: str, path: str | os.PathLike) -> Path:
    """Install a copy of ``name``'s weight file found at ``path`` (copied by hand) into the hub cache.

    The copy must pass the same hash check as a download; otherwise nothing is installed and
    :class:`WeightsError` says so. Returns the installed file's path.
    """
    spec = _spec(name)
    source = Path(path)
    if not source.is_file():
        raise WeightsError(f"{source} is not a file.")
    target = hub_checkpoint_dir() / spec.weights_file
    prefix = expected_hash_prefix(spec.weights_file)
    try:
        with source.open("rb") as stream:
            return _install_stream(stream, target, prefix, total=source.stat().st_size,
                                   origin=str(source), on_chunk=None)
    except PermissionError:
        raise WeightsError(f"{source} cannot be read (permission denied).") from None


def _install_stream(stream: BinaryIO, target: Path, prefix: str, *, total: int | None, origin: str,
                    on_chunk: Callable[[int], None] | None) -> Path:
    """Copy ``stream`` to a temporary file beside ``target``, check it, then rename it over ``target``."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Not NamedTemporaryFile: its 0600 mode would follow the file into a shared cache.
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        handle = partial.open("xb")
    except OSError as exc:
        raise WeightsError(f"Cannot write into {target.parent} ({exc.strerror or exc}).") from None
    try:
        digest, received = hashlib.sha256(), 0
        with handle:
            while chunk := stream.read(CHUNK_BYTES):
                handle.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if on_chunk is not None:
                    on_chunk(received)
        if on_chunk is not None:
            on_chunk(-1)
        if total is not None and received != total:
            raise WeightsError(f"The transfer from {origin} stopped after {received} of {total} bytes "
                               f"and was discarded: try again.")
        if not digest.hexdigest().startswith(prefix):
            raise WeightsError(
                f"{origin} is not torchvision's {target.name} (its SHA-256 starts with "
                f"{digest.hexdigest()[:len(prefix)]}, not {prefix}) and was discarded.")
        os.replace(partial, target)
        return target
    except (OSError, http.client.HTTPException) as exc:  # connection reset mid-transfer, disk full...
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise WeightsError(f"Installing {target.name} from {origin} failed ({reason}) "
                           f"and nothing was kept.") from None
    finally:
        partial.unlink(missing_ok=True)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class _ProgressBar:
    """``name  [#####.....]  52%  51.0/97.8 MB`` on stderr, redrawn at most ten times a second."""

    WIDTH = 30

    def __init__(self, label: str, total: int | None, stream=None):
        self.label, self.total = label, total
        self.stream = stream if stream is not None else sys.stderr
        self._last_draw = 0.0
        self._received = 0

    def __call__(self, received: int) -> None:
        finished = received < 0
        if not finished:
            self._received = received
        now = time.monotonic()
        if not finished and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        mb = self._received / 1e6
        if self.total:
            fraction = min(self._received / self.total, 1.0)
            filled = int(fraction * self.WIDTH)
            line = (f"{self.label}  [{'#' * filled}{'.' * (self.WIDTH - filled)}] {fraction:4.0%}  "
                    f"{mb:.1f}/{self.total / 1e6:.1f} MB")
        else:
            line = f"{self.label}  {mb:.1f} MB"
        self.stream.write("\r" + line + ("\n" if finished else ""))
        self.stream.flush()
