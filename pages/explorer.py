"""Defence Explorer: every parameter of the defence, live, on the current photo (paper Fig. 2, Table 3)."""
from pathlib import Path

import streamlit as st
import torch

from pd_core import visuals
from pd_core.labels import label_name
from ui import state
from ui.cache import get_model, model_tensor
from ui.components import command_line, verdict_badge
from ui.compute import Failed, run_heavy
from ui.images import ensure_image
from ui.sidebar import settings as sidebar_settings

settings = sidebar_settings(defence_expanded=True)
config = settings.config

st.title("Defence Explorer")
st.caption("Change the defence parameters in the sidebar (**Defence parameters**): everything below is "
           "recomputed at once on the current photo. The photo comes from *Attack & Defend*.")

ensure_image()
image = state.current_image()
if image is None:
    st.error("No image is available; please choose or upload one on the Attack & Defend page.")
    st.stop()
stored = state.stored_result()
if stored is not None and stored.image_key != image.key:
    stored = None
result = stored.result if stored is not None else None
if result is not None and result.model != settings.model_name:
    result = None  # the attacked photo was made for another model

options = ["Clean photo"] + (["Attacked photo (last run)"] if result is not None else [])
which = st.radio("Photo to defend", options, horizontal=True, index=len(options) - 1, key="explorer_which",
                 help="The attacked photo exists after a run on the Attack & Defend page.")
if result is None:
    st.caption("Run an attack on the Attack & Defend page to explore the defence on the attacked photo.")

model = get_model(settings.model_name, settings.device)
if which.startswith("Attacked"):
    x = result.images["adversarial"][None].to(model.device)
    source_key = ("adversarial", id(result))
else:
    x = model_tensor(image, model)
    source_key = ("clean", image.key)

# The classes to follow: the reference (true) class and the attack's class, or the clean top-2.
if result is not None:
    reference = result.label
    rival = result.predictions["adversarial"] if result.predictions["adversarial"] != reference else None
else:
    with torch.no_grad():
        top2 = model(model_tensor(image, model))[0].topk(2).indices.tolist()
    reference = image.label_index if image.label_index is not None else top2[0]
    rival = top2[1] if top2[0] == reference else top2[0]
follow = {f"{label_name(reference)} (reference)": reference}
if rival is not None:
    follow[f"{label_name(rival)} ({'attack' if result is not None else 'runner-up'})"] = rival
colours = dict(zip(follow, [visuals.TRUE_COLOUR, visuals.ADVERSARIAL_COLOUR]))

cache = st.session_state.setdefault(state.EXPLORER, {})


def curve_ks(max_k: int) -> list[int]:
    return sorted({0, 50, 100, 200, 500, 1000, 2000, 5000} & set(range(max_k + 1)) | {max_k})


def cached(key, compute):
    if key not in cache:
        if len(cache) > 8:
            cache.clear()
        cache[key] = compute()
    return cache[key]


# --- the stages, live --------------------------------------------------------------------------
st.subheader("Each stage on its own (paper Table 3)")
st.caption("The defence is two stages: pixel deflection, then wavelet denoising. Here each is applied alone, "
           "both together, and JPEG compression (a classic baseline) for comparison, with the sidebar's "
           f"parameters and seed {settings.seed}.")
from pd_core.story import defence_stages  # noqa: E402

stage_key = ("stages", settings.model_name, source_key, config, settings.seed)
try:
    stages = cached(stage_key, lambda: run_heavy(
        lambda: defence_stages(model, x, config, seed=settings.seed), "the defence stages", settings.device))
except Failed:
    st.stop()

with st.container(key="explorer_stages"):
    columns = st.columns(len(stages))
    for column, stage in zip(columns, stages):
        with column:
            st.markdown(f"**{stage.title}**")
            st.image(visuals.to_hwc_uint8(stage.image), width="stretch")
            p = stage.prediction
            kind = "recovered" if p == reference else "still fooled"
            if stage.name == "none":
                kind = "correct" if p == reference else ("fooled" if which.startswith("Attacked") else "wrong")
            verdict_badge(kind, f"{label_name(p)} ({float(stage.probs[p]):.0%})")
st.plotly_chart(
    visuals.stage_probabilities_figure([s.title for s in stages],
                                       {name: [float(s.probs[c]) for s in stages] for name, c in follow.items()},
                                       colours=colours),
    key="explorer_stage_chart", config={"displaylogo": False})
changed = {k: v for k, v in config.as_dict().items() if v != getattr(type(config)(), k)}
if which.startswith("Attacked"):
    photo = "result.images['adversarial']  # the attacked photo: pd_core.story.attack_and_defend(...)"
elif image.source == "gallery":
    photo = f"load_image(gallery_image({Path(image.path).stem!r}).path, spec=model.spec)"
else:
    photo = f"load_image({image.name!r}, spec=model.spec)"
command_line(
    "from pd_core import load_model\nfrom pd_core.defence import DefenceConfig\n"
    "from pd_core.story import defence_stages\nfrom pd_core.evaluation import probability_curve\n"
    "from pd_core.images import gallery_image, load_image\n\n"
    f"model = load_model({settings.model_name!r})\nx = {photo}\n"
    f"config = DefenceConfig({', '.join(f'{k}={v!r}' for k, v in changed.items())})\n"
    f"stages = defence_stages(model, x, config, seed={settings.seed})\n"
    f"curve = probability_curve(model, x, {list(follow.values())}, {curve_ks(st.session_state.get('curve_max_k', 2000))}, "
    f"copies={st.session_state.get('curve_samples', 4)}, config=config, "
    f"denoise={st.session_state.get('curve_denoise', False)}, seed={settings.seed})",
    "The same computations in Python, with this page's settings and seed.", language="python",
    title="Reproduce these numbers in Python")


# --- paper Fig. 2, on demand ---------------------------------------------------------------------
@st.fragment
def curve_section():
    from pd_core.evaluation import probability_curve

    st.subheader("Probability against the number of deflections (paper Fig. 2)")
    st.caption("How the class probabilities move as more and more pixels are deflected: a clean photo keeps "
               "its class for a long time; an attacked one may drift back towards the true class. Each "
               "point is the mean over several random draws (band: ± one standard deviation).")
    a, b, c = st.columns(3)
    with a:
        max_k = st.select_slider("Up to K =", [400, 1000, 2000, 5000], value=2000, key="curve_max_k",
                                 help="The largest number of deflections on the curve (224² × 3 ≈ 150,000 values).")
    with b:
        samples = st.slider("Random draws per point", 2, 16, 4, key="curve_samples",
                            help="More draws: smoother curve, slower (all points are one batch).")
    with c:
        denoise = st.toggle("Also denoise", value=False, key="curve_denoise",
                            help="Off: deflection only, as in the paper's figure. On: the full defence.")
    ks = curve_ks(max_k)
    key = ("curve", settings.model_name, source_key, config, settings.seed, tuple(ks), samples, denoise,
           tuple(follow.values()))
    if key not in cache:
        if not st.button("Draw the curve", icon=":material/show_chart:",
                         help=f"{len(ks)} values of K × {samples} draws = {len(ks) * samples} images, one batch."):
            return
        with st.spinner(f"Classifying {len(ks) * samples} deflected copies…"):
            try:
                cached(key, lambda: run_heavy(
                    lambda: probability_curve(model, x, list(follow.values()), ks, copies=samples, config=config,
                                              denoise=denoise, seed=settings.seed),
                    "the deflection curve", settings.device))
            except Failed:
                return
    curve = cache[key]
    series = {name: (curve.mean[c], curve.std[c]) for name, c in follow.items()}
    st.plotly_chart(visuals.probability_curve_figure(curve.deflections, series, colours=colours),
                    key="explorer_curve", config={"displaylogo": False})


curve_section()
