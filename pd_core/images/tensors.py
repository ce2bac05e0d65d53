"""Tensors in and out: the classifier's preprocessing, and the way back to 8-bit pixels and PNG.

* :func:`to_model_tensor`, :func:`load_image`, :func:`load_batch` — the classifier's
  preprocessing (short side resized to ``resize`` with ``interpolation``, centre crop
  ``input_size``; the fields of :class:`pd_core.models.ModelSpec`), same result as torchvision's
  ``Resize(resize) + CenterCrop(input_size)`` on the PIL image — except that an image already at
  the model's input size is used as it is (:func:`plan_preprocessing` says which path an image
  takes), so the attack's own PNG keeps its label when it is read back (lossless round trip).
* :func:`tensor_to_uint8`, :func:`tensor_to_pil`, :func:`to_png_bytes`, :func:`quantize` — the
  way out. A PNG holds 8-bit values, so saving rounds every value to the nearest multiple of
  1/255: the saved PNG *is* ``quantize(x)``. Attacks should report ``quantize(x_adv)`` (and check
  its label), so that the downloaded file keeps the adversarial label after the round trip.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from PIL import Image

from .decode import Source, open_image, to_rgb
from .errors import ImageError

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


@dataclass(frozen=True)
class Preprocessing:
    """The path an image of ``size`` (width, height) takes to the model's ``input_size`` square.

    ``resized_to``: (width, height) after the resize, ``None`` when the image is not resized;
    ``crop``: the (left, top, right, bottom) box cut from it, ``None`` when nothing is cut.
    An image already at the model's input size has neither: it is used as it is, so a model-size
    PNG written by the attack (``attack --out``, the app's download) reaches the model unchanged.
    """

    size: tuple[int, int]
    input_size: int
    resized_to: tuple[int, int] | None
    crop: tuple[int, int, int, int] | None

    @property
    def as_is(self) -> bool:
        """True when the pixels reach the model unchanged (neither resized nor cropped)."""
        return self.resized_to is None and self.crop is None

    def describe(self) -> str:
        """The path in a few words, e.g. ``"used as it is (already 224 × 224 pixels)"``."""
        s = self.input_size
        if self.as_is:
            return f"used as it is (already {s} × {s} pixels, the model's input size)"
        cropped = f"centre-cropped to {s} × {s}"
        if self.resized_to is None:
            return f"{cropped} (not resized)"
        w, h = self.resized_to
        return f"resized to {w} × {h} (short side {min(w, h)}) and {cropped}"


def plan_preprocessing(size: tuple[int, int], input_size: int = 224, resize: int | None = 256) -> Preprocessing:
    """How :func:`to_model_tensor` will treat an image of ``size`` = (width, height) pixels.

    An image of exactly ``input_size`` × ``input_size`` pixels is used as it is. Otherwise the
    short side is resized to ``resize`` (the long side to ``int(resize * long / short)``, as
    torchvision's ``Resize``; ``resize=None`` means ``input_size``) and the centre
    ``input_size`` square is cropped (offsets rounded as torchvision's ``CenterCrop``).
    """
    width, height = (int(v) for v in size)
    resize = input_size if resize is None else int(resize)
    if resize < input_size:
        raise ValueError(f"resize ({resize}) must be at least input_size ({input_size})")
    if (width, height) == (input_size, input_size):
        # Already the model's input: resizing to `resize` and cropping back would resample
        # every pixel and smooth away an adversarial perturbation saved at this size.
        return Preprocessing((width, height), input_size, None, None)
    if width <= height:
        new_size = (resize, int(resize * height / width))
    else:
        new_size = (int(resize * width / height), resize)
    left = int(round((new_size[0] - input_size) / 2.0))
    top = int(round((new_size[1] - input_size) / 2.0))
    return Preprocessing((width, height), input_size, None if new_size == (width, height) else new_size,
                         (left, top, left + input_size, top + input_size))


def to_model_tensor(img: Image.Image, input_size: int = 224, resize: int | None = 256,
                    interpolation: str = "bicubic",
                    device: str | torch.device | None = None) -> torch.Tensor:
    """The classifier's preprocessing: (1, 3, input_size, input_size) float32 in [0, 1].

    The path is :func:`plan_preprocessing`'s: an image already at ``input_size`` × ``input_size``
    is used as it is; any other is resized (short side to ``resize``) with ``interpolation``
    (``bicubic``, ``bilinear``, ``nearest``, ``lanczos``, ``box`` or ``hamming``; Pillow's
    antialiased filters on the 8-bit image) and centre-cropped, the same result as torchvision's
    ``Resize(resize) + CenterCrop(input_size)``. Normalisation (mean/std) is the model's job.
    """
    try:
        resample = _RESAMPLING[interpolation.lower()]
    except KeyError:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose one of: {', '.join(_RESAMPLING)}") \
            from None
    plan = plan_preprocessing(img.size, input_size, resize)
    if img.mode != "RGB":
        img = to_rgb(img)
    if plan.resized_to is not None:
        img = img.resize(plan.resized_to, resample)
    if plan.crop is not None:
        img = img.crop(plan.crop)
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
