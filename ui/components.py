"""Reusable pieces of the result pages: verdict badges, the four result cards, maps, perturbations,
norms, downloads and the equivalent command line.

Figures are built once per result with :mod:`pd_core.visuals` and kept with the result
(``StoredResult.figures``), so a rerun of the page only redraws them.
"""
from __future__ import annotations

from typing import Callable

import streamlit as st

from .verdicts import BADGE, verdicts

STAGES = ("clean", "adversarial", "defended", "ensemble")  # pd_core.story.STAGE_NAMES (not imported: torch)
STAGE_TITLES = {
    "clean": "Clean photo",
    "adversarial": "Attacked photo",
    "defended": "Defended (one run)",
    "ensemble": "Ens-10 (vote of 10 runs)",
}
STAGE_HELP = {
    "clean": "The original photo at the model's input size, exactly as the model sees it.",
    "adversarial": "The photo after the attack: the changes are too small to see.",
    "defended": "The attacked photo after {defence} (one run).",
    "ensemble": "Ten independent defended copies of the attacked photo; the answer most of them give wins.",
}
PERTURBATION_PANELS = (
    ("adversarial_minus_clean", "attacked − clean", "What the attack added."),
    ("defended_minus_clean", "defended − clean", "Everything that differs from the original after the defence."),
    ("defended_minus_adversarial", "defended − attacked", "What the defence changed: deflected pixels and "
                                                           "the smoothing of the denoiser."),
)


def stage_help(result, stage: str) -> str:
    """The one-line explanation of a column, naming the defence that was run."""
    defence = ("pixel deflection and wavelet denoising" if result.defence == "pixel_deflection"
               else result.defence_title)
    return STAGE_HELP[stage].format(defence=defence)


def verdict_badge(kind: str, sentence: str) -> None:
    colour, word = BADGE.get(kind, ("gray", kind))
    st.markdown(f":{colour}-badge[{word}] {sentence}")


def build_figures(result) -> dict:
    """All Plotly figures of a :class:`pd_core.story.DemoResult` (built once, kept with the result)."""
    from pd_core import visuals

    label, adv_class = result.label, result.predictions["adversarial"]
    imgs = result.images
    figs: dict = {}
    for stage in STAGES:
        figs[f"top5_{stage}"] = visuals.top_predictions_figure(
            result.probs[stage], true_index=label, adversarial_index=adv_class if adv_class != label else None)
    cam_kind = "Grad-CAM" if result.gradcam else "CAM"
    figs["clean_rcam"] = visuals.map_overlay_figure(imgs["clean"], result.maps["clean_rcam"],
                                                    "R-CAM of the clean photo", map_name="R")
    figs["clean_cam"] = visuals.map_overlay_figure(imgs["clean"], result.maps["clean_cam"],
                                                   f"top-1 {cam_kind} of the clean photo", map_name=cam_kind)
    figs["adversarial_rcam"] = visuals.map_overlay_figure(imgs["adversarial"], result.maps["adversarial_rcam"],
                                                          "R-CAM of the attacked photo (used)",
                                                          map_name="R")
    figs["adversarial_cam"] = visuals.map_overlay_figure(imgs["adversarial"], result.maps["adversarial_cam"],
                                                         f"top-1 {cam_kind} of the attacked photo", map_name=cam_kind)
    d = result.deflections
    figs["deflections"] = visuals.deflection_figure(imgs["adversarial"], d["y"], d["x"], d["source_y"],
                                                    d["source_x"], f"{len(d['y'])} deflected pixel values")
    deltas = {
        "adversarial_minus_clean": imgs["adversarial"] - imgs["clean"],
        "defended_minus_clean": imgs["defended"] - imgs["clean"],
        "defended_minus_adversarial": imgs["defended"] - imgs["adversarial"],
    }
    factor = visuals.amplification_factor(deltas["adversarial_minus_clean"], deltas["defended_minus_adversarial"])
    figs["amplification"] = factor
    for key, title, _ in PERTURBATION_PANELS:
        figs[key] = visuals.perturbation_figure(deltas[key], factor, f"{title}, ×{factor:g}")
    return figs


def preload_chart_code() -> None:
    """Draw one tiny, hidden Plotly chart, so that the browser fetches and starts Streamlit's Plotly
    code (loaded on demand, the first time a page holds a chart) while the visitor is still choosing,
    not after the first Run. Measured with ``PD_THREADS=2 python bench/bench_app.py`` on the 2-core
    machine: on a fresh browser tab the first result's charts were drawn 2.9 s after the script had
    finished, against 0.05-0.07 s on later clicks; with this preload, 0.14-0.45 s (first click 1.8-2.2 s
    in all, was 4.7-7.4 s). The chart is hidden by CSS, holds one point of each trace type the
    results use and is static (no mode bar, no hover)."""
    import plotly.graph_objects as go

    st.html("<style>.st-key-pd_chart_code_preload { display: none; }</style>")
    with st.container(key="pd_chart_code_preload"):
        # one tiny trace of each kind the results use, so each kind's drawing code has run once too
        figure = go.Figure([go.Bar(x=[0], y=[0]), go.Scatter(x=[0], y=[0]), go.Heatmap(z=[[0.0]]),
                            go.Image(z=[[[0, 0, 0]]])])
        st.plotly_chart(figure, key="pd_chart_code_preload_chart", config={"staticPlot": True})


def _chart(fig, key: str) -> None:
    st.plotly_chart(fig, key=key, config={"displaylogo": False, "displayModeBar": False})


def result_cards(result, figs: dict, key_prefix: str = "ad", charts: bool = True) -> None:
    """The four columns: image, top-5 bar chart and verdict of each stage."""
    from pd_core.images import tensor_to_uint8

    shown = verdicts(result)
    images = {"clean": "clean", "adversarial": "adversarial", "defended": "defended", "ensemble": "defended"}
    with st.container(key=f"{key_prefix}_result_cards"):
        columns = st.columns(4)
        for column, stage in zip(columns, STAGES):
            with column:
                st.markdown(f"**{STAGE_TITLES[stage]}**", help=stage_help(result, stage))
                st.image(tensor_to_uint8(result.images[images[stage]]), width="stretch")
                verdict_badge(*shown[stage])
                if stage == "ensemble":
                    st.caption(f"{result.ensemble_agreement:.0%} of the {result.n_ensemble} defended copies "
                               f"agree (one copy shown).")
                if charts:
                    _chart(figs[f"top5_{stage}"], f"{key_prefix}_top5_{stage}")
    if charts:
        st.caption("Bars: the model's five most likely classes with their probabilities. "
                   ":green[Green] is the true class, :red[red] the class the attack pushed the model to.")


def maps_section(result, figs: dict) -> None:
    st.subheader("Where the model looks, and where the defence deflects")
    st.caption("The class activation map (CAM) shows which parts of the photo drove the answer. The robust "
               "map (R-CAM) mixes the maps of the five most likely classes; the defence deflects pixels "
               "*outside* it more often, so the object itself is mostly left alone.")
    if result.gradcam:
        st.info("This model has no global-average-pooling head, so the maps are Grad-CAM, not CAM.")
    with st.container(key="ad_maps"):
        c = st.columns(4)
        for column, key in zip(c, ("clean_rcam", "clean_cam", "adversarial_rcam", "adversarial_cam")):
            with column:
                _chart(figs[key], f"ad_{key}")
    left, right = st.columns([1, 1])
    with left:
        _chart(figs["deflections"], "ad_deflections")
    with right:
        k = len(result.deflections["y"])
        size = result.images["clean"].shape[-1]
        if k == 0 and result.defence != "pixel_deflection":
            st.markdown(f"**{result.defence_title}** does not deflect pixels: the marks above are empty. "
                        "The changes it makes are in the panels below.")
            return
        st.markdown(f"**Where pixels were deflected** (one defended run): {k} pixel values out of "
                    f"{3 * size * size:,} ({k / (3 * size * size):.2%}) were each replaced by a random "
                    f"neighbour's value within {result.config.window} pixels. Hover a dot to see where its "
                    "value came from.")
        if not result.config.use_map:
            st.caption("The map is switched off in the sidebar: pixels were drawn uniformly.")


def perturbation_section(result, figs: dict) -> None:
    factor = figs["amplification"]
    st.subheader(f"The changes, made visible (amplified ×{factor:g})")
    st.caption(f"Grey means unchanged. Each difference is multiplied by {factor:g} and added to mid-grey, "
               "so changes of a few /255 become visible; the deflected pixels saturate.")
    with st.container(key="ad_heatmaps"):
        columns = st.columns(3)
        for column, (key, _, explanation) in zip(columns, PERTURBATION_PANELS):
            with column:
                _chart(figs[key], f"ad_{key}")
                st.caption(explanation)


NORM_COLUMNS = {
    "norm_l2": ("Normalised L2 (paper's |L2|)", "{:.4f}"),
    "norm_l2_model": ("Normalised L2, model input", "{:.4f}"),
    "rmse": ("RMSE", "{:.4f}"),
    "l2": ("L2", "{:.3f}"),
    "linf_255": ("L∞ (/255)", "{:.1f}"),
    "psnr": ("PSNR (dB)", "{:.1f}"),
    "l0": ("Changed values", "{:.1%}"),
}
NORM_ROWS = {"adversarial": "attacked − clean", "defended": "defended − clean",
             "defended_vs_adversarial": "defended − attacked"}


def norms_table(result) -> None:
    import pandas as pd

    st.subheader("How big are the changes")
    rows = []
    for key, title in NORM_ROWS.items():
        values = result.norms[key]
        rows.append({"difference": title, **{name: fmt.format(values[k]) if k in values else "—"
                                            for k, (name, fmt) in NORM_COLUMNS.items()}})
    st.dataframe(pd.DataFrame(rows).set_index("difference"), width="stretch")
    st.caption("Normalised L2 = ‖change‖₂ / ‖photo‖₂ with pixels in [0, 1] (our reading of the paper's |L2| "
               "column); the same ratio after the model's own input normalisation, and the RMSE of the change "
               "in [0, 1] units, are the two other readings the paper's text allows. L∞ = the largest change "
               "of one value, in steps of 1/255; PSNR: higher means more similar (∞ = identical).")


def downloads(result, file_stem: str) -> None:
    from pd_core.images import to_png_bytes

    st.subheader("Download")
    a, b, c = st.columns(3)
    with a:
        st.download_button("Attacked photo (PNG)", to_png_bytes(result.images["adversarial"]),
                           file_name=f"{file_stem}_adversarial.png", mime="image/png",
                           help="Lossless: the file holds exactly the attacked pixels the model saw.",
                           on_click="ignore", key="dl_adv")
    with b:
        st.download_button("Defended photo (PNG)", to_png_bytes(result.images["defended"]),
                           file_name=f"{file_stem}_defended.png", mime="image/png",
                           help="The single defended run (lossless).", on_click="ignore", key="dl_def")
    with c:
        from pd_core.cli.options import demo_command

        st.download_button("All numbers (JSON)", result.to_json(demo_command(result)),
                           file_name=f"{file_stem}_results.json",
                           mime="application/json",
                           help="Predictions, probabilities, norms, seed, parameters and the command line.",
                           on_click="ignore", key="dl_json")


def data_folder_argument(path) -> str | None:
    """A data folder as a shell argument that works when pasted in the repository root: relative to
    the repository when it is the project's sibling ``../shared`` (or anywhere below the
    repository's parent), else ``"$PD_IMAGE_ROOT"/...`` when it lies in the configured data root
    (the server's own folders are never spelt out). ``None`` when neither applies."""
    import os
    import shlex
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    target = Path(path).resolve()
    configured = os.environ.get("PD_IMAGE_ROOT")
    if configured:
        root = Path(configured).resolve()
        if target == root or target.is_relative_to(root):
            rest = target.relative_to(root).as_posix()
            return '"$PD_IMAGE_ROOT"' + ("" if rest == "." else "/" + shlex.quote(rest))
    if target.is_relative_to(repo.parent):
        return shlex.quote(os.path.relpath(target, repo))
    return None


def command_line(command: str, note: str | None = None, language: str = "bash",
                 title: str = "Reproduce these numbers from the command line") -> None:
    with st.expander(title):
        st.caption(note or "The same seed and settings give the same numbers (on the same kind of device).")
        st.code(command, language=language)


def settings_changed_notice(stale: bool) -> None:
    if stale:
        st.warning("The settings changed since this result was computed; press **Run** to update it.",
                   icon=":material/update:")


def progress_reporter(status) -> Callable[[float, str], None]:
    """A ``progress(fraction, message)`` callback that moves a progress bar inside ``status``."""
    bar = status.progress(0.0, text="Starting…")

    def report(fraction: float, message: str) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=message)

    return report
