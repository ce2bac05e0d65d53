"""The Defence Explorer's parts: which photo, which classes to follow, the stages (paper Table 3)
and the deflection curve (paper Fig. 2), each computed through ``run_heavy`` and kept in the
server's Explorer cache (:func:`ui.cache.explorer_cache`): the same photo and settings are
computed once for everyone.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from . import state
from .cache import explorer_cache, get_model, model_tensor
from .components import command_line, verdict_badge
from .compute import run_heavy

__all__ = ["ExplorerPhoto", "choose_photo", "photo_digest", "stages_for", "follow_classes", "stages_section",
           "python_command", "curve_section", "curve_ks"]


@dataclass
class ExplorerPhoto:
    """The photo the Explorer defends: the clean photo or the last attacked one, on the model's device."""

    x: object              # (1, 3, S, S)
    attacked: bool
    result: object | None  # the Attack & Defend result it comes from (None: no run for this photo and model)
    digest: str            # what identifies the pixels in the cache keys


def photo_digest(x) -> str:
    """A short digest of a tensor's pixels: the same photo gives the same cache key in every session."""
    return hashlib.sha1(x.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def choose_photo(image, settings, model) -> ExplorerPhoto:
    """The "Photo to defend" radio: the clean photo, or the attacked one after a run of Attack & Defend."""
    stored = state.stored_result()
    result = stored.result if (stored is not None and stored.image_key == image.key) else None
    if result is not None and result.model != settings.model_name:
        result = None  # the attacked photo was made for another model
    options = ["Clean photo"] + (["Attacked photo (last run)"] if result is not None else [])
    which = st.radio("Photo to defend", options, horizontal=True, index=len(options) - 1, key="explorer_which",
                     help="The attacked photo exists after a run on the Attack & Defend page.")
    if result is None:
        st.caption("Run an attack on the Attack & Defend page to explore the defence on the attacked photo.")
    attacked = which.startswith("Attacked")
    x = result.images["adversarial"][None].to(model.device) if attacked else model_tensor(image, model)
    return ExplorerPhoto(x=x, attacked=attacked, result=result, digest=photo_digest(x))


def stages_for(photo: ExplorerPhoto, settings) -> list:
    """:func:`pd_core.story.defence_stages` of the photo with the sidebar's settings (cached per server)."""
    from pd_core.story import defence_stages

    model = get_model(settings.model_name, settings.device)
    key = ("stages", settings.model_name, settings.device, photo.digest, settings.config, settings.seed)
    return explorer_cache().get_or_compute(key, lambda: run_heavy(
        lambda: defence_stages(model, photo.x, settings.config, seed=settings.seed), "the defence stages",
        settings.device))


def follow_classes(photo: ExplorerPhoto, image, stages) -> tuple[dict, dict]:
    """The classes the charts follow: the reference class and the attack's class (or the clean
    runner-up), from the "no defence" stage's probabilities. Returns (name -> class, name -> colour)."""
    from pd_core import visuals
    from pd_core.labels import label_name

    result = photo.result
    if result is not None:
        reference = result.label
        rival = result.predictions["adversarial"] if result.predictions["adversarial"] != reference else None
    else:
        top2 = stages[0].probs.topk(2).indices.tolist()  # stage "none": the model on the photo itself
        reference = image.label_index if image.label_index is not None else top2[0]
        rival = top2[1] if top2[0] == reference else top2[0]
    follow = {f"{label_name(reference)} (reference)": reference}
    if rival is not None:
        follow[f"{label_name(rival)} ({'attack' if result is not None else 'runner-up'})"] = rival
    return follow, dict(zip(follow, [visuals.TRUE_COLOUR, visuals.ADVERSARIAL_COLOUR]))


def stages_section(stages, photo: ExplorerPhoto, follow: dict, colours: dict) -> None:
    """One column per stage (its image and the answer), then the followed classes' probabilities."""
    from pd_core import visuals
    from pd_core.labels import label_name

    reference = next(iter(follow.values()))
    with st.container(key="explorer_stages"):
        for column, stage in zip(st.columns(len(stages)), stages):
            with column:
                st.markdown(f"**{stage.title}**")
                st.image(visuals.to_hwc_uint8(stage.image), width="stretch")
                p = stage.prediction
                kind = "recovered" if p == reference else "still fooled"
                if stage.name == "none":
                    kind = "correct" if p == reference else ("fooled" if photo.attacked else "wrong")
                verdict_badge(kind, f"{label_name(p)} ({float(stage.probs[p]):.0%})")
    st.plotly_chart(
        visuals.stage_probabilities_figure([s.title for s in stages],
                                           {name: [float(s.probs[c]) for s in stages] for name, c in follow.items()},
                                           colours=colours),
        key="explorer_stage_chart", config={"displaylogo": False})


def curve_ks(max_k: int) -> list[int]:
    return sorted({0, 50, 100, 200, 500, 1000, 2000, 5000} & set(range(max_k + 1)) | {max_k})


def python_command(photo: ExplorerPhoto, image, settings, follow: dict) -> None:
    """The page's computations as Python, with its settings and seed."""
    config = settings.config
    changed = {k: v for k, v in config.as_dict().items() if v != getattr(type(config)(), k)}
    if photo.attacked:
        source = "result.images['adversarial']  # the attacked photo: pd_core.story.attack_and_defend(...)"
    elif image.source == "gallery":
        source = f"load_image(gallery_image({Path(image.path).stem!r}).path, spec=model.spec)"
    else:
        source = f"load_image({image.name!r}, spec=model.spec)"
    ss = st.session_state
    command_line(
        "from pd_core import load_model\nfrom pd_core.defence import DefenceConfig\n"
        "from pd_core.story import defence_stages\nfrom pd_core.evaluation import probability_curve\n"
        "from pd_core.evaluation.figures import CurveSettings\n"
        "from pd_core.images import gallery_image, load_image\n\n"
        f"model = load_model({settings.model_name!r})\nx = {source}\n"
        f"config = DefenceConfig({', '.join(f'{k}={v!r}' for k, v in changed.items())})\n"
        f"stages = defence_stages(model, x, config, seed={settings.seed})\n"
        f"curve = probability_curve(model, x, {list(follow.values())}, CurveSettings("
        f"deflections={tuple(curve_ks(ss.get('curve_max_k', 2000)))}, copies={ss.get('curve_samples', 4)}, "
        f"config=config, denoise={ss.get('curve_denoise', False)}, seed={settings.seed}))",
        "The same computations in Python, with this page's settings and seed.", language="python",
        title="Reproduce these numbers in Python")


@st.fragment
def curve_section(photo: ExplorerPhoto, settings, follow: dict, colours: dict) -> None:
    """Paper Fig. 2 on demand: class probabilities against the number of deflections."""
    from pd_core import visuals
    from pd_core.evaluation import probability_curve
    from pd_core.evaluation.figures import CurveSettings

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
    key = ("curve", settings.model_name, settings.device, photo.digest, settings.config, settings.seed, tuple(ks),
           samples, denoise, tuple(follow.values()))
    cache = explorer_cache()
    curve = cache.get(key)
    if curve is None:
        if not st.button("Draw the curve", icon=":material/show_chart:",
                         help=f"{len(ks)} values of K × {samples} draws = {len(ks) * samples} images, one batch."):
            return
        model = get_model(settings.model_name, settings.device)
        with st.spinner(f"Classifying {len(ks) * samples} deflected copies…"):
            curve = cache.get_or_compute(key, lambda: run_heavy(
                lambda: probability_curve(model, photo.x, list(follow.values()),
                                          CurveSettings(tuple(ks), samples, settings.config, denoise, settings.seed)),
                "the deflection curve", settings.device))
    series = {name: (curve.mean[c], curve.std[c]) for name, c in follow.items()}
    st.plotly_chart(visuals.probability_curve_figure(curve.deflections, series, colours=colours),
                    key="explorer_curve", config={"displaylogo": False})
