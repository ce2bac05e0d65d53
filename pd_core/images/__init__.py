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
  ``Resize(resize) + CenterCrop(input_size)`` on the PIL image; an image already at the model's
  input size is used as it is (:func:`plan_preprocessing` says which path an image takes).
* :func:`tensor_to_uint8`, :func:`tensor_to_pil`, :func:`to_png_bytes`, :func:`quantize` — the
  way out. A PNG holds 8-bit values, so saving rounds every value to the nearest multiple of
  1/255: the saved PNG *is* ``quantize(x)``. Attacks should report ``quantize(x_adv)`` (and check
  its label), so that the downloaded file keeps the adversarial label after the round trip.
* :func:`gallery` — the labelled sample photos that ship with Foolbox and scikit-image.
* :func:`read_labelled_folder`, :func:`safe_resolve` — a folder of labelled images for the
  benchmark, and user-chosen paths kept inside a configured root.

The package's modules: :mod:`.errors` (the error types), :mod:`.decode` (files -> RGB images),
:mod:`.tensors` (preprocessing, quantisation, PNG), :mod:`.gallery` (sample photos),
:mod:`.folders` (labelled folders, safe paths). Every public name is importable from
``pd_core.images`` itself.
"""
from __future__ import annotations

from .decode import (IMAGE_EXTENSIONS, MAX_ASPECT, MAX_BYTES, MAX_PIXELS, MIN_SIDE, SUPPORTED_FORMATS, Source,
                     open_image, to_rgb)
from .errors import ImageError, InputError, PathError
from .folders import LabelledFiles, imagenet_wnids, read_labelled_folder, safe_resolve
from .gallery import GalleryImage, gallery, gallery_image
from .tensors import (Preprocessing, load_batch, load_image, pil_to_tensor, plan_preprocessing, quantize,
                      tensor_to_pil, tensor_to_uint8, to_model_tensor, to_png_bytes, uint8_to_tensor)

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
    "plan_preprocessing",
    "Preprocessing",
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
