"""Tensors in and out: the classifier's preprocessing, and the way back to 8-bit pixels and PNG.

* :func:`to_model_tensor`, :func:`load_image`, :func:`load_batch` — the classifier's
  preprocessing (short side resized to ``resize`` with ``interpolation``, centre crop
  ``input_size``; the fields of :class:`pd_core.models.ModelSpec`), same result as torchvision's
  ``Resize(resize) + CenterCrop(input_size)`` on the PIL image.
* :func:`tensor_to_uint8`, :func:`tensor_to_pil`, :func:`to_png_bytes`, :func:`quantize` — the
  way out. A PNG holds 8-bit values, so saving rounds every value to the nearest multiple of
  1/255: the saved PNG *is* ``quantize(x)``. Attacks should report ``quantize(x_adv)`` (and check
  its label), so that the downloaded file keeps the adversarial label after the round trip.
"""
from __future__ import annotations

import io
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
