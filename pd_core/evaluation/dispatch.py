"""Dispatch of work units to Ray actors, and the progress of a distributed run (issue 12).

:class:`Dispatcher` is the driver's side of :func:`pd_core.evaluation.distributed.evaluate_distributed`:
pull-based balancing (at most ``in_flight`` units queued per actor; the next unit goes to whichever
actor answers first, through :func:`ray.wait`), with chunk affinity (an actor gets the other units
of its chunk first, so it loads the chunk's images and runs its clean pass once, as the single
process does), replacement of dead actors, and retries.
:class:`ProgressSnapshot` is what a display receives (the command line's :func:`progress_printer`,
or the Benchmark page).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from .data import EvaluationError
from .tables import ATTACK_TITLES

__all__ = ["ProgressSnapshot", "progress_printer", "Dispatcher"]


@dataclass
class ProgressSnapshot:
    """One look at a distributed run (for the command line and the Benchmark page).

    Units: ``total`` in the run, ``resumed`` found finished on disk at the start, ``done``
    finished so far (resumed included), ``running`` handed to workers, ``failed`` attempts lost
    with a dead worker, ``retried`` of them handed out again. ``rate`` is units per second over
    this session's units; ``seconds_left`` the estimate from it (NaN before the first unit).
    """

    total: int
    done: int
    resumed: int
    running: int
    failed: int
    retried: int
    workers: int
    elapsed: float
    rate: float
    seconds_left: float
    message: str = ""
    worker_pids: tuple = ()

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def line(self) -> str:
        left = "?" if self.seconds_left != self.seconds_left else f"{self.seconds_left / 60:.1f} min"
        return (f"{self.done}/{self.total} units ({self.resumed} resumed), {self.running} running on "
                f"{self.workers} workers, {self.rate * 60:.1f} units/min, ~{left} left, "
                f"{self.failed} failed / {self.retried} retried")


def progress_printer(stream=None, every: float = 2.0) -> Callable[[ProgressSnapshot], None]:
    """A callback that rewrites one status line on ``stream`` (stderr) at most every ``every`` s."""
    import sys

    stream = stream or sys.stderr
    last = [0.0]

    def show(snap: ProgressSnapshot) -> None:
        now = time.monotonic()
        finished = snap.done == snap.total
        if (now - last[0] >= every and not finished) or (finished and last[0] >= 0):
            last[0] = -1.0 if finished else now
            stream.write("\r" + snap.line()[:150].ljust(150) + ("\n" if snap.done == snap.total else ""))
            stream.flush()

    return show


class Dispatcher:
    """Pull-based dispatch of units to actors, with replacement of dead actors."""

    def __init__(self, ray, actor_class, make_args, workers: int, in_flight: int, max_attempts: int,
                 on_progress, total: int, resumed: int):
        self.ray, self.actor_class, self.make_args = ray, actor_class, make_args
        self.in_flight, self.max_attempts, self.on_progress = max(1, in_flight), max_attempts, on_progress
        self.actors: dict[int, object] = {}
        self.pids: dict[int, int] = {}
        self.busy: dict[int, int] = {}
        self.refs: dict[object, tuple[object, int]] = {}
        self.attempts: dict[str, int] = {}
        self.results: list[dict] = []
        self.total, self.resumed = total, resumed
        self.failed = self.retried = 0
        self.pending: set[str] = set()  # keys of the units not handed out yet
        self.by_chunk: dict[object, deque] = {}  # chunk -> its units, for the affinity of _take
        self.last_chunk: dict[int, object] = {}  # actor -> chunk of the last unit taken from the queue head
        self.started = self.created = time.monotonic()
        self.next_id = 0
        # All actors start (and load their model) at once; waiting for each in turn would add one
        # model load per worker to the wall time.
        asked = [self._spawn() for _ in range(workers)]
        for wid, ref in asked:
            self._await_pid(wid, ref)
        self.started = time.monotonic()  # rates count from here: the models are loaded
        self.startup_seconds = self.started - self.created

    def _spawn(self):
        wid = self.next_id
        self.next_id += 1
        self.actors[wid] = self.actor_class.remote(*self.make_args(wid))
        self.busy[wid] = 0
        return wid, self.actors[wid].pid.remote()

    def _await_pid(self, wid: int, ref) -> None:
        try:
            self.pids[wid] = self.ray.get(ref, timeout=600)
        except Exception:  # noqa: BLE001 - a worker that cannot start is treated like one that died
            self.pids[wid] = -1

    def _new_actor(self) -> None:
        self._await_pid(*self._spawn())

    def snapshot(self, message: str = "") -> ProgressSnapshot:
        elapsed = time.monotonic() - self.started
        computed = len(self.results)
        rate = computed / elapsed if computed and elapsed > 0 else 0.0
        left = self.total - self.resumed - computed
        eta = left / rate if rate else (0.0 if left == 0 else float("nan"))
        return ProgressSnapshot(self.total, self.resumed + computed, self.resumed, len(self.refs), self.failed,
                                self.retried, len(self.actors), elapsed, rate, eta, message,
                                tuple(p for p in self.pids.values() if p > 0))

    def run(self, queue: deque) -> list[dict]:
        from ray.exceptions import NodeDiedError, RayActorError, RayTaskError, WorkerCrashedError

        self.pending = {u.key for u in queue}
        for unit in queue:
            self.by_chunk.setdefault(unit.chunk, deque()).append(unit)
        self._report("started")
        while self.pending or self.refs:
            for wid in list(self.actors):
                while self.busy[wid] < self.in_flight:
                    unit = self._take(queue, wid)
                    if unit is None:
                        break
                    self.refs[self.actors[wid].run.remote(unit)] = (unit, wid)
                    self.busy[wid] += 1
            ready, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=2.0)
            for ref in ready:
                unit, wid = self.refs.pop(ref)
                self.busy[wid] = max(0, self.busy.get(wid, 1) - 1)
                try:
                    self.results.append(self.ray.get(ref))
                except (RayActorError, WorkerCrashedError, NodeDiedError):
                    self._lost(wid, unit, queue)
                except RayTaskError as exc:
                    self._retry(unit, queue, exc)
            self._report(f"{ATTACK_TITLES.get(unit.attack, unit.attack)} chunk {unit.chunk}" if ready else "")
        self._report("finished")
        return self.results

    def _take(self, queue: deque, wid: int):
        """The next unit for actor ``wid``: another unit of the chunk it was last given (its images
        and clean pass are still in the worker's memory), else the head of the queue (largest
        cost first). Units handed out leave ``pending``; stale queue entries are skipped."""
        bucket = self.by_chunk.get(self.last_chunk.get(wid))
        while bucket:
            unit = bucket.popleft()
            if unit.key in self.pending:
                self.pending.discard(unit.key)
                return unit
        while queue:
            unit = queue.popleft()
            if unit.key in self.pending:
                self.pending.discard(unit.key)
                self.last_chunk[wid] = unit.chunk
                return unit
        return None

    def _retry(self, unit, queue: deque, exc: Exception) -> None:
        """A unit that raised: tried again up to ``max_attempts`` times, then the run stops."""
        self.attempts[unit.key] = self.attempts.get(unit.key, 0) + 1
        if self.attempts[unit.key] >= self.max_attempts:
            raise EvaluationError(f"unit {unit.attack} / chunk {unit.chunk} failed {self.attempts[unit.key]} times: "
                                  f"{str(exc).splitlines()[-1][:200]}") from None
        self.failed += 1
        self.retried += 1
        queue.appendleft(unit)
        self.pending.add(unit.key)

    def _lost(self, wid: int, unit, queue: deque) -> None:
        """A unit whose worker died: back to the front of the queue; the worker is replaced once."""
        self.failed += 1
        self.retried += 1
        queue.appendleft(unit)
        self.pending.add(unit.key)
        if wid in self.actors:
            del self.actors[wid]
            self.pids.pop(wid, None)
            self.busy.pop(wid, None)
            self._new_actor()

    def _report(self, message: str) -> None:
        if self.on_progress is not None:
            self.on_progress(self.snapshot(message))
