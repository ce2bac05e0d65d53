"""Progress of a long evaluation: the estimate of the fraction done, and a bar on stderr."""
from __future__ import annotations

import math
import time
from typing import Callable

__all__ = ["Progress", "ProgressTracker", "COST_PRIOR", "progress_bar"]

#: ``callback(fraction in [0, 1], message)``; may raise to stop a run (finished rows stay).
Progress = Callable[[float, str], object]

# Rough CPU seconds per image (2 threads, EfficientNet-Lite0) for the progress estimate before a
# measurement exists; replaced by the measured time of each attack after its first chunk.
COST_PRIOR = {"clean": 0.5, "fgsm": 0.7, "igsm": 1.5, "pgd": 3.0, "deepfool": 4.0, "jsma": 10.0,
               "lbfgs": 10.0, "cw": 25.0}


class ProgressTracker:
    """Fraction done and time left, weighting each (chunk, attack) unit by its measured cost."""

    def __init__(self, units: list[tuple[int, str, int]], callback: Progress | None):
        self.units = units  # (chunk index, attack, images)
        self.callback = callback
        self.done: set[tuple[int, str]] = set()
        self.rate: dict[str, float] = {}  # measured seconds per image
        self.last = 0.0
        self.started = time.monotonic()

    def _cost(self, attack: str, n: int) -> float:
        return self.rate.get(attack, COST_PRIOR.get(attack, 5.0)) * max(n, 1)

    def report(self, partial: tuple[int, str, float] | None = None, message: str = "") -> None:
        if self.callback is None:
            return
        total = sum(self._cost(a, n) for _, a, n in self.units)
        done = sum(self._cost(a, n) for c, a, n in self.units if (c, a) in self.done)
        if partial is not None:
            c, a, f = partial
            n = next(n for cc, aa, n in self.units if (cc, aa) == (c, a))
            done += min(max(f, 0.0), 1.0) * self._cost(a, n)
        frac = min(1.0, done / total) if total else 1.0
        self.last = max(self.last, frac)
        self.callback(self.last, message)

    def finish(self, chunk: int, attack: str, n: int, seconds: float, skipped: bool) -> None:
        self.done.add((chunk, attack))
        if not skipped and n:
            # Exponential average: the first chunks include warm-up.
            old = self.rate.get(attack)
            rate = seconds / n
            self.rate[attack] = rate if old is None else 0.5 * old + 0.5 * rate


def progress_bar(enabled: bool):
    """A callback drawing a progress bar on stderr (tqdm when installed) and a closer."""
    if not enabled:
        return None, lambda: None
    import sys

    try:
        from tqdm import tqdm

        bar = tqdm(total=1000, file=sys.stderr, unit="‰", dynamic_ncols=True,
                   bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")
        state = {"n": 0}

        def update(frac, message=""):
            target = int(1000 * frac)
            if target > state["n"]:
                bar.update(target - state["n"])
                state["n"] = target
            bar.set_postfix_str(str(message)[:60], refresh=True)

        return update, bar.close
    except ImportError:  # pragma: no cover - tqdm ships with the environment
        start = time.monotonic()

        def update(frac, message=""):
            elapsed = time.monotonic() - start
            left = elapsed * (1 - frac) / frac if frac > 0 else math.nan
            bar = "#" * int(30 * frac)
            sys.stderr.write(f"\r[{bar:<30s}] {100 * frac:5.1f}%  ~{left / 60:5.1f} min left  {str(message)[:40]:40s}")
            sys.stderr.flush()

        return update, lambda: sys.stderr.write("\n")
