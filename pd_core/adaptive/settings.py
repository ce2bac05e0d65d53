"""The settings of the adaptive attacks, each validated once, shared by the sequential and the Ray engines.

As in Foolbox 3, an entry point takes the model, the data and one settings object
(``run(model, data, settings)``) instead of a flat keyword list:

- :class:`PgdSettings`: one PGD attack's budget (norm, ε, steps, step size, EOT samples, loss,
  targeted, random start, quantisation);
- :class:`AdaptiveSettings`: the accuracy-against-ε evaluation (:func:`pd_core.adaptive.evaluate.evaluate_adaptive`);
- :class:`LadderSettings`: the ladder (:mod:`pd_core.adaptive.ladder`);
- :class:`ImageSelection`: which images of a folder are evaluated (the protocol's split, ``limit``);
- :class:`DefenceSpec`: a defence by name (registry entry, alias or ``FILE.py:FUNCTION`` plugin) and
  parameters, for engines whose workers build it themselves (Ray);
- where and how the Ray engine runs is the evaluation's :class:`~pd_core.evaluation.settings.ClusterSettings`
  (one class, one validation, for both Ray engines);
- :class:`RunHooks`: progress reporting and stopping.

Threat models (``norm``)
------------------------
- ``"linf"``: ``‖δ‖∞ ≤ ε`` with ε in [0, 1] units (budgets on the command line and in the rows'
  ``eps_255`` are in /255: 4 means 4/255, Athalye & Carlini's setting for pixel deflection).
- ``"l2"``: the *normalised* L2 of Guo et al. (ICLR 2018) and Athalye, Carlini & Wagner (ICML 2018,
  who broke Guo et al.'s defences at a normalised L2 dissimilarity of 0.05), the paper's |L2| (SPEC §2):
  ``‖δ‖₂ / ‖x‖₂ ≤ ε`` per image, ε a plain fraction (0.05 = 5%). The rows' budget column
  (``eps_255``, named for L∞) then holds that fraction as given, never multiplied by 255. An L2
  attack is not rounded to the 1/255 grid (rounding could leave the ball); its step is the
  normalised gradient, ``x ← Π(x + α·g/‖g‖₂)`` with ``α = 2.5·ε‖x‖₂/steps`` by default.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

__all__ = ["NORMS", "LOSSES", "GRADIENTS", "RUNGS", "PgdSettings", "AdaptiveSettings", "LadderSettings",
           "ImageSelection", "DefenceSpec", "RunHooks", "SettingsError", "check_loss", "check_gradient",
           "check_at_least_one",
           "budget_title"]

NORMS = ("linf", "l2")
LOSSES = ("ce", "margin")
#: Gradient estimators through the defence: BPDA (its surrogate, the identity by default) or exact.
GRADIENTS = ("bpda", "exact")
#: The ladder's rungs, in order of growing knowledge of the defence.
RUNGS = ("transfer", "bpda", "bpda_eot", "exact_eot")


class SettingsError(ValueError):
    """A setting out of range; the message is one plain sentence."""


def check_loss(loss: str) -> None:
    """Raise :class:`SettingsError` unless ``loss`` names one of :data:`LOSSES`."""
    if loss not in LOSSES:
        raise SettingsError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")


def check_gradient(gradient: str) -> None:
    """Raise :class:`SettingsError` unless ``gradient`` names one of :data:`GRADIENTS`."""
    if gradient not in GRADIENTS:
        raise SettingsError(f"gradient must be 'bpda' or 'exact', got {gradient!r}.")


def check_at_least_one(**counts) -> None:
    """Raise :class:`SettingsError` naming the counts (eot, steps, ensemble, ...) below 1."""
    low = [name for name, value in counts.items() if int(value) < 1]
    if low:
        names = ", ".join(counts) + (" must each be" if len(counts) > 1 else " must be")
        raise SettingsError(f"{names} at least 1 (got {low[0]} = {counts[low[0]]}).")


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise SettingsError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")


def _check_budgets(values, norm: str, what: str = "each ε") -> tuple[float, ...]:
    """Budgets as given by a user: /255 for L∞ (0–255), a fraction for normalised L2 (0–10)."""
    top = 255 if norm == "linf" else 10
    out = tuple(float(v) for v in values)
    unit = "in /255 units" if norm == "linf" else "a normalised L2, ‖δ‖₂/‖x‖₂, e.g. 0.05"
    if any(not math.isfinite(v) or not (0 <= v <= top) for v in out):
        raise SettingsError(f"{what} must be between 0 and {top} ({unit}), got {list(values)}.")
    return out


def budget_title(value: float, norm: str = "linf") -> str:
    """A budget as people write it: ``4/255`` (L∞) or ``L2 0.05`` (normalised L2)."""
    return f"{value:g}/255" if norm == "linf" else f"L2 {value:g}"


@dataclass(frozen=True)
class PgdSettings:
    """One PGD attack (Madry et al. 2018) through the defence.

    eps : the budget in [0, 1] units for ``norm="linf"``; for ``"l2"`` the normalised L2
        ``‖δ‖₂/‖x‖₂`` (module docstring). steps : iterations (≥ 0).
    step_size : α per step (L∞: [0, 1] units; L2: a fraction of ‖x‖₂); default ``2.5·ε/steps``,
        so the iterate can cross the ball in the first 40% of the steps.
    eot : defence samples averaged per step (EOT, ≥ 1). loss : ``"ce"`` or ``"margin"``.
    targeted : aim at a target class. random_start : start from a random point of the ball.
    quantize : round the result to the 1/255 grid inside the L∞ ball (ignored for L2).
    """

    eps: float = 4 / 255
    steps: int = 40
    step_size: float | None = None
    eot: int = 10
    loss: str = "ce"
    norm: str = "linf"
    targeted: bool = False
    random_start: bool = False
    quantize: bool = True

    def __post_init__(self):
        _check_norm(self.norm)
        eps, steps, eot = float(self.eps), int(self.steps), int(self.eot)
        top = 1 if self.norm == "linf" else 10
        if not math.isfinite(eps) or not (0 <= eps <= top):
            raise SettingsError(f"eps must be between 0 and {top} (e.g. 4/255), got {self.eps}")
        if steps < 0:
            raise SettingsError(f"steps must be ≥ 0, got {steps}")
        check_at_least_one(eot=eot)
        check_loss(self.loss)
        step = 2.5 * eps / max(steps, 1) if self.step_size is None else float(self.step_size)
        if step < 0 or not math.isfinite(step):
            raise SettingsError(f"step_size must be a finite number ≥ 0, got {self.step_size}")
        for name, value in (("eps", eps), ("steps", steps), ("eot", eot), ("step_size", step)):
            object.__setattr__(self, name, value)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AdaptiveSettings:
    """The adaptive evaluation against ε (:func:`pd_core.adaptive.evaluate.evaluate_adaptive`).

    eps_255 : L∞ budgets in /255. steps, eot, loss : the attack's. gradient : ``"bpda"`` or
    ``"exact"``. step_size_fraction : α as a fraction of ε (default the attack's ``2.5/steps``).
    ensemble : copies in the vote. batch_images : images attacked together. include_clean : add
    ε = 0 (no attack). seed : the run's seed.
    """

    eps_255: tuple[float, ...] = (1, 2, 4, 8)
    steps: int = 40
    eot: int = 10
    loss: str = "ce"
    gradient: str = "bpda"
    step_size_fraction: float | None = None
    ensemble: int = 10
    batch_images: int = 16
    include_clean: bool = True
    seed: int = 0

    def __post_init__(self):
        check_at_least_one(eot=self.eot, steps=self.steps, ensemble=self.ensemble, batch_images=self.batch_images)
        check_loss(self.loss)
        check_gradient(self.gradient)
        if self.step_size_fraction is not None and not (0 < float(self.step_size_fraction) <= 10):
            raise SettingsError("the step size fraction must be a number above 0 (a fraction of ε, e.g. 0.25).")
        eps = sorted(set(_check_budgets(self.eps_255, "linf")) | ({0.0} if self.include_clean else set()))
        if not eps:
            raise SettingsError("give at least one ε.")
        for name in ("eot", "steps", "ensemble", "batch_images", "seed"):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "eps_255", tuple(eps))

    def pgd(self, eps_255: float) -> PgdSettings:
        """The attack at ``eps_255``."""
        eps = eps_255 / 255
        step = None if self.step_size_fraction is None else self.step_size_fraction * eps
        return PgdSettings(eps=eps, steps=self.steps, step_size=step, eot=self.eot, loss=self.loss)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LadderSettings:
    """The ladder's budget: ``eps_255`` (L∞: /255; L2: normalised, see the module docstring), PGD
    ``steps``, ``eot`` samples for the EOT rungs, the losses, the ensemble size for the vote, the
    rungs wanted (each defence runs those that apply to it, :func:`pd_core.adaptive.ladder.rungs_for`),
    the seed and the threat model ``norm``."""

    eps_255: tuple[float, ...] = (0.5, 1, 2, 4, 8, 16)
    steps: int = 10
    eot: int = 4
    losses: tuple[str, ...] = ("ce", "margin")
    ensemble: int = 10
    rungs: tuple[str, ...] = RUNGS
    seed: int = 0
    norm: str = "linf"

    def __post_init__(self):
        _check_norm(self.norm)
        if not self.eps_255 or not self.losses or not self.rungs:
            raise SettingsError("the ladder needs at least one ε, one loss and one rung.")
        object.__setattr__(self, "eps_255", _check_budgets(self.eps_255, self.norm))
        for loss in self.losses:
            check_loss(loss)
        unknown = [r for r in self.rungs if r not in RUNGS]
        if unknown:
            raise SettingsError(f"rung must be one of {', '.join(RUNGS)}, got {unknown[0]!r}")
        check_at_least_one(steps=self.steps, eot=self.eot, ensemble=self.ensemble)
        for name in ("losses", "rungs"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def pgd(self, eps_255: float, *, eot: int, loss: str, steps: int | None = None,
            step_size: float | None = None) -> PgdSettings:
        """One rung's attack at the budget ``eps_255`` (as the rows give it)."""
        eps = eps_255 / 255 if self.norm == "linf" else eps_255
        return PgdSettings(eps=eps, steps=self.steps if steps is None else steps, step_size=step_size, eot=eot,
                           loss=loss, norm=self.norm)

    def as_dict(self) -> dict:
        """The fields; ``norm`` only when it is not L∞, so that runs made before it existed keep
        their identity (the Ray engine's unit keys hash this)."""
        out = asdict(self)
        if out["norm"] == "linf":
            out.pop("norm")
        return out


@dataclass(frozen=True)
class ImageSelection:
    """Which images of a folder are evaluated: the protocol's evaluation part (``tuning_fraction``
    held apart, default the evaluation module's 0.2), hash order, first ``limit``; labels from
    ``labels_csv`` (default the folder's ``labels.csv`` or WordNet-id prefixes)."""

    limit: int | None = None
    labels_csv: Any = None
    tuning_fraction: float | None = None

    def __post_init__(self):
        if self.limit is not None and int(self.limit) < 1:
            raise SettingsError("limit must be at least 1.")
        if self.tuning_fraction is not None and not (0 <= float(self.tuning_fraction) < 1):
            raise SettingsError("the tuning fraction must be at least 0 and below 1.")


@dataclass(frozen=True)
class DefenceSpec:
    """A defence by name, for an engine whose workers build it themselves: ``source`` is a registry
    name or alias, an entry-point name or a ``FILE.py:FUNCTION`` / ``module:FUNCTION`` plugin
    (loaded again in each worker, so a plugin file must be readable there); ``params`` override
    the entry's published values."""

    source: str = "pixel_deflection"
    params: Mapping[str, Any] = field(default_factory=dict)

    def name(self) -> str:
        """The registry name (loads a plugin on the way)."""
        from ..defences.plugins import resolve_defences

        names = resolve_defences(self.source)
        if len(names) != 1:
            raise SettingsError(f"one defence is needed here, got {self.source!r}")
        return names[0]

    def build(self, model=None):
        """The :class:`~pd_core.defences.base.Defence`."""
        from ..defences.registry import create_defence

        return create_defence(self.name(), model, **dict(self.params))


@dataclass(frozen=True)
class RunHooks:
    """``progress(fraction, message)`` after every step; ``should_stop()`` checked before every
    step (True stops the attack, which returns its current iterate)."""

    progress: Callable[[float, str], None] | None = None
    should_stop: Callable[[], bool] | None = None
