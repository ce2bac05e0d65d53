"""The sidebar every page shares: model, device, seed and the defence's parameters.

Every page calls :func:`settings` (or :func:`render_sidebar`, the same thing) near its top and
uses the :class:`Settings` it returns. The page draws the sidebar, not ``app.py``: Streamlit's
AppTest drops what an ``st.navigation`` entrypoint draws after the first run. The sidebar is
drawn by exactly one call per run: call it once per page (a second call in the same run is a
duplicate-widget error).
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from . import state
from .cache import device_description, device_name, model_statuses

_SETTINGS = "_settings"

METHOD_TITLES = {"bayes": "BayesShrink (paper)", "visu": "VisuShrink", "sure": "SUREShrink"}
WAVELET_TITLES = {"db1": "db1 (paper)", "db2": "db2", "haar": "haar"}


@dataclass(frozen=True)
class Settings:
    """What the sidebar says, as plain values. ``config`` is a pd_core DefenceConfig (the defence's
    parameters); ``defence`` the registry entry that defends on Attack & Defend."""

    model_name: str
    model_title: str
    device: str
    seed: int
    config: object
    n_ensemble: int = state.ENSEMBLE_SIZE
    defence: str = state.DEFAULT_DEFENCE

    @property
    def key(self) -> tuple:
        return (self.model_name, self.device, self.seed, self.config, self.n_ensemble, self.defence)


def default_settings(model_name: str, model_title: str, device: str, config) -> Settings:
    """The settings of a fresh session (what the sidebar shows before anyone touches it)."""
    return Settings(model_name=model_name, model_title=model_title, device=device, seed=0, config=config)


def defence_choices() -> list[str]:
    """The defences a visitor can pick: the registry's paper, zoo, baseline and (operator) plugin
    entries, in the registry's order (the paper's first)."""
    from pd_core.defences import defence_names

    return defence_names(groups=("paper", "zoo", "baseline", "plugin"))


def render_sidebar(defence_expanded: bool = False) -> Settings:
    """Draw the shared sidebar and return the settings (call once per run)."""
    from pd_core.defence import DefenceConfig

    ss = st.session_state
    state.init_defaults()
    with st.sidebar:
        statuses = model_statuses()
        available = [s for s in statuses if s.available]
        unavailable = [s for s in statuses if not s.available]
        titles = {s.name: s.title for s in statuses}
        names = [s.name for s in available]
        if not names:
            st.error("No classifier can be loaded on this server; ask the administrator to run "
                     "`pip install -r requirements.txt`.")
            st.stop()
        if ss.get(state.MODEL) not in names:
            ss[state.MODEL] = names[0]
        st.selectbox("Classifier", names, format_func=lambda n: titles[n], key=state.MODEL,
                     help="The ImageNet model that is attacked and defended. EfficientNet-Lite0 ships "
                          "with the app; the paper's models need their weight files on the server.")
        if unavailable:
            with st.expander(f"{len(unavailable)} more model(s) unavailable here"):
                for s in unavailable:
                    st.markdown(f":gray[**{s.title}**: unavailable — {s.reason}]")
        device = device_name()
        st.caption(f"Computing on: **{device_description()}**")
        st.number_input("Random seed", min_value=0, max_value=2**31 - 1, step=1, key=state.SEED,
                        help="Fixes every random choice (which pixels are deflected, PGD's start): the "
                             "same seed gives the same numbers, here and on the command line.")

        _defence_controls(defence_expanded)

    config = DefenceConfig(**{field: ss[key] for key, field in state.DEFENCE_KEYS.items()})
    result = Settings(model_name=ss[state.MODEL], model_title=titles[ss[state.MODEL]], device=device,
                      seed=int(ss[state.SEED]), config=config, defence=ss[state.DEFENCE])
    ss[_SETTINGS] = result
    return result


def _defence_controls(defence_expanded: bool) -> None:
    """The defence picker (from the registry) and the defence's parameters (paper defaults)."""
    from pd_core.defences import defence_info

    ss = st.session_state
    choices = defence_choices()
    if ss.get(state.DEFENCE) not in choices:
        ss[state.DEFENCE] = state.DEFAULT_DEFENCE if state.DEFAULT_DEFENCE in choices else choices[0]
    st.selectbox("Defence", choices, format_func=lambda n: defence_info(n).title, key=state.DEFENCE,
                 help="What stands between the photo and the classifier on Attack & Defend: the paper's "
                      "pixel deflection, or another defence of the lab's registry, to compare.")
    st.caption(defence_info(ss[state.DEFENCE]).summary)
    with st.expander("Defence parameters", expanded=defence_expanded):
        st.caption("The paper's values are the defaults. Every page uses these.")
        st.slider("Deflections K", 0, 2000, step=10, key="def_deflections",
                  help="How many pixel values are replaced by a random neighbour's (paper: 100).")
        st.slider("Window r (pixels)", 0, 40, step=1, key="def_window",
                  help="The neighbour is picked within r pixels in each direction (paper: 10).")
        st.toggle("Guide with the activation map (R-CAM)", key="def_use_map",
                  help="On: pixels on the object are deflected less often (paper). Off: uniformly.")
        st.slider("Denoising strength σ", 0.0, 0.2, step=0.005, format="%.3f", key="def_sigma",
                  help="Noise level the wavelet denoiser removes; 0 turns denoising almost off "
                       "(paper: 0.04).")
        st.selectbox("Threshold rule", list(METHOD_TITLES), format_func=METHOD_TITLES.get,
                     key="def_method",
                     help="How the wavelet threshold is chosen per band (paper: BayesShrink).")
        st.radio("Thresholding", ["soft", "hard"], horizontal=True, key="def_mode",
                 help="Soft shrinks every coefficient, hard only zeroes the small ones (paper: soft).")
        st.selectbox("Wavelet", list(WAVELET_TITLES), format_func=WAVELET_TITLES.get, key="def_wavelet",
                     help="The wavelet family of the transform (paper: db1).")
        st.toggle("Denoise in YCbCr", key="def_ycbcr",
                  help="Denoise brightness and colour separately, as the paper does; off: in RGB.")
        st.button("Reset to the paper's values", on_click=state.reset_defence,
                  help="Back to K = 100, r = 10, σ = 0.04, BayesShrink, soft, db1, YCbCr, R-CAM on.")


def settings(defence_expanded: bool = False) -> Settings:
    """Draw the shared sidebar and return the settings of this run (call once per page run)."""
    return render_sidebar(defence_expanded=defence_expanded)
