"""How each step of the Present page is drawn: one small function per step, big type and pictures.

:func:`draw_step` writes the step's title and sentence (:data:`ui.present_steps.STEPS`), then calls
the step's function with the run (:class:`ui.present_run.PresentationRun`). Every picture is
finished PNG bytes from the run, so drawing a step computes nothing.
"""
from __future__ import annotations

import html

import streamlit as st

from .present import comparison_slider
from .present_steps import STEPS, load_board


def _answer(index: int, label: int, probs=None, note: str = "", judged: bool = True) -> None:
    """A class name in large type, green when it is the reference class, red otherwise
    (``judged=False``: neutral, for an upload's clean photo, which has no true class)."""
    from pd_core.labels import label_name

    kind = "pd-neutral" if not judged else ("pd-ok" if index == label else "pd-bad")
    sure = f"{float(probs[index]) * 100:.0f}% sure" if probs is not None else ""
    detail = " · ".join(part for part in (note, sure) if part)
    st.markdown(f'<div class="pd-answer {kind}">“{html.escape(label_name(index))}”<small>{html.escape(detail)}</small>'
                "</div>", unsafe_allow_html=True)


def _label(text: str) -> None:
    st.markdown(f'<div class="pd-present-label">{html.escape(text)}</div>', unsafe_allow_html=True)


def _picture(png: bytes, caption: str) -> None:
    st.image(png, width="stretch")
    st.markdown(f'<div class="pd-present-caption">{html.escape(caption)}</div>', unsafe_allow_html=True)


def _picture_and_answers(png: bytes, caption: str, answers) -> None:
    """The picture on the left, on the right each (label, answer kwargs) as a heading and a big answer."""
    left, right = st.columns([3, 2], vertical_alignment="center")
    with left:
        _picture(png, caption)
    with right:
        for text, kwargs in answers:
            _label(text)
            _answer(**kwargs)


def _clean(run) -> None:
    s = run.story
    _picture_and_answers(run.pictures["clean"], "The photo", [
        ("The model says", dict(index=s.predictions["clean"], label=s.label, probs=s.probs["clean"],
                                judged=s.label_source == "dataset"))])


def _attacked(run) -> None:
    s = run.story
    _picture_and_answers(run.pictures["adversarial"], "The attacked photo", [
        ("The model now says", dict(index=s.predictions["adversarial"], label=s.label, probs=s.probs["adversarial"]))])


def _perturbation(run) -> None:
    left, right = st.columns(2)
    with left:
        _picture(run.pictures["amplified"], f"The change × {run.factor:g} (grey: unchanged)")
    with right:
        _picture(run.pictures["heatmap"], f"Darker (blue) or brighter (red), up to {run.peak_255:.0f}/255")


def _slider(run) -> None:
    comparison_slider(run.pictures["clean"], run.pictures["adversarial"])


def _deflection(run) -> None:
    captions = {"map": "Where the object is (activation map)",
                "deflected": f"{int(run.story.config.deflections)} deflected pixels",
                "defended": "Deflected, then denoised"}
    for col, (name, caption) in zip(st.columns(3), captions.items()):
        with col:
            _picture(run.pictures[name], caption)


def _recovered(run) -> None:
    s = run.story
    _picture_and_answers(run.pictures["defended"], "The attacked photo after the defence", [
        ("One run of the defence", dict(index=s.predictions["defended"], label=s.label, probs=s.probs["defended"])),
        (f"The vote of {s.n_ensemble} runs (Ens-{s.n_ensemble})",
         dict(index=s.predictions["ensemble"], label=s.label, note=f"{s.ensemble_agreement * 100:.0f}% of the votes"))])


def _adaptive(run) -> None:
    a = run.adaptive
    _picture_and_answers(run.pictures["adaptive"], "Made by an attacker who knows the defence", [
        ("Through one run of the defence",
         dict(index=a.predictions["adversarial_single"], label=a.label, probs=a.probs["adversarial_single"])),
        (f"Through the vote of {a.ensemble} runs",
         dict(index=a.predictions["adversarial_ensemble"], label=a.label,
              note=f"{a.agreement['adversarial_ensemble'] * 100:.0f}% of the votes"))])


@st.cache_resource(show_spinner=False, max_entries=4)
def _board_figure(path: str, modified: float) -> object:
    """The leaderboard's Plotly figure, built once per server and version of the file (``modified``:
    its modification time), taller and in larger type for a projector."""
    board, _ = load_board()
    fig = board.figure()
    fig.update_layout(height=560, font=dict(size=18))
    return fig


def _leaderboard(run) -> None:
    board, _ = load_board()
    if board is None:  # the step's sentence says why
        return
    from .arena import leaderboard_file

    path = leaderboard_file()
    st.plotly_chart(_board_figure(str(path), path.stat().st_mtime), key="present_leaderboard",
                    config={"displaylogo": False})
    st.caption(f"From {path.name}; the Defence arena page has a sentence per defence and the numbers.")


def _closing(run) -> None:
    from pd_core.labels import label_name

    s, a = run.story, run.adaptive
    recap = (("clean", "Clean", s.predictions["clean"]), ("adversarial", "Attacked", s.predictions["adversarial"]),
             ("defended", "Defended", s.predictions["ensemble"]),
             ("adaptive", "Adaptive attack", a.predictions["adversarial_ensemble"]))
    for col, (name, title, prediction) in zip(st.columns(4), recap):
        with col:
            _picture(run.pictures[name], f"{title}: “{label_name(prediction)}”")


DRAW = {"clean": _clean, "attacked": _attacked, "perturbation": _perturbation, "slider": _slider,
        "deflection": _deflection, "recovered": _recovered, "adaptive": _adaptive, "leaderboard": _leaderboard,
        "closing": _closing}


def draw_step(run, index: int) -> None:
    """Step ``index`` (0-based) of ``run``, full width, in the container ``present_step_<index + 1>``."""
    step = STEPS[index]
    with st.container(key=f"present_step_{index + 1}"):
        # <div>, not <p>: Streamlit's own paragraph style would override the projector sizes.
        st.markdown(f'<div class="pd-present-title">{html.escape(step.title)}</div>'
                    f'<div class="pd-present-sentence">{html.escape(step.sentence(run))}</div>', unsafe_allow_html=True)
        DRAW[step.key](run)
