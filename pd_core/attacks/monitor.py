"""Forward-pass bookkeeping of :func:`pd_core.attacks.attack`: progress, cancellation, and the thin
wrapper through which attacks see the shared model (it is never mutated)."""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

__all__ = ["AttackCancelled", "ForwardMonitor", "Progress", "stop_if_asked"]


class AttackCancelled(Exception):
    """Raised by :func:`attack` when ``should_stop()`` returned True; nothing is left behind."""


def stop_if_asked(should_stop: Callable[[], bool] | None, where: str) -> None:
    """Raise :class:`AttackCancelled` when ``should_stop()`` is true: a long computation checks this
    between its stages (after the attack, before the defence, ...), so that a caller who gives way
    to others never has to wait for the rest of it."""
    if should_stop is not None and should_stop():
        raise AttackCancelled(f"stopped {where}")


class ForwardMonitor(nn.Module):
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


class Progress:
    """Called at every forward pass of the model: counts, reports progress, checks for cancellation."""

    def __init__(self, title: str, n_batches: int, expected: int, progress, should_stop):
        self.title, self.n_batches, self.expected = title, n_batches, expected
        self.progress, self.should_stop = progress, should_stop
        self.batch = self.calls = 0

    def start_batch(self, batch: int) -> None:
        self.batch, self.calls = batch, 0

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise AttackCancelled(f"{self.title} was cancelled")

    def __call__(self) -> None:
        self.check()
        self.calls += 1
        if self.progress is not None:
            within = min(self.calls / self.expected, 0.95)
            self.progress((self.batch + within) / self.n_batches,
                          f"{self.title}: batch {self.batch + 1}/{self.n_batches}, model call {self.calls}")
