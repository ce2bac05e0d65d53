"""Session state of one browser tab: keys, defaults, the current image and the last results.

Everything a user chose or computed lives in ``st.session_state`` under the keys below, so
moving between pages loses nothing. Widgets never pass ``value=``/``index=``: their defaults
are written into the state once (:func:`init_defaults`), which avoids Streamlit's warning about a
widget "created with a default value but also had its value set via the Session State API" and
lets a reset button simply rewrite the keys.

Streamlit treats a widget drawn by another page as a new widget (its id depends on the page) and
forgets the value of a widget that is not drawn in a run. :func:`keep` handles both: it re-assigns
the key before the widget is drawn (Streamlit's documented way to carry a widget's value across
pages) or restores a private copy. :func:`sticky` adds the callback that updates that copy:
``st.selectbox("Attack", options, **sticky("attack_name", "fgsm"))``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import streamlit as st

# --- keys --------------------------------------------------------------------------------------
MODEL = "model_name"
SEED = "seed"
DEFENCE = "defence_name"       # the registry entry that defends on Attack & Defend
DEFENCE_KEYS = {  # session key -> DefenceConfig field
    "def_deflections": "deflections",
    "def_window": "window",
    "def_sigma": "sigma",
    "def_method": "method",
    "def_mode": "mode",
    "def_wavelet": "wavelet",
    "def_ycbcr": "ycbcr",
    "def_use_map": "use_map",
}
IMAGE = "current_image"        # CurrentImage
RESULT = "attack_result"       # StoredResult of the last Attack & Defend run
UPLOAD_SEEN = "upload_seen"    # file_id of the last upload handled
UPLOAD_ERROR = "upload_error"  # (file_id, message) of the last refused upload
ATTACK_NAME = "attack_name"
ATTACK_PRESET = "attack_preset"

# The story one click tells: this gallery photo is classified correctly, FGSM at the paper's
# budget fools the model, and both the single defence and Ens-10 bring the answer back (seed 0,
# EfficientNet-Lite0). On most gallery photos the defence does *not* win against FGSM on this
# model; the Home page says so.
DEFAULT_GALLERY_STEM = "imagenet_04_949"  # strawberry (Foolbox sample 04)
DEFAULT_ATTACK = "fgsm"
DEFAULT_PRESET = "paper"
DEFAULT_DEFENCE = "pixel_deflection"  # pd_core.story.DEFAULT_DEFENCE (not imported here: torch)
ENSEMBLE_SIZE = 10


def defence_defaults() -> dict[str, Any]:
    from pd_core.defence import DefenceConfig

    paper = DefenceConfig()
    return {key: getattr(paper, name) for key, name in DEFENCE_KEYS.items()}


def keep(key: str, default: Any = None) -> str:
    """Call before drawing the widget ``key``: it shows the user's last value, else ``default``."""
    ss = st.session_state
    if key in ss:
        ss[key] = ss[key]  # marks the value as set by the app, so a page's new widget takes it
    else:
        ss[key] = ss.get(f"_keep_{key}", default)
    return key


def init_defaults() -> None:
    """Keep (or first set) the shared settings of the sidebar; called at the top of every page."""
    from pd_core.models import DEFAULT_MODEL

    keep(MODEL, DEFAULT_MODEL)
    keep(SEED, 0)
    keep(DEFENCE, DEFAULT_DEFENCE)
    for key, value in defence_defaults().items():
        keep(key, value)


def reset_defence() -> None:
    """Callback: the paper's defence parameters again."""
    for key, value in defence_defaults().items():
        st.session_state[key] = value


def sticky(key: str, default: Any = None) -> dict:
    """Widget kwargs that keep ``key``'s value across pages: ``st.slider(..., **sticky("eps", 8.0))``.

    The first time, the state gets ``default``; afterwards the last value the user chose.
    """
    keep(key, default)
    return {"key": key, "on_change": _remember, "args": (key,)}


def _remember(key: str) -> None:
    st.session_state[f"_keep_{key}"] = st.session_state[key]


def set_sticky(key: str, value: Any) -> None:
    """Set a sticky widget's value from code (e.g. when a preset is chosen)."""
    st.session_state[key] = value
    st.session_state[f"_keep_{key}"] = value


# --- the current image ---------------------------------------------------------------------------
@dataclass
class CurrentImage:
    """The image the pages work on. ``pil`` is the decoded 8-bit RGB picture at its own size;
    the model-sized tensor is made from it per model (:func:`ui.cache.model_tensor`)."""

    name: str
    source: str                 # "gallery" or "upload"
    pil: Any                    # PIL.Image.Image (RGB)
    label_index: int | None     # the true class, None for an upload
    path: str | None = None     # gallery file (for the command line)
    uid: str = ""               # changes whenever the image changes

    @property
    def key(self) -> str:
        return self.uid or self.name


def current_image() -> CurrentImage | None:
    return st.session_state.get(IMAGE)


def set_current_image(image: CurrentImage) -> None:
    old = st.session_state.get(IMAGE)
    st.session_state[IMAGE] = image
    if old is None or old.key != image.key:
        st.session_state.pop(RESULT, None)  # the old results belong to the old image


# --- results ------------------------------------------------------------------------------------
@dataclass
class StoredResult:
    """A finished Attack & Defend run and the settings it was made with (to say when they changed)."""

    result: Any                 # pd_core.story.DemoResult
    image_key: str
    settings_key: tuple
    figures: dict = field(default_factory=dict)  # cached Plotly figures, built once per result


def stored_result() -> StoredResult | None:
    return st.session_state.get(RESULT)


def store_result(stored: StoredResult) -> None:
    st.session_state[RESULT] = stored
