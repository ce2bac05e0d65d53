"""Running heavy work from a page: one place for the device queue, progress and errors.

Every page calls :func:`run_heavy` around a pd_core call that uses the model. It waits for a turn
on the device (:func:`pd_core.scheduler.device_slot`: first come, first served, with the user's
place in the line shown), and turns every failure into a plain-language message on the page
(``st.error``) instead of a traceback; the full traceback goes to the server log only.
"""
from __future__ import annotations

import logging
from typing import Callable, TypeVar

import streamlit as st

T = TypeVar("T")
log = logging.getLogger("pixel_deflection_app")

QUEUE_TIMEOUT_S = 600.0


class Failed(Exception):
    """Raised by :func:`run_heavy` after it has shown the error, so callers can stop cleanly."""


def user_message(exc: BaseException, what: str) -> str:
    """One sentence for the user: what went wrong and what to do next."""
    from pd_core.images import InputError
    from pd_core.models import ModelUnavailableError

    try:
        from pd_core.scheduler import OutOfDeviceMemoryError, QueueTimeoutError
    except ImportError:  # pragma: no cover - the scheduler ships with pd_core
        OutOfDeviceMemoryError = QueueTimeoutError = ()  # noqa: N806
    try:
        from pd_core.attacks import AttackCancelled
    except ImportError:  # pragma: no cover
        AttackCancelled = ()  # noqa: N806
    if isinstance(exc, (InputError, ModelUnavailableError, QueueTimeoutError, OutOfDeviceMemoryError)):
        return str(exc)
    if AttackCancelled and isinstance(exc, AttackCancelled):
        return "The attack was stopped before it finished; press Run again to start it over."
    if isinstance(exc, ValueError):
        return f"These settings cannot be used for {what}: {exc}. Please change them and try again."
    if isinstance(exc, MemoryError):
        return (f"The server ran out of memory during {what}; please try a smaller image, fewer "
                "deflections or a faster attack preset.")
    return (f"Something went wrong during {what}; please try again, or choose another image or attack. "
            "(The details are in the server log.)")


def run_heavy(fn: Callable[[], T], what: str, device: str, *, waiting=None) -> T:
    """Run ``fn()`` holding a slot on ``device``; show errors in plain words and raise :class:`Failed`.

    what : a few words for messages ("the attack", "the defence").
    waiting : an ``st.empty()`` placeholder where the queue position is written while waiting.
    """
    placeholder = waiting if waiting is not None else st.empty()

    def on_wait(position: int) -> None:
        placeholder.info(f"The server is busy with other people's work: you are number {position} in "
                         f"the queue for {what}. It starts by itself.", icon=":material/hourglass_top:")

    try:
        from pd_core.scheduler import device_slot

        with device_slot(device, on_wait=on_wait, timeout=QUEUE_TIMEOUT_S):
            placeholder.empty()
            return fn()
    except Exception as exc:  # noqa: BLE001 - Streamlit's own control flow is a BaseException
        log.exception("%s failed", what)
        placeholder.empty()
        st.error(user_message(exc, what), icon=":material/error:")
        raise Failed(str(exc)) from exc
