"""ImageNet-1k class names in the standard index order (offline, from torchvision's metadata)."""
from __future__ import annotations

from torchvision.models._meta import _IMAGENET_CATEGORIES

IMAGENET_CLASSES: tuple[str, ...] = tuple(_IMAGENET_CATEGORIES)
assert len(IMAGENET_CLASSES) == 1000


def label_name(index: int) -> str:
    """Human-readable name of ImageNet class ``index`` (0-999)."""
    return IMAGENET_CLASSES[int(index)]
