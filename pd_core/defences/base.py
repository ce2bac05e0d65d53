"""The protocol every defence implements, and the record of a registry entry.

A defence is an input transformation ``t`` put in front of the classifier: ``f(t(x))``. Every
defence of the lab, built in or brought by a user, is an instance of :class:`Defence`:

- ``apply(x, generator)``: ``(N, 3, H, W)`` float in [0, 1] in, the same shape, range and device
  out, batch-first; all randomness from ``generator`` (a deterministic defence ignores it).
- its metadata, from its :class:`DefenceInfo` (name, title, citation, published parameters,
  whether it is randomised, how an adaptive attack gets its gradient);
- optional methods with sound defaults, which a defence overrides where it can do better:
  ``apply_copies`` (n independent copies of each image as one batch, image-major),
  ``apply_seeded`` (the same with image i's randomness from its own seed, so a row never depends
  on the batch it was computed in), ``draw`` / ``replay`` (the random draws of a batch of copies,
  then the defence with those draws held fixed, which is what an exact-gradient attack
  differentiates), and ``surrogate`` (the smooth function whose gradient BPDA uses).

Gradient paths (Athalye, Carlini & Wagner, ICML 2018):

- ``"exact"``: with its draws fixed, the defence is differentiable almost everywhere, and
  :meth:`Defence.replay` under autograd is its exact gradient;
- ``"bpda"``: it is not (quantisation, a solver, a codec), so the backward pass goes through a
  declared surrogate ``g`` with ``g(x) ≈ t(x)``, the identity unless the defence says otherwise
  (:func:`straight_through`: the forward value is ``t(x)`` exactly, the gradient is ``∂g/∂x``).

Add a defence in two files: its module under ``pd_core/defences/`` (a subclass of
:class:`Defence` and its :class:`DefenceInfo`) and its line in :data:`pd_core.defences.registry.BUILTIN`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from ..randomness import derive_seed, make_generator

__all__ = ["Defence", "DefenceInfo", "DefenceError", "Draws", "SeedDraws", "GRADIENT_PATHS", "check_defended",
           "straight_through"]

#: How an adaptive attack gets the gradient of a defence (see the module docstring).
GRADIENT_PATHS = ("exact", "bpda")


class DefenceError(ValueError):
    """A defence that cannot be built or that broke its contract; the message is one plain sentence."""


@dataclass(frozen=True)
class DefenceInfo:
    """One entry of the defence registry, carrying its configuration (as timm's model entries do).

    name : the registry key (lower case; also the ``defence`` column of results files).
    title : its title in the app and reports. short : its column header in tables (default: title).
    citation : the source, for docstrings and reports.
    summary : one plain-language sentence for non-programmers (the app shows it).
    build : ``build(model=None, **params) -> Defence``; ``params`` override the published values.
    params : the published parameter values (a copy is passed to ``build``).
    randomised : whether two runs on the same input can differ (then it is judged with fresh
        randomness and by the Ens vote).
    gradient : ``"exact"`` or ``"bpda"``; surrogate : in words, what the backward pass uses.
    needs_model : the defence reads the classifier (pixel deflection's activation map).
    group : ``"paper"``, ``"ablation"`` (the variants of the paper's Tables 3 and 4), ``"zoo"``,
        ``"baseline"`` or ``"plugin"``; the app lists the first, third, fourth and fifth.
    aliases : other names that resolve to this entry (names used by older results files).
    """

    name: str
    title: str
    citation: str
    summary: str
    build: Callable[..., "Defence"]
    params: Mapping[str, Any] = field(default_factory=dict)
    randomised: bool = False
    gradient: str = "bpda"
    surrogate: str = "identity"
    needs_model: bool = False
    group: str = "zoo"
    aliases: tuple[str, ...] = ()
    short: str = ""

    def __post_init__(self):
        if self.gradient not in GRADIENT_PATHS:
            raise ValueError(f"gradient must be one of {GRADIENT_PATHS}, got {self.gradient!r}")

    @property
    def column_title(self) -> str:
        return self.short or self.title

    def describe(self) -> dict:
        """The entry as plain JSON-able values (``pdlab defences --json``)."""
        return {"name": self.name, "title": self.title, "short": self.column_title, "citation": self.citation, "summary": self.summary,
                "params": {k: _jsonable(v) for k, v in self.params.items()}, "randomised": self.randomised,
                "gradient": self.gradient, "surrogate": self.surrogate, "needs_model": self.needs_model,
                "group": self.group, "aliases": list(self.aliases)}


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class Draws:
    """The random draws of a batch of defended copies, replayable on chunks of rows.

    The default, :class:`SeedDraws`, holds a seed: replaying it re-runs the defence with a
    generator seeded from it, which fixes the draws of a deterministic-given-its-generator
    defence. Pixel deflection records its draws exactly (:class:`pd_core.deflection.DeflectionRecord`).
    """

    def rows(self, index: slice) -> "Draws":  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class SeedDraws(Draws):
    """Draws fixed by a seed: the rows ``index`` of the copies get ``derive_seed(seed, start)``."""

    seed: int
    start: int = 0

    def rows(self, index: slice) -> "SeedDraws":
        return SeedDraws(self.seed, self.start + int(index.start or 0))

    def generator(self, device) -> torch.Generator:
        return make_generator(derive_seed(self.seed, "rows", self.start), device)


class Defence:
    """A defence bound to its parameters (and, for a defence that reads it, to the classifier).

    Subclasses implement :meth:`apply`; the other methods have defaults that are correct for any
    defence and are overridden only to be faster or exact. Instances never hold state between
    calls: everything random comes from the generator or the seeds given to each call.
    """

    info: DefenceInfo

    def __init__(self, info: DefenceInfo, params: Mapping[str, Any] | None = None):
        self.info = info
        self.params = dict(info.params if params is None else params)

    # --- metadata -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.info.name

    @property
    def title(self) -> str:
        return self.info.title

    @property
    def randomised(self) -> bool:
        """Whether two runs can differ; a subclass may refine it from its parameters (K = 0)."""
        return self.info.randomised

    @property
    def gradient(self) -> str:
        return self.info.gradient

    def identity(self) -> dict:
        """What makes two runs of this defence the same run: its name and parameters (stored in
        results sidecars so that a resumed run cannot silently change defence)."""
        return {"name": self.name, "params": {k: _jsonable(v) for k, v in self.params.items()}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.name}: {args})"

    # --- the transformation -------------------------------------------------------------------
    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Defend a batch ``(N, 3, H, W)`` in [0, 1]; returns the same shape on the same device."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(x, generator)

    def apply_copies(self, x: torch.Tensor, copies: int, generator: torch.Generator | None = None, *,
                     maps=None) -> torch.Tensor:
        """``copies`` independent defended versions of each image, image-major ``(N·copies, ...)``
        (the copies of image i are rows ``i·copies … i·copies + copies − 1``), as one batch.
        ``maps``: as in :meth:`apply_seeded` (a defence that does not read the classifier ignores it)."""
        copies = int(copies)
        if not self.randomised:
            out = self.apply(x, generator)
            return out.repeat_interleave(copies, dim=0) if copies > 1 else out
        return self.apply(x.repeat_interleave(copies, dim=0), generator)

    def apply_seeded(self, x: torch.Tensor, copies: int, seeds: Sequence[int], *, maps=None) -> torch.Tensor:
        """As :meth:`apply_copies`, with image i's randomness from ``make_generator(seeds[i])``, so a
        row depends on its image and seed only, never on the rest of the batch (the protocol's
        units, resumable and worker-independent). ``maps``: the activation maps of ``x`` from the
        pass that classified it, for a defence that reads the classifier (others ignore it).
        A deterministic defence runs the whole batch at once."""
        if not self.randomised:
            return self.apply_copies(x, copies)
        parts = [self.apply_copies(x[i:i + 1], copies, make_generator(s, x.device)) for i, s in enumerate(seeds)]
        return torch.cat(parts) if parts else x[:0]

    # --- what adaptive attacks use ------------------------------------------------------------
    def draw(self, x: torch.Tensor, copies: int, generator: torch.Generator, *, maps=None) -> Draws | None:
        """The random draws of ``copies`` defended copies of each image of ``x``, without applying
        them (None for a deterministic defence); :meth:`replay` on the repeated batch applies them.
        ``maps``: as in :meth:`apply_seeded`.

        The default draws one seed from ``generator`` (:class:`SeedDraws`): replaying all rows re-runs
        :meth:`apply` with that seed's generator, and replaying a chunk of rows (``draws.rows(s)``)
        gives the chunk randomness of its own, from the same distribution. A defence that records
        its draws (pixel deflection) replays any chunk exactly and equals :meth:`apply_copies`."""
        if not self.randomised:
            return None
        return SeedDraws(int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)))

    def replay(self, x_copies: torch.Tensor, draws: Draws | None) -> torch.Tensor:
        """The defence on ``x_copies`` (rows already repeated, image-major) with ``draws`` fixed.

        With ``gradient == "exact"`` this is differentiable and its autograd gradient is exact; for a
        ``"bpda"`` defence the value is the defence's and the gradient goes through
        :meth:`surrogate` (:func:`straight_through`)."""
        generator = draws.generator(x_copies.device) if isinstance(draws, SeedDraws) else None
        if self.gradient == "exact":
            return self.apply(x_copies, generator)
        with torch.no_grad():
            value = self.apply(x_copies.detach(), generator)
        return straight_through(self.surrogate(x_copies), value)

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        """The differentiable approximation BPDA differentiates (the identity by default)."""
        return x


class _ReplaceValue(torch.autograd.Function):
    """Forward: ``value``; backward: the gradient goes to ``surrogate`` unchanged."""

    @staticmethod
    def forward(ctx, surrogate: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def straight_through(surrogate: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """BPDA (Athalye et al. 2018 §4.1): the forward value is ``value`` bit for bit, the backward
    pass is that of ``surrogate`` (the identity when ``surrogate`` is the input itself)."""
    if surrogate.shape != value.shape:
        raise ValueError(f"surrogate {tuple(surrogate.shape)} and value {tuple(value.shape)} differ in shape")
    return _ReplaceValue.apply(surrogate, value.detach())


def check_defended(name: str, x: torch.Tensor, out) -> torch.Tensor:
    """Raise :class:`DefenceError` (one sentence naming the defence) unless ``out`` is a tensor of
    ``x``'s shape, on its device, finite, in [0, 1]; return ``out`` as ``x``'s dtype."""
    if not isinstance(out, torch.Tensor):
        raise DefenceError(f"Defence {name!r} returned {type(out).__name__}, not a torch.Tensor.")
    if tuple(out.shape) != tuple(x.shape):
        raise DefenceError(f"Defence {name!r} returned shape {tuple(out.shape)} for input {tuple(x.shape)}: "
                           "it must return the batch at the same shape.")
    if out.device != x.device:
        raise DefenceError(f"Defence {name!r} returned a tensor on {out.device} for input on {x.device}: "
                           "it must stay on the input's device.")
    if not out.is_floating_point():
        raise DefenceError(f"Defence {name!r} returned {out.dtype} values: it must return floats in [0, 1].")
    if out.numel():
        if not torch.isfinite(out).all():
            raise DefenceError(f"Defence {name!r} returned NaN or infinite values.")
        low, high = float(out.min()), float(out.max())
        if low < -1e-6 or high > 1 + 1e-6:
            raise DefenceError(f"Defence {name!r} returned values in [{low:.3g}, {high:.3g}]: "
                               "they must stay in [0, 1].")
    return out.to(x.dtype)
