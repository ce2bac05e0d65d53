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

Early stop. With ``early_stop=True`` (IGSM's ``paper`` preset, FGSM's ``minimal`` preset; any
FGSM/IGSM/PGD call with that parameter) each image keeps its first adversarial iterate on the 8-bit
grid, and FGSM becomes the minimal FGSM (smallest fooling eps on the 1/255 grid): see
:mod:`pd_core.attacks.early_stop`. Those searches classify every 8-bit iterate they return, so
``success`` and ``predictions`` come from them without a further model pass; ``stopped_at`` says
which iterate each image kept.

Measures. Every result carries ``norm_l2`` (pixels), ``norm_l2_model`` (the model's normalised
input space) and ``rmse``, see :mod:`pd_core.attacks.measures`.

Pixels the attack did not change stay unchanged only if the clean image is itself on the 1/255
grid (images from 8-bit files, via :func:`pd_core.images.load_image`, are).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .measures import perturbation_norms, quantize_to_grid
from .monitor import AttackCancelled, ForwardMonitor, Progress
from .registry import AttackInfo, attack_info

__all__ = ["AttackResult", "attack", "REPAIR_SCALES"]

#: Factors tried on a minimal perturbation that rounding to 1/255 made non-adversarial.
REPAIR_SCALES = (1.1, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)


@dataclass
class AttackResult:
    """Adversarial images and their per-image outcome.

    ``adversarial`` (N, 3, H, W) in [0, 1] on the 1/255 grid. ``success`` (N,) bool: the model's
    top-1 on ``adversarial`` differs from the label (equals the target for targeted attacks).
    ``norm_l2`` = ||delta||_2 / ||x||_2 in [0, 1] pixels (this project's reading of the paper's
    |L2|), ``norm_l2_model`` = the same ratio after the model's normalisation (x - mean) / std,
    ``rmse`` = sqrt(mean(delta^2)) in [0, 1] units (see :mod:`pd_core.attacks.measures`),
    ``l2`` = ||delta||_2 in [0, 1] pixel
    units, ``linf_255`` = max |delta| * 255, ``psnr`` in dB (inf when delta = 0), ``l0`` = fraction
    of the features (pixels x channels) that changed. ``stopped_at`` (early-stop runs only): the
    iterate each image kept (IGSM/PGD: steps taken; FGSM: eps in 1/255 units). ``targets`` holds the target classes of a
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
    norm_l2_model: Optional[Tensor] = None
    rmse: Optional[Tensor] = None
    stopped_at: Optional[Tensor] = None

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if len(self.success) else float("nan")

    def summary(self) -> dict:
        """Means over the batch as plain floats (for tables and logs)."""
        return {"attack": self.name, "preset": self.preset, "images": int(len(self.success)),
                "success_rate": self.success_rate, "mean_norm_l2": float(self.norm_l2.mean()),
                "mean_norm_l2_model": float(self.norm_l2_model.mean()) if self.norm_l2_model is not None
                else float("nan"),
                "mean_rmse": float(self.rmse.mean()) if self.rmse is not None else float("nan"),
                "mean_linf_255": float(self.linf_255.mean()), "seconds": self.seconds}


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

    from .early_stop import EarlyStopLinfAttack, grid_steps
    from .jsma import SaliencyMapAttack
    from .lbfgs import LBFGSAttack

    if p.get("early_stop"):  # FGSM: minimal FGSM over the 1/255 grid (steps=0)
        steps = 0 if name == "fgsm" else p["steps"]
        grid = grid_steps(p["eps"])
        return (EarlyStopLinfAttack(steps=steps, stepsize=p.get("stepsize", 1 / 255), random_start=name == "pgd",
                                    generator=generator),
                p["eps"], (grid + 1) if name == "fgsm" else steps + 1)
    # The budgeted attacks' counts have no "+ 1": Foolbox's own success check is skipped (_run_foolbox).
    if name == "fgsm":
        return fb.attacks.LinfFastGradientAttack(random_start=False), p["eps"], 1
    if name == "igsm":
        return (fb.attacks.LinfBasicIterativeAttack(abs_stepsize=p["stepsize"], steps=p["steps"]),
                p["eps"], p["steps"])
    if name == "pgd":
        cls = _seeded_pgd_class()
        return (cls(generator=generator, abs_stepsize=p["stepsize"], steps=p["steps"], random_start=True),
                p["eps"], p["steps"])
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
    if "early_stop" in out:
        out["early_stop"] = _as_bool(out["early_stop"], "early_stop")
    if info.budgeted and not (1 / 255 - 1e-9 <= float(out["eps"]) <= 1):
        raise ValueError(f"eps must be between 1/255 and 1 (in [0, 1] pixel units), got {out['eps']}")
    return out


def _as_bool(value, name: str) -> bool:
    """A flag given as bool, 0/1 or a word (the CLI's --param passes text)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


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
    from .early_stop import EarlyStopLinfAttack

    info = attack_info(name)
    p = _check_params(info, {**info.preset(preset), **params})
    images, labels = _as_batch(model, images, labels)
    if batch_size is None:
        batch_size = 32 if model.device.type == "cuda" else 8
    start = time.perf_counter()

    generator = torch.Generator().manual_seed(int(seed))
    targets = _targets(model, images, labels, p["target"], generator) if p.get("target") is not None else None
    fb_attack, epsilons, expected = _build(name, p, generator)
    counter = Progress(info.title, math.ceil(len(images) / batch_size), expected, progress, should_stop)
    monitored = ForwardMonitor(model, counter)
    stopped_at = None
    if isinstance(fb_attack, EarlyStopLinfAttack):
        adversarial, success, predictions, stopped_at = _run_early_stop(
            fb_attack, monitored, images, labels if targets is None else targets, targets is not None,
            p["eps"], batch_size, counter)
    else:
        adversarial, success, predictions = _run_foolbox(
            name, info, p, fb_attack, epsilons, monitored, model, images, labels, targets, batch_size, counter)
    norms = perturbation_norms(images, adversarial, model)
    if progress is not None:
        progress(1.0, f"{info.title}: done")
    return AttackResult(adversarial=adversarial, success=success, norm_l2=norms["norm_l2"], l2=norms["l2"],
                        linf_255=norms["linf_255"], psnr=norms["psnr"], seconds=time.perf_counter() - start,
                        name=name, params=p, l0=norms["l0"], targets=targets, predictions=predictions,
                        preset=preset, norm_l2_model=norms["norm_l2_model"], rmse=norms["rmse"],
                        stopped_at=stopped_at)


def _run_early_stop(fb_attack, monitored: nn.Module, images: Tensor, classes: Tensor,
                    targeted: bool, eps: float, batch_size: int, counter: Progress):
    """Early-stopped FGSM/IGSM/PGD by batches; its own predictions of the 8-bit iterates are final."""
    parts = []
    for b, i in enumerate(range(0, len(images), batch_size)):
        counter.start_batch(b)
        sl = slice(i, i + batch_size)
        parts.append(fb_attack.search(monitored, images[sl], classes[sl], eps, targeted))
    counter.check()
    return tuple(torch.cat([part[k] for part in parts]) for k in range(4))


def _run_foolbox(name: str, info: AttackInfo, p: dict, fb_attack, epsilons, monitored: nn.Module, model,
                 images: Tensor, labels: Tensor, targets: Optional[Tensor], batch_size: int,
                 counter: Progress) -> tuple[Tensor, Tensor, Tensor]:
    """A Foolbox attack by batches, then quantisation (and the repair of minimal perturbations).

    For the budgeted attacks (FGSM, IGSM, PGD) Foolbox's ``run`` and its clipping to the budget are
    called directly instead of ``__call__``, which would also classify the clipped, unquantised
    result: a forward pass whose answer nothing here reads (success is decided on the quantised
    adversarial, below). The adversarial is the same tensor, bit for bit; an FGSM costs one
    forward and one backward pass instead of two forwards and a backward.
    """
    import eagerpy as ep
    import foolbox as fb
    from foolbox.attacks.base import verify_input_bounds

    fmodel = fb.PyTorchModel(monitored, bounds=(0, 1), device=model.device)
    raw_parts, ok_parts = [], []
    for b, i in enumerate(range(0, len(images), batch_size)):
        counter.start_batch(b)
        sl = slice(i, i + batch_size)
        if targets is not None:
            criterion = fb.criteria.TargetedMisclassification(targets[sl])
        else:
            criterion = fb.criteria.Misclassification(labels[sl])
        if info.budgeted:
            x = ep.astensor(images[sl])
            verify_input_bounds(x, fmodel)
            perturbed = fb_attack.run(fmodel, x, criterion, epsilon=epsilons)
            raw_parts.append(fb_attack.distance.clip_perturbation(x, perturbed, epsilons).raw.detach())
            continue
        _, clipped, ok = fb_attack(fmodel, images[sl], criterion, epsilons=epsilons)
        raw_parts.append(clipped.detach())
        ok_parts.append(ok.detach())
    raw = torch.cat(raw_parts)
    raw_success = torch.cat(ok_parts) if ok_parts else None  # only the unbudgeted attacks read it
    counter.check()

    def is_success(pred: Tensor, idx: Tensor) -> Tensor:
        return pred == targets[idx] if targets is not None else pred != labels[idx]

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
    return adversarial, success, predictions
