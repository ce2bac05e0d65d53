"""One photo through one defence, timed: what each card of the app's *Defence arena* page shows.

:func:`defend_and_classify` applies a registry defence (:mod:`pd_core.defences`) to a batch once,
with a generator seeded by ``seed``, classifies the result, and measures the defence's wall-clock
time. The prediction is the one ``pdlab classify IMAGE --defence NAME --seed SEED`` prints (the same
generator, :func:`pd_core.defences.ensemble.defended_logits`). The time covers the defence only (not
the classifier), synchronised on a GPU so that it is the work and not its launch; a first call pays
one-off start-up costs (kernels, caches), so it is an indication, not a benchmark (``bench/`` has those).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .randomness import make_generator

__all__ = ["DefendedRun", "timed_defence", "defend_and_classify", "predicted_class", "arena_defence_names", "ARENA_GROUPS"]

#: The registry groups the arena shows: the paper's defence, the zoo, the baseline (no defence) and
#: the operator's plugins; the paper's ablation variants (Tables 3-4) stay on their own pages.
ARENA_GROUPS = ("baseline", "paper", "zoo", "plugin")


@dataclass(frozen=True)
class DefendedRun:
    """The defended batch (N, 3, H, W) in [0, 1] and its class probabilities (N, classes), on the CPU;
    ``seconds``: the defence's wall-clock time for the whole batch."""

    name: str
    defended: torch.Tensor
    probs: torch.Tensor
    seconds: float

    @property
    def predictions(self) -> list[int]:
        return self.probs.argmax(-1).tolist()

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / self.defended.shape[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_defence(defence, x: torch.Tensor, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, float]:
    """``(defence.apply(x, generator), seconds)``: one defended run of the batch ``x`` and its wall-clock
    time (no gradients; synchronised on a GPU). Divide by ``x.shape[0]`` for the cost per image."""
    with torch.no_grad():
        _sync(x.device)
        start = time.perf_counter()
        defended = defence.apply(x, generator)
        _sync(x.device)
    return defended, time.perf_counter() - start


def defend_and_classify(model, name: str, x: torch.Tensor, *, seed: int, config=None) -> DefendedRun:
    """Defend ``x`` (N, 3, S, S) in [0, 1] on the model's device with the registry defence ``name``
    (``config``: the run's defence settings, :func:`pd_core.defences.create_defence`), then classify.

    A defence that breaks its contract raises :class:`pd_core.defences.DefenceError` (one sentence)."""
    from .defences import create_defence

    defence = create_defence(name, model, config=config)
    defended, seconds = timed_defence(defence, x, make_generator(seed, x.device))
    with torch.no_grad():
        probs = model(defended).softmax(-1)
    return DefendedRun(name=name, defended=defended.detach().cpu(), probs=probs.cpu(), seconds=seconds)


def predicted_class(model, x: torch.Tensor) -> int:
    """The bare model's class for the first image of ``x`` (the reference of a photo without a label)."""
    with torch.no_grad():
        return int(model(x[:1]).argmax(-1)[0])


def arena_defence_names() -> list[str]:
    """The registry's defences the arena shows (:data:`ARENA_GROUPS`), in the registry's order."""
    from .defences import defence_names

    return defence_names(ARENA_GROUPS)
