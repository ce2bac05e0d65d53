"""Whether a visitor is using the server right now: the script runs in progress and when the last ended.

The background warm-ups that fill caches for later (the Present page's gallery,
:mod:`ui.present_store`) must not take the cores while someone is waiting for a page. The device
queue (:mod:`pd_core.scheduler`) sees only the heavy work; on a CPU server a visitor also waits
while their page's script imports modules, serialises figures and sends them, and two cores are
all there is. So ``app.py`` wraps every script run in :func:`visitor_run`, and a warm-up starts a
piece of work only after :func:`idle_for` has reached its quiet period, and gives way as soon as
:func:`active` turns true.

Process-wide and lock-protected (every session's script thread and the warm-up threads read it);
no heavy imports, since Home's first line must not wait for anything.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

__all__ = ["visitor_run", "active", "idle_for"]

_lock = threading.Lock()
_running = 0
_last_end = None  # time.monotonic() when the last run ended; None: no run yet


@contextmanager
def visitor_run() -> Iterator[None]:
    """Mark one script run (a page being drawn for a visitor) for as long as the block lasts,
    whether it ends normally, by a rerun or by an error."""
    global _running, _last_end
    with _lock:
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            _last_end = time.monotonic()


def active() -> int:
    """How many visitors' script runs are in progress now."""
    with _lock:
        return _running


def idle_for() -> float:
    """Seconds since the last script run ended (0 while one runs; infinity if none has run yet)."""
    with _lock:
        if _running:
            return 0.0
        return float("inf") if _last_end is None else time.monotonic() - _last_end
