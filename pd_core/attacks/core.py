"""One entry point for every attack: :func:`attack` (SPEC §2).

The model from :mod:`pd_core.models` takes images in [0, 1] and normalises itself, so Foolbox sees
it with ``bounds=(0, 1)`` and no preprocessing, on the model's own device. The shared model is
never mutated: Foolbox gets a thin wrapper that counts forward passes (for progress and
cancellation), and every parameter of the model has ``requires_grad=False``, so attacks take
gradients with respect to the input only and nothing accumulates in ``.grad``.

Quantisation. Every adversarial image is returned on the 1/255 grid, so that a saved 8-bit PNG
is exactly the image that was evaluated, and ``success`` is recomputed on the quantised image:

* fixed-budget attacks (FGSM, IGSM, PGD) round each value to the nearest grid point *inside* the
  box ``[x - eps, x + eps]`` (there always is one for eps >= 1/255), so ``L_inf <= eps`` holds
  exactly after quantisation;
* minimal-perturbation attacks (DeepFool, C&W, JSMA, L-BFGS) find perturbations so close to the
  decision boundary that rounding can undo them. Where the unrounded image was adversarial and
  the rounded one is not, the perturbation is scaled by 1.1, 1.25, 1.5, 2, 3, 4, 6, 8, 12, 16 in turn (forward
  passes only) and the first scale whose rounded image is adversarial is kept. Images where the
  attack failed keep the attack's own output (C&W returns nothing for those: they get the clean
  image back, a zero perturbation).

Overshoot. On EfficientNet-Lite0 the minimal perturbations of DeepFool, C&W and L-BFGS are 5-20x
smaller than the paper's Table 1 budgets. To reproduce those budgets the ``paper`` and ``large``
presets scale the found perturbation by ``1 + overshoot`` (DeepFool's own parameter, applied by
Foolbox inside its iterations; for C&W and L-BFGS applied here to the successful minimal
perturbation, clipped to [0, 1], before quantisation). ``overshoot=0`` is the plain attack.

Pixels the attack did not change stay unchanged only if the clean image is itself on the 1/255
grid (images from 8-bit files, via :func:`pd_core.images.load_image`, are).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from .registry import ATTACKS, AttackInfo

__all__ = ["AttackResult", "AttackCancelled", "attack", "perturbation_norms", "quantize_to_grid",
           "REPAIR_SCALES"]

#: Factors tried on a minimal perturbation that rounding to 1/255 made non-adversarial.
REPAIR_SCALES = (1.1, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)


class AttackCancelled(Exception):
    """Raised by :func:`attack` when ``should_stop()`` returned True; nothing is left behind."""


@dataclass
class AttackResult:
    """Adversarial images and their per-image outcome.

    ``adversarial`` (N, 3, H, W) in [0, 1] on the 1/255 grid. ``success`` (N,) bool: the model's
    top-1 on ``adversarial`` differs from the label (equals the target for targeted attacks).
    ``norm_l2`` = ||delta||_2 / ||x||_2 (the paper's |L2|), ``l2`` = ||delta||_2 in [0, 1] pixel
    units, ``linf_255`` = max |delta| * 255, ``psnr`` in dB (inf when delta = 0), ``l0`` = fraction
    of the features (pixels x channels) that changed. ``targets`` holds the target classes of a
    targeted attack (None otherwise). ``params`` are the exact parameters used.
    """

    adversarial: Tensor
    success: Tensor
    norm_l2: Tensor
    l2: Tensor
    linf_255: Tensor
    psnr: Tensor
    seconds: float
    name: str
    params: dict
    l0: Optional[Tensor] = None
    targets: Optional[Tensor] = None
    predictions: Optional[Tensor] = None
    preset: str = ""

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if len(self.success) else float("nan")

    def summary(self) -> dict:
        """Means over the batch as plain floats (for tables and logs)."""
        return {"attack": self.name, "preset": self.preset, "images": int(len(self.success)),
                "success_rate": self.success_rate, "mean_norm_l2": float(self.norm_l2.mean()),
                "mean_linf_255": float(self.linf_255.mean()), "seconds": self.seconds}


def perturbation_norms(clean: Tensor, adversarial: Tensor) -> dict[str, Tensor]:
    """Per-image size of ``adversarial - clean`` for batches (N, C, H, W) in [0, 1].

    Returns float32 tensors (N,) on the inputs' device: ``norm_l2`` = ||delta||_2 / ||x||_2
    (Guo et al. 2018, the paper's |L2|; inf for an all-black clean image with delta != 0),
    ``l2`` = ||delta||_2, ``linf_255`` = max |delta| * 255, ``psnr`` = 10 log10(1 / MSE) dB for a
    peak of 1 (inf when delta = 0) and ``l0`` = fraction of features with delta != 0.
    Computed in float64.
    """
    if clean.shape != adversarial.shape:
        raise ValueError(f"clean and adversarial shapes differ: {tuple(clean.shape)} vs {tuple(adversarial.shape)}")
    if clean.ndim == 3:
        clean, adversarial = clean.unsqueeze(0), adversarial.unsqueeze(0)
    x = clean.detach().flatten(1).double()
    d = adversarial.detach().flatten(1).double() - x
    l2 = d.norm(dim=1)
    x_norm = x.norm(dim=1)
    norm_l2 = torch.where(l2 == 0, torch.zeros_like(l2), l2 / x_norm)
    mse = d.square().mean(dim=1)
    psnr = torch.where(mse == 0, torch.full_like(mse, math.inf), -10 * torch.log10(mse.clamp_min(1e-300)))
    out = {"norm_l2": norm_l2, "l2": l2, "linf_255": d.abs().amax(dim=1) * 255, "psnr": psnr,
           "l0": (d != 0).double().mean(dim=1)}
    return {k: v.float() for k, v in out.items()}


def quantize_to_grid(images: Tensor, clean: Optional[Tensor] = None, eps: Optional[float] = None) -> Tensor:
    """Round to the 8-bit grid (multiples of 1/255 in [0, 1], what a PNG stores).

    With ``clean`` and ``eps`` (L-infinity budget in [0, 1] units), each value is rounded to the
    nearest multiple of 1/255 within ``eps`` of ``clean``. Where no multiple of 1/255 is that close
    (ε < 0.5/255 and ``clean`` off the grid) the clean value is kept. Used by the attacks and by the
    adaptive attack.

    The interval's ends get a slack of 1e-4 grid steps: clean photos are on the grid, but their
    float32 values k/255 are off by up to ~1e-5 steps and budgets such as 6/255 are stored rounded
    (0.02352941), so without it ``clean + eps`` would often round down one whole step. The L∞
    budget can therefore be exceeded by at most 1e-4/255 (float error), never by a grid step.
    """
    q = torch.round(images * 255)
    if eps is None:
        return q.clamp(0, 255) / 255
    if clean is None:
        raise ValueError("quantize_to_grid needs the clean images to respect eps")
    low = torch.ceil((clean - eps) * 255 - 1e-4)
    high = torch.floor((clean + eps) * 255 + 1e-4)
    q = torch.minimum(torch.maximum(q, low), high).clamp(0, 255) / 255
    return torch.where(low <= high, q, clean)


class _ForwardMonitor(nn.Module):
    """Wraps the shared model for Foolbox: counts forward passes, reports progress, cancels.

    The model is kept out of the module tree (``object.__setattr__``), so Foolbox's
    ``model.to(device)``/``eval()`` calls on the wrapper never touch the shared model.
    """

    def __init__(self, model: nn.Module, on_forward: Callable[[], None]):
        super().__init__()
        object.__setattr__(self, "inner", model)
        object.__setattr__(self, "on_forward", on_forward)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        self.on_forward()
        return self.inner(x)


def _seeded_pgd_class():
    import foolbox as fb

    class SeededLinfPGD(fb.attacks.LinfPGD):
        """Foolbox's L-inf PGD with its random start drawn from an explicit ``torch.Generator``
        (on the CPU, so a seed gives the same start on every device); global RNG untouched."""

        def __init__(self, *, generator: torch.Generator, **kwargs):
            super().__init__(**kwargs)
            self.generator = generator

        def get_random_start(self, x0, epsilon):
            import eagerpy as ep

            raw = x0.raw
            noise = torch.rand(raw.shape, generator=self.generator, dtype=raw.dtype)
            return x0 + ep.astensor((noise * 2 - 1).mul_(epsilon).to(raw.device))

    return SeededLinfPGD


def _build(name: str, p: dict, generator: torch.Generator):
    """(foolbox attack, epsilons, expected forward passes per batch) for attack ``name``."""
    import foolbox as fb

    from .jsma import SaliencyMapAttack
    from .lbfgs import LBFGSAttack

    if name == "fgsm":
        return fb.attacks.LinfFastGradientAttack(random_start=False), p["eps"], 2
    if name == "igsm":
        return (fb.attacks.LinfBasicIterativeAttack(abs_stepsize=p["stepsize"], steps=p["steps"]),
                p["eps"], p["steps"] + 1)
    if name == "pgd":
        cls = _seeded_pgd_class()
        return (cls(generator=generator, abs_stepsize=p["stepsize"], steps=p["steps"], random_start=True),
                p["eps"], p["steps"] + 1)
    if name == "deepfool":
        return (fb.attacks.L2DeepFoolAttack(steps=p["steps"], candidates=p["candidates"],
                                            overshoot=p["overshoot"]),
                None, max(1, p["steps"] // 10) * (p["candidates"] - 1))
    if name == "cw":
        return (fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=p["binary_search_steps"], steps=p["steps"], stepsize=p["stepsize"],
            confidence=p["confidence"], initial_const=p["initial_const"], abort_early=True),
            None, p["binary_search_steps"] * p["steps"])
    if name == "jsma":
        return (SaliencyMapAttack(gamma=p["gamma"], theta=p["theta"], features_per_step=p["features_per_step"]),
                None, 60)
    if name == "lbfgs":
        return (LBFGSAttack(initial_const=p["initial_const"], search_steps=p["search_steps"],
                            max_iter=p["max_iter"], confidence=p["confidence"]),
                None, p["search_steps"] * (int(p["max_iter"] * 1.25) + 2))
    raise AssertionError(name)


def _check_params(info: AttackInfo, params: dict) -> dict:
    known = set(info.presets["interactive"])
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"{info.title} has no parameter {unknown[0]!r}; its parameters are: "
                         f"{', '.join(sorted(known))}")
    out = dict(params)
    if info.budgeted and not (1 / 255 - 1e-9 <= float(out["eps"]) <= 1):
        raise ValueError(f"eps must be between 1/255 and 1 (in [0, 1] pixel units), got {out['eps']}")
    return out


def _as_batch(model, images: Tensor, labels) -> tuple[Tensor, Tensor]:
    if not torch.is_tensor(images):
        raise TypeError("images must be a torch tensor (N, 3, H, W) in [0, 1]")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    size = model.spec.input_size
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    if tuple(images.shape[2:]) != (size, size):
        raise ValueError(f"{model.spec.title} takes {size}x{size} images, got "
                         f"{images.shape[2]}x{images.shape[3]}; load them with pd_core.images.load_image")
    if len(images) == 0:
        raise ValueError("no images were given")
    images = images.detach().to(device=model.device, dtype=torch.float32)
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError("image values must be finite and in [0, 1]")
    labels = torch.as_tensor(labels).to(device=model.device, dtype=torch.int64).reshape(-1)
    if len(labels) == 1 and len(images) > 1:
        labels = labels.expand(len(images))
    if len(labels) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    if labels.min() < 0 or labels.max() >= 1000:
        raise ValueError("labels must be ImageNet class indices in 0..999")
    return images, labels


def _targets(model, images: Tensor, labels: Tensor, target, generator: torch.Generator) -> Tensor:
    """Target classes: "auto" = most likely class other than the label, "random" = uniform over the
    999 other classes (seeded), "least_likely" = the clean image's least likely class, or indices."""
    from .jsma import most_likely_other_class

    if isinstance(target, str):
        if target == "random":
            offset = torch.randint(1, 1000, (len(labels),), generator=generator).to(labels.device)
            return (labels + offset) % 1000
        if target not in ("auto", "least_likely"):
            raise ValueError(f"target must be 'auto', 'random', 'least_likely' or class indices, got {target!r}")
        with torch.no_grad():
            logits = model(images)
        if target == "least_likely":
            return logits.argmin(dim=1)
        return most_likely_other_class(logits, labels)
    t = torch.as_tensor(target).to(device=images.device, dtype=torch.int64).reshape(-1)
    if len(t) == 1:
        t = t.expand(len(images))
    if len(t) != len(images) or t.min() < 0 or t.max() >= 1000:
        raise ValueError("target must be one ImageNet class index (0..999) or one per image")
    if (t == labels).any():
        raise ValueError("a target class must differ from the image's label")
    return t


@torch.no_grad()
def _predict(model, images: Tensor, batch_size: int) -> Tensor:
    return torch.cat([model(images[i:i + batch_size]).argmax(dim=1) for i in range(0, len(images), batch_size)])


def attack(model, images: Tensor, labels, name: str, *, preset: str = "interactive", seed: int = 0,
           progress: Optional[Callable[[float, str], None]] = None,
           should_stop: Optional[Callable[[], bool]] = None, batch_size: Optional[int] = None,
           **params) -> AttackResult:
    """Attack ``images`` (N, 3, S, S) in [0, 1] with true ``labels`` (N,) using attack ``name``.

    ``name`` is a key of :data:`ATTACKS` ("fgsm", "igsm", "pgd", "deepfool", "cw", "jsma",
    "lbfgs"); ``preset`` ("interactive", "paper", "large") supplies the parameters and ``params``
    override single ones (e.g. ``eps=4/255``; budgets in [0, 1] pixel units). JSMA and L-BFGS are
    targeted, C&W optionally: ``target="auto"`` picks each image's most likely class other than its
    label, ``"random"`` a seeded random other class, ``"least_likely"`` the clean image's least
    likely class; or pass class indices (``target=None``: untargeted, C&W only). ``seed`` fixes
    PGD's random start and random targets (the global RNG is never touched).
    ``progress(fraction, message)`` is called at every forward pass of the model and
    ``should_stop()`` checked there too; when it returns True :class:`AttackCancelled` is raised
    (nothing is kept: the model and the global RNG are as before).
    Images are attacked in batches of ``batch_size`` (default 8 on CPU, 32 on GPU) on the model's
    device. Returns an :class:`AttackResult`; see the module docstring for the quantisation.
    """
    import foolbox as fb

    try:
        info = ATTACKS[name]
    except KeyError:
        raise ValueError(f"unknown attack {name!r}; choose one of: {', '.join(ATTACKS)}") from None
    p = _check_params(info, {**info.preset(preset), **params})
    images, labels = _as_batch(model, images, labels)
    if batch_size is None:
        batch_size = 32 if model.device.type == "cuda" else 8
    start = time.perf_counter()

    generator = torch.Generator().manual_seed(int(seed))
    targeted = p.get("target") is not None
    targets = _targets(model, images, labels, p["target"], generator) if targeted else None
    fb_attack, epsilons, expected = _build(name, p, generator)

    n_batches = math.ceil(len(images) / batch_size)
    state = {"batch": 0, "calls": 0}

    def on_forward():
        if should_stop is not None and should_stop():
            raise AttackCancelled(f"{info.title} was cancelled")
        state["calls"] += 1
        if progress is not None:
            within = min(state["calls"] / expected, 0.95)
            progress((state["batch"] + within) / n_batches,
                     f"{info.title}: batch {state['batch'] + 1}/{n_batches}, model call {state['calls']}")

    fmodel = fb.PyTorchModel(_ForwardMonitor(model, on_forward), bounds=(0, 1), device=model.device)
    raw_parts, ok_parts = [], []
    for b in range(n_batches):
        state["batch"], state["calls"] = b, 0
        sl = slice(b * batch_size, (b + 1) * batch_size)
        if targeted:
            criterion = fb.criteria.TargetedMisclassification(targets[sl])
        else:
            criterion = fb.criteria.Misclassification(labels[sl])
        _, clipped, ok = fb_attack(fmodel, images[sl], criterion, epsilons=epsilons)
        raw_parts.append(clipped.detach())
        ok_parts.append(ok.detach())
    raw = torch.cat(raw_parts)
    raw_success = torch.cat(ok_parts)
    if should_stop is not None and should_stop():
        raise AttackCancelled(f"{info.title} was cancelled")

    def is_success(pred: Tensor, idx: Tensor) -> Tensor:
        return pred == targets[idx] if targeted else pred != labels[idx]

    if name == "cw":
        # Foolbox's C&W returns an all-zero image where it found nothing: give the clean image back.
        nothing = (raw.flatten(1) == 0).all(dim=1) & (images.flatten(1) != 0).any(dim=1)
        raw = torch.where(nothing.view(-1, 1, 1, 1), images, raw)
        raw_success = raw_success & ~nothing
    if "overshoot" in p and name != "deepfool":  # DeepFool applies its own inside Foolbox
        scaled = (images + (1 + p["overshoot"]) * (raw - images)).clamp(0, 1)
        raw = torch.where(raw_success.view(-1, 1, 1, 1), scaled, raw)
    adversarial = quantize_to_grid(raw, images, p["eps"]) if info.budgeted else quantize_to_grid(raw)
    predictions = _predict(model, adversarial, batch_size)
    success = is_success(predictions, torch.arange(len(images), device=images.device))
    if not info.budgeted:
        delta = raw - images
        for scale in REPAIR_SCALES:
            todo = (raw_success & ~success).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            candidate = quantize_to_grid((images[todo] + scale * delta[todo]).clamp(0, 1))
            pred = _predict(model, candidate, batch_size)
            fixed = is_success(pred, todo)
            adversarial[todo[fixed]] = candidate[fixed]
            predictions[todo[fixed]] = pred[fixed]
            success[todo[fixed]] = True
    norms = perturbation_norms(images, adversarial)
    if progress is not None:
        progress(1.0, f"{info.title}: done")
    return AttackResult(adversarial=adversarial, success=success, norm_l2=norms["norm_l2"], l2=norms["l2"],
                        linf_255=norms["linf_255"], psnr=norms["psnr"], seconds=time.perf_counter() - start,
                        name=name, params=p, l0=norms["l0"], targets=targets, predictions=predictions,
                        preset=preset)
