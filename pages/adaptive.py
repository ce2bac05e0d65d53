"""Adaptive attack (SPEC §3, issue 14): the ladder of attackers who know more and more about the defence.

Three tabs: the whole ladder on a few photos of the project's folder (every rung, both losses, the
baselines, the sanity checks, the verdict, the reproducing command and the JSON report, through
:func:`pd_core.adaptive.evaluate_ladder`, drawn by :mod:`ui.ladder`); one attacker on the current photo
(:func:`pd_core.adaptive.adaptive_demo`); and a saved folder run read back from its CSV (both in
:mod:`ui.adaptive_page`).
"""
import os
from pathlib import Path

import streamlit as st

from ui.adaptive_page import EXPLANATION, one_photo, saved_run
from ui.components import data_folder_argument
from ui.ladder import ladder_section
from ui.sidebar import settings

settings = settings()

st.title("Adaptive attack")
st.caption("The honest test of a defence: an attacker who knows exactly how it works. Pixel deflection was "
           "broken this way a few months after it was published (Athalye & Carlini, 2018).")
with st.expander("Why a random, non-differentiable defence can still be attacked", expanded=True):
    st.markdown(EXPLANATION)

_dev = (Path(os.environ["PD_IMAGE_ROOT"]) if os.environ.get("PD_IMAGE_ROOT") else
        Path(__file__).resolve().parents[2] / "shared") / "imagenet-dev"
_images = data_folder_argument(_dev) if _dev.is_dir() else None
ladder_tab, photo_tab, saved_tab = st.tabs(["The whole ladder", "One photo, one attacker", "A saved run"])
with ladder_tab:
    ladder_section(settings, _dev if _dev.is_dir() else None, _images)
with photo_tab:
    one_photo(settings)
with saved_tab:
    saved_run(_images)
