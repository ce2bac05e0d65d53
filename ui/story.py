"""The attack controls and the run of the Attack & Defend story (also used by Home's "try it").

Parameters are shown in the units people read: L-infinity budgets and step sizes in /255 of
the pixel range, the others as the attack takes them. Only the values the user moved away from
the preset are passed to the attack, so the preset's own values stay exact (and the command line
shows only the real overrides).
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from . import state
from .cache import get_model, model_tensor, story_cache
from .components import build_figures, progress_reporter
from .compute import Failed, run_heavy

PRESET_HELP = {
    "interactive": "fast enough to click on a CPU",
    "paper": "about the perturbation size of the paper's Table 1",
    "large": "the paper's large-perturbation rows: stronger, more visible",
}


@dataclass(frozen=True)
class ParamUI:
    label: str
    help: str
    minimum: float
    maximum: float
    step: float
    per_255: bool = False   # shown ×255 (budgets and step sizes in pixel units)
    integer: bool = False


_EPS = ParamUI("Budget ε (/255)", "The largest change allowed to any pixel value, in steps of 1/255 "
               "(8 = about 3% of the range).", 0.5, 32.0, 0.5, per_255=True)
_STEPSIZE = ParamUI("Step size (/255)", "How far each iteration moves, in /255.", 0.1, 8.0, 0.1, per_255=True)
_STEPS = ParamUI("Iterations", "More iterations: a stronger, slower attack.", 1, 500, 1, integer=True)
PARAMS: dict[tuple[str, str], ParamUI] = {
    ("fgsm", "eps"): _EPS,
    ("igsm", "eps"): _EPS, ("igsm", "steps"): _STEPS, ("igsm", "stepsize"): _STEPSIZE,
    ("pgd", "eps"): _EPS, ("pgd", "steps"): _STEPS, ("pgd", "stepsize"): _STEPSIZE,
    ("deepfool", "overshoot"): ParamUI("Overshoot", "How far past the decision boundary to go: larger is "
                                        "stronger and more visible.", 0.0, 20.0, 0.01),
    ("deepfool", "steps"): _STEPS,
    ("deepfool", "candidates"): ParamUI("Candidate classes", "How many of the likeliest classes are tried as "
                                         "the nearest boundary.", 2, 20, 1, integer=True),
    ("cw", "confidence"): ParamUI("Confidence margin", "How much the wrong class must win by: larger is "
                                   "stronger and more visible.", 0.0, 60.0, 1.0),
    ("cw", "steps"): _STEPS,
    ("cw", "binary_search_steps"): ParamUI("Search rounds", "Rounds of the search for the trade-off "
                                            "constant.", 1, 10, 1, integer=True),
    ("cw", "stepsize"): ParamUI("Optimiser step", "Learning rate of the optimiser.", 0.001, 0.1, 0.001),
    ("cw", "initial_const"): ParamUI("Initial constant", "Starting weight of the 'fool the model' term.",
                                     0.01, 100.0, 0.01),
    ("jsma", "gamma"): ParamUI("Max. share of values changed", "The attack gives up after changing this "
                                "fraction of the pixel values.", 0.005, 0.5, 0.005),
    ("jsma", "theta"): ParamUI("Change per value", "How much each chosen value moves (1 = all the way).",
                               0.05, 1.0, 0.05),
    ("jsma", "features_per_step"): ParamUI("Values per step", "Pixel values changed per iteration.",
                                           1, 128, 1, integer=True),
    ("lbfgs", "initial_const"): ParamUI("Initial constant", "Starting weight of the size of the change "
                                         "against fooling the model.", 0.001, 10.0, 0.001),
    ("lbfgs", "search_steps"): ParamUI("Search rounds", "Rounds of the search for the constant.",
                                       1, 10, 1, integer=True),
    ("lbfgs", "max_iter"): ParamUI("L-BFGS iterations", "Iterations of the optimiser per round.",
                                   1, 200, 1, integer=True),
}


def _display(ui: ParamUI, value):
    if ui.integer:
        return int(value)
    return round(float(value) * 255, 4) if ui.per_255 else float(value)


def _widget_key(attack: str, param: str) -> str:
    return f"attack_param_{attack}_{param}"


def load_preset(attack: str | None = None, preset: str | None = None) -> None:
    """Callback: set every parameter widget of ``attack`` to the preset's values."""
    from pd_core.attacks import ATTACKS

    ss = st.session_state
    attack = attack or ss[state.ATTACK_NAME]
    preset = preset or ss[state.ATTACK_PRESET]
    values = ATTACKS[attack].preset(preset)
    for param, value in values.items():
        ui = PARAMS.get((attack, param))
        if ui is not None:
            state.set_sticky(_widget_key(attack, param), _display(ui, value))


def _on_attack_or_preset_change() -> None:
    ss = st.session_state
    ss[f"_keep_{state.ATTACK_NAME}"] = ss[state.ATTACK_NAME]
    ss[f"_keep_{state.ATTACK_PRESET}"] = ss[state.ATTACK_PRESET]
    load_preset()


def attack_controls() -> tuple[str, str, dict]:
    """Attack, preset and strength widgets. Returns (attack, preset, overrides in the attack's units)."""
    from pd_core.attacks import ATTACKS, PRESETS

    ss = st.session_state
    state.keep(state.ATTACK_NAME, state.DEFAULT_ATTACK)  # drawn only on this page: restore after a visit elsewhere
    state.keep(state.ATTACK_PRESET, state.DEFAULT_PRESET)
    names = list(ATTACKS)
    attack = st.selectbox("Attack", names, format_func=lambda n: ATTACKS[n].title, key=state.ATTACK_NAME,
                          on_change=_on_attack_or_preset_change,
                          help="How the photo is changed to fool the model. FGSM is one quick step; the "
                               "others search harder.")
    info = ATTACKS[attack]
    st.caption(info.explanation)
    preset = st.radio("Strength preset", list(PRESETS), horizontal=True, key=state.ATTACK_PRESET,
                      on_change=_on_attack_or_preset_change,
                      format_func=lambda p: p.capitalize(),
                      help="; ".join(f"{p.capitalize()}: {PRESET_HELP.get(p, p)}" for p in PRESETS) + ".")
    achieved = info.achieved.get(preset) if info.achieved else None
    if achieved:
        st.caption(f"On the dev images this preset changes the photos by a normalised L2 of about "
                   f"{achieved:.3f} on average (paper: {info.paper_norm.get(preset) or '—'}).")
    preset_values = info.preset(preset)
    overrides: dict = {}

    def widget(param: str) -> None:
        ui = PARAMS[(attack, param)]
        key = _widget_key(attack, param)
        kwargs = state.sticky(key, _display(ui, preset_values[param]))
        if ui.integer:
            st.slider(ui.label, int(ui.minimum), int(ui.maximum), step=int(ui.step), help=ui.help, **kwargs)
        else:
            st.slider(ui.label, float(ui.minimum), float(ui.maximum), step=float(ui.step), help=ui.help,
                      **kwargs)
        shown = ss[key]
        if shown != _display(ui, preset_values[param]):
            value = int(shown) if ui.integer else float(shown)
            overrides[param] = value / 255 if ui.per_255 else value

    strength = info.strength
    if (attack, strength) in PARAMS and strength in preset_values:
        widget(strength)
    others = [p for p in preset_values if p != strength and (attack, p) in PARAMS]
    if others:
        with st.expander("More attack settings"):
            for param in others:
                widget(param)
    return attack, preset, overrides


def settings_key(image, settings, attack: str, preset: str, overrides: dict) -> tuple:
    """What makes two stories the same: the photo, the sidebar's settings, the attack and its overrides."""
    return (image.key, settings.key, attack, preset, tuple(sorted(overrides.items())))


def run_story(image, settings, attack: str, preset: str, overrides: dict, status) -> state.StoredResult:
    """Run :func:`pd_core.story.attack_and_defend` for the current settings, with progress in
    ``status``, through the server's story cache (:class:`ui.cache.ResultCache`: the same settings on
    the same photo are computed once per server, the default story already by the warm-up).

    Raises :class:`ui.compute.Failed` after showing the error.
    """
    key = settings_key(image, settings, attack, preset, overrides)
    report = progress_reporter(status)
    waiting = status.empty()

    def compute() -> state.StoredResult:
        model = get_model(settings.model_name, settings.device)
        x = model_tensor(image, model)
        result = run_heavy(lambda: _story(model, x, image.label_index, image.name, _command_path(image), settings,
                                          attack, preset, overrides, report),
                           "the attack and the defence", settings.device, waiting=waiting)
        return state.StoredResult(result=result, image_key=image.key, settings_key=key, figures=build_figures(result))

    stored = story_cache().get_or_compute(key, compute)
    report(1.0, "done")
    state.store_result(stored)
    return stored


def _story(model, x, label, name: str, path: str, settings, attack: str, preset: str, overrides: dict,
           progress=None):
    from pd_core.story import attack_and_defend

    return attack_and_defend(model, x, label, attack=attack, preset=preset, attack_params=overrides,
                             config=settings.config, defence=settings.defence, seed=settings.seed,
                             n_ensemble=settings.n_ensemble, image_name=name, image_path=path, progress=progress)


def warm_default_story(model, device: str, cache) -> None:
    """Compute the one-click story (the default photo, FGSM at the paper's preset, the sidebar's
    defaults) into ``cache`` under the key a visitor's Run will ask for, holding the device's slot
    like any other work. Called by the warm-up thread (no Streamlit calls)."""
    from pathlib import Path

    from pd_core.defence import DefenceConfig
    from pd_core.images import gallery, open_image, to_model_tensor
    from pd_core.scheduler import device_slot

    from .sidebar import default_settings

    photos = gallery()
    photo = next((g for g in photos if g.path.stem == state.DEFAULT_GALLERY_STEM), photos[0] if photos else None)
    if photo is None:
        return
    settings = default_settings(model.name, model.spec.title, device, DefenceConfig())
    image = state.CurrentImage(name=photo.name, source="gallery", pil=open_image(str(photo.path)),
                               label_index=photo.label_index, path=str(photo.path), uid=f"gallery:{photo.path}")
    key = settings_key(image, settings, state.DEFAULT_ATTACK, state.DEFAULT_PRESET, {})

    def compute() -> state.StoredResult:
        spec = model.spec
        x = to_model_tensor(image.pil, spec.input_size, spec.resize, spec.interpolation, model.device)
        with device_slot(device):
            result = _story(model, x, photo.label_index, photo.name, Path(photo.path).stem, settings,
                            state.DEFAULT_ATTACK, state.DEFAULT_PRESET, {})
        return state.StoredResult(result=result, image_key=image.key, settings_key=key, figures=build_figures(result))

    cache.get_or_compute(key, compute)


def _command_path(image) -> str:
    """How the command line names the image: the gallery's short name, or the upload's file name."""
    if image.source == "gallery" and image.path:
        from pathlib import Path

        return Path(image.path).stem
    return image.path or "IMAGE"


__all__ = ["attack_controls", "run_story", "warm_default_story", "settings_key", "load_preset", "Failed", "PARAMS"]
