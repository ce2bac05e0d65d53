"""Sharing one device between many users: a fair queue per device and out-of-memory retries.

The hosted app serves a room of people from one GPU (or, here, two CPU cores). Every heavy job
(an attack, Ens-10, a benchmark, the adaptive attack) runs inside :func:`device_slot`, so that at
most ``slots`` jobs use a device at once and the others wait **in arrival order** (first come,
first served: a plain ``threading.Lock``/``Semaphore`` does not promise that, a waiter can be
overtaken indefinitely). While waiting, the caller learns its place in the line through
``on_wait(position)`` and can show "You are number 3 in the queue".

Slots per device come from the environment variable ``PD_SLOTS_PER_DEVICE`` (default 1), or
:func:`set_slots`. One slot is the right default for both kinds of device:

* CUDA: one attack on a large model can use most of the memory; two at once are what makes an
  out-of-memory error likely. Raise it on a large card once you know the models' footprints.
* CPU: PyTorch already spreads one job over all cores (``torch.set_num_threads``), so two jobs
  at once only share the same cores, thrash the caches and finish *both* later than one after
  the other would. With one slot the first user gets a result as fast as the machine allows.

:func:`run_with_oom_retry` and :func:`map_batches` turn a CUDA out-of-memory error into a retry
with half the batch size, down to a minimum, and then into :class:`OutOfDeviceMemoryError`, whose
message is meant for the user.

Plain Python and PyTorch: no Streamlit here. The app passes an ``on_wait`` that writes into a
placeholder; Streamlit raises from inside such a call when the user leaves or reruns the page,
which is why ``on_wait`` is also called every ``poll_interval`` seconds and why a waiter that
raises withdraws its ticket cleanly.
"""
from __future__ import annotations

import gc
import os
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

import torch

__all__ = [
    "device_slot",
    "DeviceQueue",
    "queue_for",
    "set_slots",
    "slots_from_env",
    "QueueTimeoutError",
    "OutOfDeviceMemoryError",
    "is_out_of_memory",
    "free_device_memory",
    "run_with_oom_retry",
    "map_batches",
    "OOM_MESSAGE",
]

T = TypeVar("T")

OOM_MESSAGE = ("The GPU is out of memory even for one image; try again in a minute "
               "or choose a smaller model.")


class QueueTimeoutError(TimeoutError):
    """Waited longer than the allowed time for a turn on the device (message for the user)."""


class OutOfDeviceMemoryError(RuntimeError):
    """The device ran out of memory even at the smallest batch size (message for the user)."""


# --- the fair queue ---------------------------------------------------------------------------

def slots_from_env(default: int = 1) -> int:
    """Concurrent jobs allowed per device, from ``PD_SLOTS_PER_DEVICE`` (a whole number ≥ 1)."""
    raw = os.environ.get("PD_SLOTS_PER_DEVICE", "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"PD_SLOTS_PER_DEVICE must be a whole number of at least 1, not {raw!r}.")
    return value


class DeviceQueue:
    """A first-come-first-served counting semaphore with positions and per-thread re-entry.

    Each caller takes a ticket; it may start when it is among the first ``slots - running``
    tickets still waiting. The line is a deque of tickets guarded by one ``Condition``; every
    release or withdrawal wakes all waiters so each re-reads its position (fine for the tens of
    users a classroom has). A thread that already holds a slot re-enters without queueing again,
    so a heavy helper may call another heavy helper without deadlocking itself.
    """

    def __init__(self, name: str, slots: int = 1):
        if int(slots) < 1:
            raise ValueError("a device needs at least one slot")
        self.name = name
        self._slots = int(slots)
        self._cond = threading.Condition(threading.Lock())
        self._line: deque[int] = deque()
        self._next_ticket = 0
        self._running = 0
        self._holders: dict[int, int] = {}  # thread id -> nesting depth

    # Introspection (for the UI and tests); values are a snapshot.
    @property
    def slots(self) -> int:
        return self._slots

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._line)

    def set_slots(self, slots: int) -> None:
        """Change the number of concurrent jobs; waiters are admitted at once if it grew."""
        if int(slots) < 1:
            raise ValueError("a device needs at least one slot")
        with self._cond:
            self._slots = int(slots)
            self._cond.notify_all()

    def _position(self, ticket: int) -> int:
        # 1-based place among those who still have to wait; 0 means "your turn now".
        index = self._line.index(ticket)
        free = self._slots - self._running
        return 0 if index < free else index - free + 1

    def acquire(self, on_wait: Callable[[int], object] | None = None, timeout: float | None = None,
                poll_interval: float = 1.0) -> None:
        """Wait for a slot in arrival order. See :func:`device_slot` for the arguments."""
        me = threading.get_ident()
        with self._cond:
            if me in self._holders:  # re-entry from the same thread: already has a slot
                self._holders[me] += 1
                return
            ticket = self._next_ticket
            self._next_ticket += 1
            self._line.append(ticket)
        deadline = None if timeout is None else time.monotonic() + timeout
        reported = None
        last_report = 0.0
        try:
            while True:
                with self._cond:
                    position = self._position(ticket)
                    if position == 0:
                        self._line.remove(ticket)
                        self._running += 1
                        self._holders[me] = 1
                        # Someone behind may be admitted too if several slots are free.
                        self._cond.notify_all()
                        return
                    now = time.monotonic()
                    if deadline is not None and now >= deadline:
                        raise QueueTimeoutError(
                            f"The server is busy with other people's work and no turn came within "
                            f"{timeout:.0f} s; please try again in a minute.")
                    report_due = on_wait is not None and (
                        position != reported or now - last_report >= poll_interval)
                    if not report_due:
                        limits = []
                        if on_wait is not None:
                            limits.append(last_report + poll_interval - now)
                        if deadline is not None:
                            limits.append(deadline - now)
                        self._cond.wait(timeout=min(limits) if limits else None)
                        continue
                # Call back outside the lock: it may be slow (UI) or raise (user left the page).
                reported, last_report = position, time.monotonic()
                on_wait(position)
        except BaseException:
            with self._cond:
                if ticket in self._line:
                    self._line.remove(ticket)
                self._cond.notify_all()  # those behind move up one place
            raise

    def release(self) -> None:
        me = threading.get_ident()
        with self._cond:
            depth = self._holders.get(me)
            if depth is None:
                raise RuntimeError("release() called by a thread that holds no slot on this device")
            if depth > 1:
                self._holders[me] = depth - 1
                return
            del self._holders[me]
            self._running -= 1
            self._cond.notify_all()

    @contextmanager
    def slot(self, on_wait: Callable[[int], object] | None = None, timeout: float | None = None,
             poll_interval: float = 1.0) -> Iterator[None]:
        self.acquire(on_wait=on_wait, timeout=timeout, poll_interval=poll_interval)
        try:
            yield
        finally:
            self.release()


_queues: dict[str, DeviceQueue] = {}
_queues_lock = threading.Lock()


def _device_key(device: str | torch.device | None) -> str:
    """One queue per physical device: ``"cuda"`` and ``"cuda:0"`` are the same card."""
    if device is None:
        return "cpu"
    if hasattr(device, "device") and not isinstance(device, (str, torch.device)):
        device = device.device  # a Classifier or a tensor
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index
        if index is None:
            index = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return f"cuda:{index}"
    return device.type if device.index is None else f"{device.type}:{device.index}"


def queue_for(device: str | torch.device | None) -> DeviceQueue:
    """The process-wide queue of ``device`` (created on first use with :func:`slots_from_env`)."""
    key = _device_key(device)
    with _queues_lock:
        queue = _queues.get(key)
        if queue is None:
            queue = _queues[key] = DeviceQueue(key, slots_from_env())
        return queue


def set_slots(device: str | torch.device, slots: int) -> None:
    """Set how many jobs may run at once on ``device`` (overrides ``PD_SLOTS_PER_DEVICE``)."""
    queue_for(device).set_slots(slots)


@contextmanager
def device_slot(device: str | torch.device | None, *, on_wait: Callable[[int], object] | None = None,
                timeout: float | None = None, poll_interval: float = 1.0) -> Iterator[DeviceQueue]:
    """Hold one of ``device``'s slots for the duration of the ``with`` block, first come first served.

    ``device``: a torch device, its name (``"cuda"``, ``"cuda:0"``, ``"cpu"``) or anything with a
    ``.device`` attribute (a :class:`~pd_core.models.Classifier`, a tensor).
    ``on_wait(position)``: called while the caller has to wait, with its 1-based place in the line
    (1 = next); called again whenever the place changes and at least every ``poll_interval``
    seconds, never once the slot is granted. If it raises, the caller leaves the line and the
    exception propagates. It is not called when a slot is free at once.
    ``timeout``: seconds to wait at most, then :class:`QueueTimeoutError` (``None``: no limit).

    The slot is released however the block ends, exceptions included. A thread that already
    holds a slot on the same device re-enters without waiting. Yields the :class:`DeviceQueue`.
    """
    queue = queue_for(device)
    with queue.slot(on_wait=on_wait, timeout=timeout, poll_interval=poll_interval):
        yield queue


# --- out-of-memory retries --------------------------------------------------------------------

def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device out-of-memory error (CUDA's own class or the older RuntimeError)."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_device_memory() -> None:
    """Drop unreachable tensors and hand cached CUDA blocks back, so a retry has room."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_with_oom_retry(fn: Callable[[int], T], batch_size: int, *, min_batch: int = 1,
                       on_retry: Callable[[int], object] | None = None) -> T:
    """Call ``fn(batch_size)``; on out-of-memory, free memory and retry with half the batch size.

    ``fn`` receives the batch size to use (how many images it may put on the device at once) and
    must be safe to call again from scratch. Halving stops at ``min_batch``; if that still runs
    out of memory, :class:`OutOfDeviceMemoryError` is raised with a message for the user.
    ``on_retry(new_batch_size)`` is called before each retry (for a log line or a UI notice).
    Errors other than out-of-memory propagate unchanged.
    """
    if batch_size < 1 or min_batch < 1:
        raise ValueError("batch sizes must be at least 1")
    size = max(int(batch_size), int(min_batch))
    while True:
        try:
            return fn(size)
        except Exception as exc:  # noqa: BLE001 - re-raised below unless it is an OOM
            if not is_out_of_memory(exc):
                raise
        # Outside the except block: the traceback (and the tensors its frames hold) is gone,
        # so empty_cache can really return that memory.
        free_device_memory()
        if size <= min_batch:
            raise OutOfDeviceMemoryError(OOM_MESSAGE)
        size = max(size // 2, min_batch)
        if on_retry is not None:
            on_retry(size)


def map_batches(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, batch_size: int, *,
                min_batch: int = 1, combine: Callable[[Sequence[torch.Tensor]], T] = torch.cat,
                on_retry: Callable[[int], object] | None = None) -> T:
    """Apply ``fn`` to ``inputs`` in chunks along dimension 0 and ``combine`` the outputs.

    On out-of-memory, the chunks already done are kept and the rest is split with half the
    chunk size (down to ``min_batch``, then :class:`OutOfDeviceMemoryError`). ``fn`` must treat
    rows independently (a batched classifier, defence or attack with a per-row seed), so the
    result does not depend on the chunking.
    """
    if batch_size < 1 or min_batch < 1:
        raise ValueError("batch sizes must be at least 1")
    size = max(int(batch_size), int(min_batch))
    outputs: list[torch.Tensor] = []
    start, total = 0, inputs.shape[0]
    while start < total:
        try:
            outputs.append(fn(inputs[start:start + size]))
            start += size
            continue
        except Exception as exc:  # noqa: BLE001
            if not is_out_of_memory(exc):
                raise
        free_device_memory()
        if size <= min_batch:
            raise OutOfDeviceMemoryError(OOM_MESSAGE)
        size = max(size // 2, min_batch)
        if on_retry is not None:
            on_retry(size)
    return combine(outputs)
