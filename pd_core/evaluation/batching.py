"""How the model sees batches: device-sized mini-batches, channels-last on the CPU.

The evaluation, its figures and the attacks it runs all classify through :func:`classify` and
:func:`activation_maps`, and attack the classifier through :class:`FastLayoutModel`; the two
settings below are read at call time (``bench/bench_evaluation.py`` switches them).
"""
from __future__ import annotations

import torch

__all__ = ["CHANNELS_LAST_ON_CPU", "CPU_MODEL_BATCH", "model_batch", "classify", "activation_maps",
           "fast_layout", "FastLayoutModel"]

from ..defence import predict_probs
from ..maps import robust_activation_map

# How the model sees batches on the CPU. Measured here (one thread, CPU time per image,
# EfficientNet-Lite0 at 224²): forward 21.6 ms at batch 1 (NCHW), 16.2 ms at batch 4 channels-last
# (NHWC), 23.5 / 27.0 ms at 8 / 16 NHWC, 38.2 ms at 16 NCHW; forward + input gradient 53.4 ms at 1
# NCHW, 43.8 / 43.4 / 45.3 ms at 4 / 8 / 16 NHWC, 61.5 ms at 16 NCHW. Large batches spill the
# caches, so on the CPU the model gets mini-batches of CPU_MODEL_BATCH images in NHWC layout; on a
# GPU it gets whole chunks. Values are the same up to float rounding order.
CHANNELS_LAST_ON_CPU = True
CPU_MODEL_BATCH = 4


def model_batch(model, default: int) -> int:
    """Images per model call: :data:`CPU_MODEL_BATCH` on the CPU, ``default`` elsewhere."""
    return CPU_MODEL_BATCH if model.device.type == "cpu" else max(1, int(default))


def classify(model, images: torch.Tensor, default_batch: int) -> torch.Tensor:
    """Softmax probabilities of a batch, in the device's best mini-batch size and layout."""
    return predict_probs(model, fast_layout(images), model_batch(model, default_batch))


def activation_maps(model, images: torch.Tensor, top_k: int, default_batch: int):
    """:func:`~pd_core.maps.robust_activation_map` in the device's best mini-batch size (one forward pass per
    image gives both the prediction and the map)."""
    from ..maps import ActivationMaps

    parts = [robust_activation_map(model, fast_layout(c), top_k=top_k)
             for c in images.split(model_batch(model, default_batch))]
    return ActivationMaps(*(torch.cat([getattr(p, f) for p in parts]).contiguous()
                            for f in ("rmap", "logits", "classes", "cams")), parts[0].gradcam)


def fast_layout(x: torch.Tensor) -> torch.Tensor:
    """The batch in channels-last layout on the CPU, for the model only (never for deflection, which
    indexes the flat NCHW buffer). Values are the same up to float rounding order."""
    if CHANNELS_LAST_ON_CPU and x.device.type == "cpu" and x.ndim == 4 and x.shape[0] > 1:
        return x.contiguous(memory_format=torch.channels_last)
    return x


class FastLayoutModel(torch.nn.Module):
    """The shared classifier seen through :func:`fast_layout` (for the attacks' forward and
    backward passes). Not a copy: the classifier is kept outside the module tree, so nothing here
    can move or modify it; ``spec``, ``device`` and ``name`` are the classifier's."""

    def __init__(self, model):
        super().__init__()
        object.__setattr__(self, "inner", model)
        self.eval()

    spec = property(lambda self: self.inner.spec)
    device = property(lambda self: self.inner.device)
    name = property(lambda self: self.inner.name)
    input_size = property(lambda self: self.inner.input_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner(fast_layout(images))
