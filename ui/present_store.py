"""Server-wide store of the Present page's runs, and the background warm-up that fills it.

One :class:`ui.present_run.PresentationRun` per (photo, model, device, seed, defence, ensemble size)
is kept for the whole server (a process-wide dict behind a lock: every visitor and the warm-up
thread share it), so a gallery photo's story is computed once per server and every step of it
appears at once. Uploads are kept in the visitor's own session instead (:mod:`ui.present`).

Low priority. :func:`start_presentation_warm_up` computes the gallery's runs in a background
thread, the default photo first, with the paper's defence and seed 0 (the sidebar's defaults). It
starts a photo only when, for :data:`QUIET_S` seconds, nobody has held or waited for the device
(:func:`pd_core.scheduler.queue_for`) **and** no visitor's page has been running
(:mod:`ui.activity`: on a 2-core server a page's imports, figures and transfer need the cores as
much as its attack does). It holds the device slot like any page does, and gives way the moment a
visitor's page starts or a visitor's work joins the queue: ``should_stop`` is polled before every
attack step and between the story's stages (:func:`ui.present_run.compute_presentation`), the
photo is abandoned and tried again later. So the warm-up never makes a visitor wait for more than
one attack step or one stage (well under a second on the CPU).
"""
from __future__ import annotations

import logging
import os
import threading
import time

from . import activity

log = logging.getLogger("pixel_deflection_app")

_runs: dict[tuple, object] = {}
_lock = threading.Lock()
_status = {"done": 0, "total": 0, "running": None}

IDLE_POLL_S = 0.5  # how often the warm-up looks whether the device is free again
# A photo starts only after the device has been free this long: a visitor's clicks come in bursts
# (Run, change a setting, Run again), and the warm-up should not squeeze in between them.
QUIET_S = 5.0


def run_key(image_key: str, model: str, device: str, seed: int, config, n_ensemble: int) -> tuple:
    return (image_key, model, str(device), int(seed), config, int(n_ensemble))


def get(key: tuple):
    with _lock:
        return _runs.get(key)


def put(key: tuple, run) -> None:
    with _lock:
        _runs[key] = run


def warm_up_status() -> dict:
    """{"done": gallery photos ready, "total": photos to do, "running": the photo being computed or None}."""
    with _lock:
        return dict(_status)


def gallery_order(entries, first_stem: str):
    """The gallery with the story's photo first (the one a presenter opens with)."""
    return sorted(entries, key=lambda g: g.path.stem != first_stem)


def _device_busy(device: str) -> bool:
    from pd_core.scheduler import queue_for

    queue = queue_for(device)
    return queue.running > 0 or queue.waiting > 0


def _visitor_came(queue) -> bool:
    """The warm-up's ``should_stop``: a visitor's page is running or their work waits for the device."""
    return queue.waiting > 0 or activity.active() > 0


def warm_gallery(device: str, *, stop: threading.Event | None = None, idle_poll: float = IDLE_POLL_S,
                 limit: int | None = None, quiet_s: float = QUIET_S) -> int:
    """Compute every gallery photo's run (the first ``limit`` only, in :func:`gallery_order`) with
    the default settings into the store; returns how many were computed. Blocks (call it from a
    thread); ``stop`` ends it between photos."""
    from pd_core.defence import DefenceConfig
    from pd_core.images import gallery, open_image, to_model_tensor
    from pd_core.models import DEFAULT_MODEL, load_model
    from pd_core.scheduler import queue_for

    from .present_run import compute_presentation
    from .state import DEFAULT_GALLERY_STEM, ENSEMBLE_SIZE

    model = load_model(DEFAULT_MODEL, device=device)
    config = DefenceConfig()
    queue = queue_for(device)
    entries = gallery_order(gallery(), DEFAULT_GALLERY_STEM)[:limit]
    with _lock:
        _status["total"] = len(entries)
    computed = 0
    pending = list(entries)
    quiet_since = None
    while pending and not (stop and stop.is_set()):
        entry = pending[0]
        key = run_key(f"gallery:{entry.path}", model.name, device, 0, config, ENSEMBLE_SIZE)
        if get(key) is not None:  # a visitor computed it already
            pending.pop(0)
            continue
        if _device_busy(device):
            quiet_since = None
            time.sleep(idle_poll)
            continue
        quiet_since = quiet_since or time.monotonic()
        if min(time.monotonic() - quiet_since, activity.idle_for()) < quiet_s:
            time.sleep(idle_poll)
            continue
        spec = model.spec
        x = to_model_tensor(open_image(entry.path), spec.input_size, spec.resize, spec.interpolation, model.device)
        with _lock:
            _status["running"] = entry.path.stem
        try:
            with queue.slot():
                run = compute_presentation(model, x, entry.label_index, config=config, seed=0,
                                           n_ensemble=ENSEMBLE_SIZE, image_name=entry.name,
                                           image_path=entry.path.stem,
                                           should_stop=lambda: _visitor_came(queue))
        except Exception as exc:  # noqa: BLE001 - a cancelled or failed photo is retried or skipped
            from pd_core.attacks import AttackCancelled

            if isinstance(exc, (AttackCancelled, InterruptedError)):
                continue  # a visitor came: give way, try this photo again when the device is free
            log.exception("presentation warm-up failed on %s", entry.path.stem)
            pending.pop(0)
            continue
        finally:
            with _lock:
                _status["running"] = None
        put(key, run)
        computed += 1
        pending.pop(0)
        with _lock:
            _status["done"] += 1
    return computed


def start_presentation_warm_up(device: str) -> threading.Thread | None:
    """Start :func:`warm_gallery` once per process in a daemon thread. ``PD_PRESENT_WARM_UP=N``
    warms only the first N photos (the story's photo first; tests and benchmarks use 1), ``0`` or
    ``PD_WARM_UP=0`` none. Returns the thread (the same one on later calls)."""
    global _thread
    limit = os.environ.get("PD_PRESENT_WARM_UP", "").strip()
    limit = int(limit) if limit.isdigit() else None
    if os.environ.get("PD_WARM_UP", "1") == "0" or limit == 0:
        return None
    with _lock:
        if _thread is None:
            def work() -> None:
                try:
                    warm_gallery(device, limit=limit)
                except Exception:  # noqa: BLE001 - the page computes on demand instead
                    log.exception("presentation warm-up failed")

            _thread = threading.Thread(target=work, name="pd-present-warm-up", daemon=True)
            _thread.start()
        return _thread


_thread: threading.Thread | None = None
