"""The Adaptive attack page's parts: the explanation, one attacker on the current photo
(:func:`pd_core.adaptive.adaptive_demo`, through the sidebar's defence) and a saved folder run read
back from its CSV. The whole-ladder tab is :mod:`ui.ladder`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from . import state
from .cache import get_model, model_tensor
from .components import command_line, progress_reporter, verdict_badge
from .compute import Failed, run_heavy
from .images import image_panel

__all__ = ["EXPLANATION", "one_photo", "saved_run", "SAVED_CSV", "RESULT_KEY"]

RESULT_KEY = "adaptive_result"  # (image key, settings key, AdaptiveDemo, figures)
SAVED_CSV = Path(__file__).resolve().parent.parent / "docs" / "adaptive_results.csv"

#: Why a random, non-differentiable defence can still be attacked (the page's first expander).
EXPLANATION = """
The usual attacks ask the model *"which tiny change to each pixel makes you more wrong?"* (the
**gradient**) and follow the answer. The defence seems to spoil that question twice:

* its steps have no useful gradient (pixels are swapped with random neighbours; the wavelet denoiser
  throws small details away), so the question cannot be asked *through* the defence;
* it is **random**: every run deflects different pixels, so a change that fools one run may not fool the next.

An attacker who knows the defence gets around both:

1. **BPDA** (*Backward Pass Differentiable Approximation*): the defended photo looks almost exactly like
   its input, so when asking for the gradient, *pretend the defence does nothing*. Run the real defence,
   ask the model the question about the **defended** photo, and apply the answer to the input.
2. **EOT** (*Expectation over Transformation*): ask the question on several independent runs of the
   defence and **average** the answers, so the change works against the defence *on average*, not against
   one lucky draw.
3. Repeat with small steps, never changing any pixel value by more than the budget **ε** (a few /255:
   invisible).

The defence only *looked* strong because the earlier attacks ignored it. With ε = 4/255 Athalye & Carlini
brought its accuracy to 0%. Since our defence is written in PyTorch, an attacker can even go further
than BPDA and take the **exact gradient** through it, with the random choices of each run held fixed.

**The ladder** lines these attackers up by what they know: (a) *transfer* knows nothing about the
defence, (b) *BPDA* knows it is there, (c) *BPDA+EOT* also knows it is random, and (d) *exact
gradient+EOT* knows it exactly and differentiates through it. A defence is only as strong as its
result against the strongest rung; the same ladder on the undefended model and on JPEG shows what
"looks robust" and "is robust" mean side by side.
"""

_LOSS_TITLES = {("ce", False): "−log p(true class)", ("ce", True): "log p(target)",
                ("margin", False): "best other logit − true logit", ("margin", True): "target logit − best other"}


def _figures(demo) -> dict:
    import plotly.graph_objects as go

    from pd_core import visuals

    figs = {}
    target = None if demo.attack.targets is None else int(demo.attack.targets[0])
    for stage in ("clean_single", "adversarial_single", "clean_ensemble", "adversarial_ensemble"):
        wrong = demo.predictions[stage] if demo.predictions[stage] != demo.label else target
        figs[stage] = visuals.top_predictions_figure(demo.probs[stage], true_index=demo.label,
                                                     adversarial_index=wrong, height=200)
    delta = (demo.adversarial - demo.clean) * 255
    eps = demo.attack.params["eps_255"]
    heat = go.Figure(go.Heatmap(z=delta.mean(0).numpy(), colorscale="RdBu", reversescale=True, zmid=0,
                                zmin=-eps, zmax=eps,
                                colorbar=dict(title="/255"),
                                hovertemplate="x %{x}, y %{y}: %{z:.2f}/255 (mean of R, G, B)<extra></extra>"))
    heat.update_yaxes(autorange="reversed", scaleanchor="x", showticklabels=False)
    heat.update_xaxes(showticklabels=False)
    heat.update_layout(height=300, margin=dict(l=0, r=0, t=30, b=0),
                       title=dict(text="attacked − clean, mean over colours (/255)", font=dict(size=13)))
    figs["heatmap"] = heat
    factor = visuals.amplification_factor(demo.adversarial - demo.clean)
    figs["amplified"] = visuals.perturbation_figure(demo.adversarial - demo.clean, factor,
                                                    f"attacked − clean, ×{factor:g}", height=300)
    loss = demo.attack.loss_history
    curve = go.Figure(go.Scatter(x=list(range(1, len(loss) + 1)), y=loss, mode="lines+markers"))
    curve.update_layout(height=260, margin=dict(l=0, r=0, t=30, b=0),
                        title=dict(text="the attack's objective, step by step", font=dict(size=13)),
                        xaxis_title="step", yaxis_title=_LOSS_TITLES[(demo.attack.params["loss"], target is not None)])
    figs["loss"] = curve
    return figs


@dataclass(frozen=True)
class PhotoAttack:
    """The one-photo attacker's settings (budget in /255)."""

    eps_255: int
    steps: int
    eot: int
    targeted: bool
    rung: str
    loss: str


def _controls() -> PhotoAttack:
    from pd_core.adaptive.report import RUNG_KNOWLEDGE, RUNG_TITLES
    from pd_core.adaptive.settings import RUNGS

    eps_255 = st.select_slider("Budget ε (/255)", options=[1, 2, 4, 8, 16], **state.sticky("adaptive_eps", 4),
                               help="The largest change allowed to any pixel value, in steps of 1/255. "
                                    "4/255 is the budget of Athalye & Carlini; changes this small are invisible.")
    steps = st.slider("Steps", 1, 100, **state.sticky("adaptive_steps", 10),
                      help="How many small moves the attack makes. More steps: stronger and slower.")
    eot = st.slider("Defence runs averaged per step (EOT)", 1, 20, **state.sticky("adaptive_eot", 4),
                    help="How many independent runs of the defence each step looks at. More: the change fools "
                         "the defence more reliably, and each step costs that many passes through the model.")
    targeted = st.toggle("Aim at a random wrong class (targeted)", **state.sticky("adaptive_targeted", False),
                         help="Off: any wrong answer will do. On: the attack tries to make the defended model "
                              "answer one particular class, drawn at random from the seed (harder).")
    rung = st.radio("What the attacker knows", RUNGS, format_func=RUNG_TITLES.get,
                    captions=[RUNG_KNOWLEDGE[r] for r in RUNGS], **state.sticky("adaptive_rung", "bpda_eot"),
                    help="The ladder of attackers: each rung knows more about the defence than the one above.")
    loss = st.radio("What the attack pushes", ["ce", "margin"], horizontal=True,
                    format_func={"ce": "lower the true class's probability",
                                 "margin": "lift another class above it"}.get,
                    **state.sticky("adaptive_loss", "ce"),
                    help="Cross-entropy (the usual choice) lowers the probability of the true class; it can stall "
                         "on a flat prediction that still ranks the true class first. The margin loss "
                         "(Carlini & Wagner) pushes the best other class above the true one: often stronger.")
    runs = eot if rung.endswith("_eot") else (1 if rung == "bpda" else 0)
    st.caption(f"Step size {2.5 * eps_255 / steps:.2f}/255 (2.5·ε/steps). Each step runs "
               + (f"{runs} defended copies forward and backward" if runs else "the bare model (no defence)")
               + "; the defended predictions shown use fresh runs of the defence, never the ones the attack saw. "
               "These budgets take a few seconds on a CPU; a GPU server can raise them.")
    return PhotoAttack(eps_255, steps, eot, targeted, rung, loss)


def _run(image, settings, chosen: PhotoAttack, run_key: tuple) -> None:
    from pd_core.adaptive import PgdSettings, RunHooks, adaptive_demo
    from pd_core.defences import create_defence

    with st.status("Attacking through the defence…", expanded=True) as status:
        try:
            model = get_model(settings.model_name, settings.device)
            x = model_tensor(image, model)
            report = progress_reporter(status)

            def work():
                defence = create_defence(settings.defence, model, config=settings.config)
                budget = PgdSettings(eps=chosen.eps_255 / 255, steps=chosen.steps, eot=chosen.eot,
                                     targeted=chosen.targeted, loss=chosen.loss)
                return adaptive_demo(model, x, image.label_index, defence, budget, rung=chosen.rung,
                                     ensemble=settings.n_ensemble, seed=settings.seed, hooks=RunHooks(report))

            demo = run_heavy(work, "the adaptive attack", settings.device, waiting=status.empty())
            st.session_state[RESULT_KEY] = (image.key, run_key, demo, _figures(demo))
            status.update(label=f"Done in {demo.attack.seconds:.1f} s", state="complete", expanded=False)
        except Failed:
            status.update(label="That did not work", state="error")


def one_photo(settings) -> None:
    """The attack on the current photo by one attacker of the ladder, before and after."""
    left, right = st.columns([1, 1], gap="large")
    with left:
        image_panel('')
        image = state.current_image()
    with right:
        chosen = _controls()
        run = st.button("Run the adaptive attack", type="primary", icon=":material/play_arrow:",
                        disabled=image is None, help="Attack the photo through the defence. Progress is shown below.")
    if image is None:
        st.error("No image is available: no sample photos were found and nothing was uploaded; please upload a photo.")
        return
    run_key = (image.key, settings.key, chosen.eps_255, chosen.steps, chosen.eot, chosen.targeted, chosen.loss,
               chosen.rung)
    if run:
        _run(image, settings, chosen, run_key)
    stored = st.session_state.get(RESULT_KEY)
    if stored is None or stored[0] != image.key:
        st.info("Press **Run the adaptive attack** to attack this photo through the defence.",
                icon=":material/touch_app:")
        return
    _, key, demo, figs = stored
    if key != run_key:
        st.warning("The settings changed since this result was computed; press **Run** to update it.",
                   icon=":material/update:")
    st.divider()
    _show_result(demo, figs, settings, chosen)


def _before_after_column(demo, figs: dict, stage: str, title: str, picture) -> None:
    from pd_core.labels import label_name

    from .verdicts import verdict

    st.subheader(title)
    st.image(picture.permute(1, 2, 0).numpy().clip(0, 1), width=224)
    st.markdown("**Model alone**")
    if stage == "adversarial" and demo.predictions[stage] == demo.label:
        # The attack aims at the defended model; the bare model may well keep its answer.
        verdict_badge("resisted", f"Still “{label_name(demo.label)}”: this attack aims at the defended "
                                  "model, not the bare one.")
    else:
        verdict_badge(*verdict("clean" if stage == "clean" else "adversarial", demo.predictions[stage], demo.label))
    st.markdown("**Defended, one run**")
    verdict_badge(*verdict("clean" if stage == "clean" else "defended", demo.predictions[f"{stage}_single"],
                           demo.label))
    st.plotly_chart(figs[f"{stage}_single"], key=f"adaptive_{stage}_single", config={"displayModeBar": False})
    st.markdown(f"**Ens-{demo.ensemble}** ({demo.agreement[f'{stage}_ensemble']:.0%} of the runs agree)")
    verdict_badge(*verdict("clean" if stage == "clean" else "ensemble", demo.predictions[f"{stage}_ensemble"],
                           demo.label))
    st.plotly_chart(figs[f"{stage}_ensemble"], key=f"adaptive_{stage}_ens", config={"displayModeBar": False})


def _show_result(demo, figs: dict, settings, chosen: PhotoAttack) -> None:
    from pd_core.adaptive.report import RUNG_TITLES
    from pd_core.images import to_png_bytes
    from pd_core.labels import label_name

    attack = demo.attack
    target = None if attack.targets is None else int(attack.targets[0])
    if demo.label_source != "dataset":
        st.caption(f"Reference class (the clean prediction): **{label_name(demo.label)}**.")
    if target is not None:
        hit = demo.predictions["adversarial_single"] == target
        st.markdown(f"Target class: **{label_name(target)}** ({target}) — "
                    + ("reached by the defended model." if hit else "not reached by the defended model."))
    before, after = st.columns(2, gap="large")
    for column, stage, title, picture in ((before, "clean", "Before the attack", demo.clean),
                                          (after, "adversarial", "After the adaptive attack", demo.adversarial)):
        with column:
            _before_after_column(demo, figs, stage, title, picture)
    st.caption(f"L∞ {float(attack.linf[0]) * 255:.1f}/255, normalised L2 {float(attack.l2_normalised[0]):.4f}, "
               f"PSNR {float(attack.psnr[0]):.1f} dB; {attack.steps_done} steps × {attack.params['eot']} defence "
               f"runs ({RUNG_TITLES[chosen.rung]}), step {attack.params['step_size'] * 255:.2f}/255, seed {demo.seed}; "
               f"{attack.seconds:.1f} s on {settings.device}.")
    st.subheader("The perturbation")
    st.caption("What the attack added to the photo. Left: the change of each pixel (mean of its colours), red "
               "brighter, blue darker. Middle: the same change amplified so it becomes visible (grey = unchanged). "
               "Right: the quantity the attack pushes up, averaged over the defence runs of each step.")
    h1, h2, h3 = st.columns(3)
    with h1:
        st.plotly_chart(figs["heatmap"], key="adaptive_heatmap")
    with h2:
        st.plotly_chart(figs["amplified"], key="adaptive_amplified", config={"displayModeBar": False})
    with h3:
        st.plotly_chart(figs["loss"], key="adaptive_loss_curve", config={"displayModeBar": False})
    st.download_button("Download the attacked photo (PNG, lossless)", to_png_bytes(demo.adversarial),
                       file_name=f"adaptive_eps{chosen.eps_255}.png", mime="image/png", on_click="ignore",
                       icon=":material/download:",
                       help="Exactly the pixels that were classified above: every value is a whole number of "
                            "/255 steps within ε of the original.")


def _read_run(uploaded):
    """The rows of the uploaded CSV, else of the saved run; (None, None) when neither can be read."""
    from pd_core.adaptive import read_adaptive_csv

    try:
        if uploaded is not None:
            return read_adaptive_csv(uploaded), uploaded.name
        if SAVED_CSV.is_file():
            return read_adaptive_csv(SAVED_CSV), "the saved run in docs/adaptive_results.csv"
    except ValueError as exc:
        st.error(f"That file cannot be shown: {exc}", icon=":material/error:")
    return None, None


def _show_run(rows, source: str) -> None:
    from pd_core.adaptive import GRADIENT_TITLES, accuracy_curve_figure

    first = rows[0]
    attacked = [r for r in rows if r["eps_255"] > 0]
    detail = (f"{attacked[0].get('steps', '?')} steps, EOT {attacked[0].get('eot', '?')}, "
              f"{GRADIENT_TITLES.get(attacked[0].get('gradient'), 'BPDA')} gradient" if attacked else "")
    st.plotly_chart(accuracy_curve_figure(rows), key="adaptive_curve")
    st.caption(f"From {source}: {first.get('model', '')}, n = {first['n']} photos, {detail}, seed "
               f"{first.get('seed', '?')}.")
    with st.expander("The numbers"):
        st.dataframe([{"ε (/255)": r["eps_255"], "defence": r["defence"], "n": r["n"],
                       "accuracy": f"{r['accuracy']:.1%}",
                       "95% interval": f"{r['ci_low']:.1%} – {r['ci_high']:.1%}"} for r in rows],
                     hide_index=True)


def saved_run(images_arg: str | None) -> None:
    """A folder run of one attacker read back from its CSV (the saved one, or an upload), and its command."""
    from pd_core.cli.options import ShellWord, adaptive_command

    st.subheader("Accuracy against ε on a folder of photos")
    st.caption("The same attack on many photos the undefended model classifies correctly: the share still "
               "classified correctly with no defence, with one run of the defence and with the vote of ten runs "
               "(fresh runs, never the ones the attack used). Error bars: 95% Wilson intervals.")
    uploaded = st.file_uploader("Show your own results file (from the command below)", type=["csv"],
                                key="adaptive_csv_upload",
                                help="A CSV written by `python -m pd_core adaptive ... --out FILE.csv`.")
    rows, source = _read_run(uploaded)
    if rows:
        _show_run(rows, source)
    elif uploaded is None:
        st.info("No saved result yet: run the command below and upload its CSV.", icon=":material/info:")
    command_line(adaptive_command(images=ShellWord(images_arg) if images_arg else "FOLDER", eps=(1, 2, 4, 8),
                                  eot=10, steps=40, seed=0, out="adaptive.csv"),
                 ("Run it in the project's folder. " if images_arg else "FOLDER: a folder of labelled photos. ")
                 + "The folder needs a labels.csv (file,class_index) or WordNet-id file names. On a CPU use "
                 "--limit 40 --eot 4 --steps 10 (about half an hour).")
