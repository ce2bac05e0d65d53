"""The gallery: labelled sample photos that install with Foolbox and scikit-image (never downloaded)."""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ImageError, shown_name


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
    raise ImageError(f"There is no gallery image called '{shown_name(name) or name[:80]}'; please pick one "
                     "from the gallery list.", "not_found")
