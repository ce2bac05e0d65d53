"""Process-wide caches: models, the gallery, model statuses (shared by every user of the server).

Nothing heavy is imported at module level (torch, the models): Home imports this module before
it draws its first line, and must show its text within a second or two of the visitor connecting.

``st.cache_resource`` returns the *same* object to every session, so a cached model must never be
mutated: :func:`pd_core.load_model` gives a frozen, eval-mode classifier whose ``train()`` is a
no-op and whose parameters have ``requires_grad=False``.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict

import streamlit as st

log = logging.getLogger("pixel_deflection_app")


@st.cache_resource(show_spinner="Loading the classifier (once per server)…")
def get_model(name: str, device: str):
    from pd_core.models import load_model
    from pd_core.runtime import configure_from_env

    configure_from_env()
    return load_model(name, device=device)


def import_compute_stack() -> None:
    """Import the computing stack (torch, torchvision, timm, Foolbox, Plotly, the attacks and the
    story) in the calling thread, in one fixed order.

    Why not in the warm-up thread: a module imported by two threads at once, each from another
    entry point, can meet CPython's import deadlock detector (seen: the warm-up importing timm ->
    torchvision while a page's script imported torchvision itself; CPython raised
    ``_DeadlockError: deadlock detected by _ModuleLock('torchvision.models._meta')`` in the warm-up,
    which then never loaded the model nor computed the one-click story). Done here, after the first
    page has been drawn, the page's own later imports find every module already loaded.
    """
    import torch  # noqa: F401
    import torchvision  # noqa: F401
    import timm  # noqa: F401
    import foolbox  # noqa: F401  (about a second to import)
    import plotly.graph_objects  # noqa: F401

    import pd_core.attacks  # noqa: F401
    import pd_core.story  # noqa: F401


@st.cache_resource(show_spinner=False)
def start_warm_up() -> threading.Thread:
    """Once per server: import the attack stack (:func:`import_compute_stack`, in the caller's
    thread), then load the default model in a background thread, so the first visitor's first
    click does not pay for them. ``app.py`` calls it after the page has
been drawn, so the first page never waits for it (``PD_WARM_UP=0`` turns the work off)."""
    device = device_name()
    stories = story_cache()
    enabled = os.environ.get("PD_WARM_UP", "1") != "0"  # tests that start and stop many apps turn it off
    if enabled:
        import_compute_stack()

    def work() -> None:
        if not enabled:
            return
        try:
            from pd_core.models import DEFAULT_MODEL, load_model
            from pd_core.runtime import configure_from_env

            configure_from_env()
            model = load_model(DEFAULT_MODEL, device=device)
            # The one-click story itself (default photo and settings), into the server's story cache:
            # the first visitor's first Run is then an instant answer, and every code path a story
            # takes (attack, maps, defence, Ens-10, figures) has run once before anyone waits on it.
            from .story import warm_default_story

            warm_default_story(model, device, stories)
            from .present_store import start_presentation_warm_up

            start_presentation_warm_up(device)  # the Present page's gallery runs, at low priority
        except Exception:  # noqa: BLE001 - the page will report the problem when it loads the model
            log.exception("warm-up failed")

    thread = threading.Thread(target=work, name="pd-warm-up", daemon=True)
    thread.start()
    return thread


class ResultCache:
    """Finished computations (a story with its figures, the Explorer's stages and curves), shared by
    every session of the server, at most ``size`` of them, least recently used first out.

    Each depends only on its inputs and seed, so the same settings on the same photo give the
    same numbers for everyone: the second asker gets them at once. :meth:`get_or_compute` runs
    ``compute`` once per key even when two threads ask together (the warm-up and the first click):
    the second waits for the first's answer instead of computing it again beside it.
    """

    def __init__(self, size: int = 16):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._computing: dict[tuple, threading.Lock] = {}

    def get(self, key: tuple):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key: tuple, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def snapshot(self) -> dict:
        """The entries now held, as a plain dict (oldest first)."""
        with self._lock:
            return dict(self._items)

    def get_or_compute(self, key: tuple, compute):
        found = self.get(key)
        if found is not None:
            return found
        with self._lock:
            key_lock = self._computing.setdefault(key, threading.Lock())
        try:
            with key_lock:
                found = self.get(key)  # computed by another thread while this one waited
                if found is None:
                    found = compute()
                    self.put(key, found)
        finally:
            with self._lock:
                self._computing.pop(key, None)
        return found


@st.cache_resource(show_spinner=False)
def story_cache() -> ResultCache:
    """The server's stories (``ui.state.StoredResult``, keyed by ``ui.story.settings_key``)."""
    return ResultCache()


@st.cache_resource(show_spinner=False)
def explorer_cache() -> ResultCache:
    """The server's Explorer results (stages and curves, keyed by ``ui.explorer``)."""
    return ResultCache(size=32)


@st.cache_resource(show_spinner=False)
def device_name() -> str:
    """The device the app computes on: CUDA when present (the card picked by CUDA_VISIBLE_DEVICES)."""
    from pd_core.models import default_device

    return str(default_device())


@st.cache_resource(show_spinner=False)
def device_description() -> str:
    import torch

    device = torch.device(device_name())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return f"CPU ({torch.get_num_threads()} threads)"


@st.cache_resource(show_spinner=False, ttl=600)
def model_statuses():
    """Which models can be loaded here (re-checked every 10 minutes: an admin may add weights)."""
    from pd_core.models import list_models

    return list_models()


@st.cache_resource(show_spinner=False)
def gallery_images():
    from pd_core.images import gallery

    return gallery()


@st.cache_resource(show_spinner=False, max_entries=64)
def gallery_pil(path: str):
    """The decoded gallery photo (read-only: callers never modify a PIL image in place)."""
    from pd_core.images import open_image

    return open_image(path)


def model_tensor(image, model):
    """The current image (ui.state.CurrentImage) preprocessed for ``model``: (1, 3, S, S) on its device.

    Kept in the session state per (image, model), so a rerun never redoes the resize."""
    from pd_core.images import to_model_tensor

    cache = st.session_state.setdefault("_tensor_cache", {})
    key = (image.key, model.name, str(model.device))
    if key not in cache:
        cache.clear()  # one image at a time per session is enough
        spec = model.spec
        cache[key] = to_model_tensor(image.pil, spec.input_size, spec.resize, spec.interpolation,
                                     model.device)
    return cache[key]
