"""Class activation maps and the robust activation map (R-CAM) of paper §6.1 (SPEC §1.1).

``M_c(x, y) = Σ_k W[c, k] · F_k(x, y)`` with F the last convolutional feature maps and W the
linear head that follows global average pooling (Zhou et al. 2016, "Learning Deep Features for
Discriminative Localization"). For such heads ``mean_xy(M_c) + b_c`` is exactly logit c.
For heads without GAP (VGG-19) the map is Grad-CAM (Selvaraju et al. 2017) computed on the same
feature layer; the app says so.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .models import Classifier

__all__ = ["ActivationMaps", "class_activation_map", "robust_activation_map", "normalize_maps"]


class ActivationMaps(NamedTuple):
    """Everything one forward pass gives: the prediction and the maps.

    rmap:    (N, H, W) robust activation map in [0, 1] at the input resolution.
    logits:  (N, 1000) logits of the same pass (use them: never run the model again for them).
    classes: (N, k) the top-k classes the map was built from, most likely first.
    cams:    (N, k, H, W) each class map min-max normalised to [0, 1], upsampled.
    gradcam: True when the maps are Grad-CAM (head without global average pooling).
    """

    rmap: torch.Tensor
    logits: torch.Tensor
    classes: torch.Tensor
    cams: torch.Tensor
    gradcam: bool


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map (over its last two dims) to [0, 1]; a constant map becomes 0."""
    flat = maps.flatten(-2)
    lo = flat.amin(-1, keepdim=True)
    span = flat.amax(-1, keepdim=True) - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return out.view_as(maps)


def class_activation_map(model: Classifier, images: torch.Tensor, classes: torch.Tensor | None = None,
                         top_k: int = 5, differentiable: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw class activation maps at the feature resolution, from one forward pass.

    Parameters
    ----------
    images : (N, 3, S, S) in [0, 1].
    classes : (N, k) int64 classes to map; default the model's own top-``top_k``.
    differentiable : keep the autograd graph from ``images`` to the maps (CAM heads only; the
        Grad-CAM maps of heads without GAP are always detached). Same values either way.

    Returns
    -------
    cams : (N, k, h, w) raw maps (not normalised; for GAP heads ``cams.mean((2, 3)) + b`` equals
        the logits of those classes).
    logits : (N, 1000).
    classes : (N, k).
    """
    weights = model.cam_weights()
    if weights is None:
        return _grad_cam(model, images, classes, top_k)
    with torch.enable_grad() if differentiable else torch.no_grad():
        feats, logits = model.forward_features(images)
        if classes is None:
            classes = logits.topk(top_k, dim=1).indices
        w = weights[0][classes]  # (N, k, K)
        cams = torch.einsum("nkc,nchw->nkhw", w.to(feats.dtype), feats)
    return cams, logits, classes


def _grad_cam(model: Classifier, images: torch.Tensor, classes: torch.Tensor | None, top_k: int):
    with torch.no_grad():
        feats = model._features(model.normalize(images))
    feats = feats.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model._head(feats)
        if classes is None:
            classes = logits.detach().topk(top_k, dim=1).indices
        cams = []
        for i in range(classes.shape[1]):  # k ≤ 5 backward passes through the head only
            score = logits.gather(1, classes[:, i:i + 1]).sum()
            (grad,) = torch.autograd.grad(score, feats, retain_graph=i + 1 < classes.shape[1])
            alpha = grad.mean(dim=(2, 3), keepdim=True)
            cams.append(F.relu((alpha * feats).sum(1)))
    return torch.stack(cams, 1).detach(), logits.detach(), classes


def robust_activation_map(model: Classifier, images: torch.Tensor, top_k: int = 5,
                          differentiable: bool = False) -> ActivationMaps:
    """Robust activation map R of paper §6.1, with the prediction of the same forward pass.

    The top-``top_k`` classes are the model's own prediction on ``images`` (never the true label).
    Each class map is min-max normalised to [0, 1], combined as ``R = Σ_i M_{c_i} / 2^i``
    (i = 1..k, most likely first), divided by its maximum so R ∈ [0, 1], and upsampled bilinearly to
    the input size. A pixel with R = 1 is never deflected, R = 0 is deflected at the base rate.
    ``differentiable=True`` keeps the graph from ``images`` to ``rmap`` (see
    :func:`class_activation_map`; used by ``defend_differentiable(map_gradient=True)``).
    """
    cams, logits, classes = class_activation_map(model, images, top_k=top_k, differentiable=differentiable)
    cams = normalize_maps(cams)
    k = cams.shape[1]
    decay = 0.5 ** torch.arange(1, k + 1, device=cams.device, dtype=cams.dtype)
    rmap = torch.einsum("nkhw,k->nhw", cams, decay)
    peak = rmap.flatten(1).amax(1).view(-1, 1, 1)
    rmap = torch.where(peak > 0, rmap / peak.clamp_min(torch.finfo(rmap.dtype).tiny), rmap)
    size = images.shape[-2:]
    rmap = F.interpolate(rmap[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].clamp(0, 1)
    cams_up = F.interpolate(cams, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
    return ActivationMaps(rmap, logits, classes, cams_up, model.cam_weights() is None)
