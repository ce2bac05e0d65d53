"""pd_core: Pixel Deflection (Prakash et al., CVPR 2018) in batched, seeded PyTorch.

The public names below are imported lazily so that ``import pd_core`` stays cheap (the app and
the command line only pay for Foolbox, scikit-image or Plotly when they use them).

Images everywhere are float tensors (N, 3, H, W) in [0, 1] at the model's input resolution, on the
model's device; conversions happen in :mod:`pd_core.images` only.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # models
    "load_model": "models", "list_models": "models", "model_status": "models", "MODELS": "models",
    "DEFAULT_MODEL": "models", "Classifier": "models", "ModelUnavailableError": "models",
    "default_device": "models",
    # labels
    "label_name": "labels", "IMAGENET_CLASSES": "labels",
    # images
    "load_image": "images", "ImageError": "images", "gallery": "images",
    # the method
    "robust_activation_map": "maps", "class_activation_map": "maps",
    "deflect": "deflection",
    "wavelet_denoise": "denoising", "jpeg_compress": "denoising",
    "DefenceConfig": "defence", "defend": "defence", "ensemble_predict": "defence",
    "EnsembleResult": "defence",
    # attacks, evaluation, adaptive attack
    "attack": "attacks", "ATTACKS": "attacks", "AttackResult": "attacks",
    "evaluate": "evaluation",
    "bpda_eot_attack": "adaptive",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pd_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pd_core.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
