"""The per-device queue is fair, bounded, reports positions and never deadlocks; OOM retries halve."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from pd_core import scheduler
from pd_core.scheduler import (OOM_MESSAGE, DeviceQueue, OutOfDeviceMemoryError, QueueTimeoutError,
                               device_slot, map_batches, run_with_oom_retry)

pytestmark = pytest.mark.timeout(60)


def _wait_until(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


def _start_in_order(queue: DeviceQueue, n: int, body, on_wait_factory=None):
    """Start n threads that each take a slot, making sure thread i queues before thread i+1."""
    threads = []
    for i in range(n):
        def run(i=i):
            on_wait = on_wait_factory(i) if on_wait_factory else None
            with queue.slot(on_wait=on_wait, poll_interval=0.05):
                body(i)
        t = threading.Thread(target=run, daemon=True)
        before = queue.waiting + queue.running
        t.start()
        # Thread i has taken its ticket once the line (or the running count) grew.
        _wait_until(lambda: queue.waiting + queue.running > before)
        threads.append(t)
    return threads


def test_fifo_order_under_contention():
    queue = DeviceQueue("test", slots=1)
    gate = threading.Event()
    order = []

    def blocker():
        with queue.slot():
            gate.wait(10)

    holder = threading.Thread(target=blocker, daemon=True)
    holder.start()
    _wait_until(lambda: queue.running == 1)

    # 12 threads queue up in a known order behind the holder; a non-FIFO lock would let the
    # scheduler's wake-up order decide (and with 12 waiters, almost never the arrival order).
    threads = _start_in_order(queue, 12, lambda i: (order.append(i), time.sleep(0.001)))
    assert queue.waiting == 12
    gate.set()
    for t in threads + [holder]:
        t.join(10)
    assert order == list(range(12))
    assert queue.running == 0 and queue.waiting == 0


def test_position_callbacks_count_down():
    queue = DeviceQueue("test", slots=1)
    gate = threading.Event()
    positions: dict[int, list[int]] = {i: [] for i in range(4)}
    release = [threading.Event() for _ in range(4)]

    def blocker():
        with queue.slot():
            gate.wait(10)

    holder = threading.Thread(target=blocker, daemon=True)
    holder.start()
    _wait_until(lambda: queue.running == 1)
    threads = _start_in_order(queue, 4, lambda i: release[i].wait(10),
                              on_wait_factory=lambda i: positions[i].append)
    _wait_until(lambda: all(positions[i] for i in range(4)))
    # Each waiter first hears its own place: 1 is next in line.
    assert [positions[i][0] for i in range(4)] == [1, 2, 3, 4]
    # Serve one at a time, each time waiting until the last in line has heard its new place
    # (a waiter reports the place it finds when it wakes; it may skip one if two leave at once).
    gate.set()
    for i in range(3):
        _wait_until(lambda i=i: positions[3][-1] == 3 - i)
        release[i].set()
        threads[i].join(10)
    release[3].set()
    threads[3].join(10)
    holder.join(10)
    # The last one moved 4 -> 3 -> 2 -> 1 as the others were served (repeats are heartbeats).
    distinct = [p for k, p in enumerate(positions[3]) if k == 0 or p != positions[3][k - 1]]
    assert distinct == [4, 3, 2, 1]
    # Nobody is told a place once it has its turn, and places never go up.
    for i in range(4):
        assert all(a >= b for a, b in zip(positions[i], positions[i][1:]))


def test_no_callback_when_slot_is_free():
    queue = DeviceQueue("test", slots=1)
    calls = []
    with queue.slot(on_wait=calls.append):
        pass
    assert calls == []


def test_slot_count_is_respected():
    for slots in (1, 3):
        queue = DeviceQueue("test", slots=1)
        lock = threading.Lock()
        active, peak = [0], [0]

        def work(_):
            with queue.slot():
                with lock:
                    active[0] += 1
                    peak[0] = max(peak[0], active[0])
                time.sleep(0.05)
                with lock:
                    active[0] -= 1

        # Everyone queues behind the main thread first, so all are waiting when slots open up.
        queue.acquire()
        threads = [threading.Thread(target=work, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        _wait_until(lambda: queue.waiting == 10)
        queue.set_slots(slots)
        queue.release()
        for t in threads:
            t.join(10)
        assert peak[0] == slots, (slots, peak[0])
        assert queue.running == 0 and queue.waiting == 0


def test_exception_inside_slot_releases_it():
    queue = DeviceQueue("test", slots=1)
    for _ in range(3):
        with pytest.raises(ValueError):
            with queue.slot():
                raise ValueError("boom")
    assert queue.running == 0
    done = threading.Event()

    def other():
        with queue.slot():
            done.set()

    t = threading.Thread(target=other)
    t.start()
    t.join(5)
    assert done.is_set()


def test_waiter_whose_callback_raises_leaves_the_line():
    """Streamlit raises from UI calls when the user leaves the page: the ticket must go away."""
    queue = DeviceQueue("test", slots=1)
    gate = threading.Event()
    errors = []
    positions_after = []

    def blocker():
        with queue.slot():
            gate.wait(10)

    holder = threading.Thread(target=blocker, daemon=True)
    holder.start()
    _wait_until(lambda: queue.running == 1)

    def leaver(position):
        raise KeyboardInterrupt("user left")  # BaseException, like Streamlit's StopException

    def leave():
        try:
            with queue.slot(on_wait=leaver):
                errors.append("got a slot it should not have")
        except KeyboardInterrupt:
            errors.append("left")

    t1 = threading.Thread(target=leave)
    t1.start()
    t1.join(5)
    assert errors == ["left"] and queue.waiting == 0

    # The next waiter is first in line, not second behind a ghost ticket.
    t2 = threading.Thread(target=lambda: queue.acquire(on_wait=positions_after.append) or queue.release())
    t2.start()
    _wait_until(lambda: positions_after)
    assert positions_after[0] == 1
    gate.set()
    t2.join(5)
    holder.join(5)
    assert queue.running == 0 and queue.waiting == 0


def test_timeout_raises_plain_message_and_withdraws():
    queue = DeviceQueue("test", slots=1)
    queue.acquire()
    try:
        result = {}

        def waiter():
            try:
                queue.acquire(timeout=0.2)
            except QueueTimeoutError as exc:
                result["msg"] = str(exc)

        t = threading.Thread(target=waiter)
        t0 = time.monotonic()
        t.start()
        t.join(5)
        assert 0.15 < time.monotonic() - t0 < 3
        assert "busy" in result["msg"] and "try again" in result["msg"]
        assert queue.waiting == 0
    finally:
        queue.release()


def test_reentry_from_same_thread_does_not_deadlock():
    queue = DeviceQueue("test", slots=1)
    with queue.slot():
        with queue.slot():
            assert queue.running == 1
        assert queue.running == 1
    assert queue.running == 0
    with pytest.raises(RuntimeError):
        queue.release()


def test_device_slot_shares_one_queue_per_device(monkeypatch):
    monkeypatch.setattr(scheduler, "_queues", {})
    monkeypatch.setenv("PD_SLOTS_PER_DEVICE", "2")
    with device_slot("cpu") as q1:
        assert q1.slots == 2 and q1.running == 1
        with device_slot(torch.device("cpu")) as q2:  # same thread: re-entry, same queue
            assert q2 is q1 and q1.running == 1
    assert scheduler.queue_for("cuda") is scheduler.queue_for("cuda:0")
    assert scheduler.queue_for("cuda") is not scheduler.queue_for("cpu")
    assert scheduler.queue_for(torch.zeros(1)) is scheduler.queue_for("cpu")


@pytest.mark.parametrize("raw", ["0", "-1", "two"])
def test_bad_slot_setting_is_a_plain_error(monkeypatch, raw):
    monkeypatch.setenv("PD_SLOTS_PER_DEVICE", raw)
    with pytest.raises(ValueError, match="PD_SLOTS_PER_DEVICE"):
        scheduler.slots_from_env()


# --- out-of-memory ----------------------------------------------------------------------------

def _fake_oom():
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_oom_retry_halves_until_it_fits(monkeypatch):
    freed = []
    monkeypatch.setattr(scheduler, "free_device_memory", lambda: freed.append(1))
    tried, notices = [], []

    def work(batch_size):
        tried.append(batch_size)
        if batch_size > 5:  # the simulated card holds at most 5 images
            raise _fake_oom()
        return batch_size * 10

    assert run_with_oom_retry(work, 64, on_retry=notices.append) == 40
    assert tried == [64, 32, 16, 8, 4]
    assert notices == [32, 16, 8, 4]
    assert len(freed) == 4


def test_oom_retry_gives_up_with_plain_message(monkeypatch):
    monkeypatch.setattr(scheduler, "free_device_memory", lambda: None)
    tried = []

    def work(batch_size):
        tried.append(batch_size)
        raise _fake_oom()

    with pytest.raises(OutOfDeviceMemoryError) as info:
        run_with_oom_retry(work, 10, min_batch=2)
    assert tried == [10, 5, 2]
    assert str(info.value) == OOM_MESSAGE
    # The old-style RuntimeError text is recognised too.
    tried.clear()
    with pytest.raises(OutOfDeviceMemoryError):
        run_with_oom_retry(lambda b: (tried.append(b), (_ for _ in ()).throw(
            RuntimeError("CUDA error: out of memory")))[1], 3)
    assert tried == [3, 1]


def test_other_errors_are_not_retried():
    tried = []

    def work(batch_size):
        tried.append(batch_size)
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        run_with_oom_retry(work, 16)
    assert tried == [16]


def test_map_batches_keeps_done_chunks_and_matches_unchunked(monkeypatch):
    monkeypatch.setattr(scheduler, "free_device_memory", lambda: None)
    inputs = torch.arange(23, dtype=torch.float32).view(23, 1) * torch.ones(1, 3)
    seen = []
    budget = [8]  # the "card" shrinks after the first chunk, as when another user starts work

    def fn(chunk):
        seen.append(chunk.shape[0])
        if chunk.shape[0] > budget[0]:
            raise _fake_oom()
        budget[0] = 3
        return chunk.sum(dim=1) * 2

    out = map_batches(fn, inputs, 8)
    assert torch.equal(out, inputs.sum(dim=1) * 2)
    # 8 fits, the next 8 does not, 4 does not, then 2s until the end (23 = 8 + 2*7 + 1).
    assert seen[:4] == [8, 8, 4, 2]
    assert sum(s for s in seen if s <= 2) + 8 == 23


@pytest.mark.gpu
def test_real_cuda_oom_is_retried_with_smaller_batches():
    """On a real card: asking for 8/3 of its memory fails, halving reaches a size that fits."""
    total = torch.cuda.get_device_properties(0).total_memory
    tried = []

    def work(batch_size):
        tried.append(batch_size)
        block = torch.empty(batch_size * (total // 6), dtype=torch.uint8, device="cuda")
        return block.numel()

    allocated = run_with_oom_retry(work, 16)
    assert tried[:3] == [16, 8, 4] and tried[-1] <= 4  # 16/6 and 8/6 of the card cannot fit
    assert allocated == tried[-1] * (total // 6)
    assert torch.cuda.memory_allocated() < total // 6  # the successful block was freed on return
