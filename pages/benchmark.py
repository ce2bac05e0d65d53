"""Benchmark: the paper's Tables 1, 3 and 4 (and Figures 2, 5, 6) on a folder of labelled photos.

Everything is computed by :mod:`pd_core.evaluation`; this page only chooses the inputs, shows the
progress and draws the results. Folders can only be picked from a list of sub-folders of the data
root configured on the server (``PD_IMAGE_ROOT``), never typed in.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import streamlit as st

from pd_core import evaluation as ev
from ui import state
from ui.cache import gallery_images, get_model
from ui.components import command_line, data_folder_argument
from ui.compute import Failed, run_heavy
from ui.sidebar import settings

GALLERY = "Sample photos (installed with the app)"
ATTACK_HELP = {
    "fgsm": "fast (one gradient step)", "igsm": "fast (10 steps)", "pgd": "medium (40 steps)",
    "deepfool": "medium", "jsma": "slow", "lbfgs": "slow", "cw": "slowest (400 optimisation steps)",
}
TABLE_HELP = {
    1: "Table 1 — no defence, one defended run, and the vote of the ensemble",
    3: "Table 3 — ablation: JPEG, wavelet denoising (WD), pixel deflection (PD) and their combinations",
    4: "Table 4 — thresholding rules after pixel deflection (Hard, VisuShrink, SUREShrink, BayesShrink)",
}


def image_root() -> Path | None:
    """The server's data folder: ``PD_IMAGE_ROOT``, else the project's sibling ``../shared``."""
    configured = os.environ.get("PD_IMAGE_ROOT")
    root = Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared"
    return root if root.is_dir() else None


@st.cache_data(ttl=120, show_spinner=False)
def folder_choices(root: str) -> list[str]:
    """Sub-folders of the root (two levels) that hold images or a labels.csv, as relative paths."""
    from pd_core.images import IMAGE_EXTENSIONS

    base = Path(root)
    found = []
    for depth in ("*", "*/*"):
        for folder in sorted(base.glob(depth)):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            try:
                files = list(folder.iterdir())
            except OSError:
                continue
            if any(f.name == "labels.csv" for f in files) or any(
                    f.suffix.lower() in IMAGE_EXTENSIONS for f in files[:2000]):
                found.append(folder.relative_to(base).as_posix())
    return found


def session_dir() -> Path:
    """A private results folder per browser session (results survive page changes and reruns)."""
    sid = st.session_state.setdefault("_benchmark_session", uuid.uuid4().hex)
    path = Path(tempfile.gettempdir()) / "pd_benchmark" / sid
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_file(source_key: str, cfg, model_name: str, seed: int, ensemble: int, tuning: float) -> Path:
    """One CSV per (images, model, defence, seed, ensemble, split): pressing Run again with more
    attacks, another table or more images only computes what is missing (the run is resumable)."""
    key = json.dumps([source_key, model_name, cfg.as_dict(), seed, ensemble, tuning], sort_keys=True)
    return session_dir() / f"results_{hashlib.sha256(key.encode()).hexdigest()[:16]}.csv"


def eta_reporter(bar, started: float):
    def report(fraction: float, message: str) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        elapsed = time.monotonic() - started
        if fraction > 0.02 and elapsed > 3:
            left = elapsed * (1 - fraction) / fraction
            eta = f"about {left / 60:.0f} min left" if left >= 90 else f"about {left:.0f} s left"
        else:
            eta = "estimating the time left…"
        bar.progress(fraction, text=f"{100 * fraction:.0f}% · {eta} · {message}")

    return report


def ray_option() -> tuple[bool, int]:
    """The choice of a local Ray cluster (issue 12): ``(use it, number of workers)``."""
    import importlib.util

    installed = importlib.util.find_spec("ray") is not None
    use = st.checkbox("Run on a local Ray cluster with N workers", key="bench_ray", disabled=not installed,
                      help="The same results, computed by N worker processes of this server (the engine of "
                           "`python -m pd_core evaluate --ray local:N`).")
    if not installed:
        st.caption("Ray is not installed on this server: install it with `pip install -e '.[ray]'` in the "
                   "project's folder to use this option.")
        return False, 1
    st.caption("Splits the run into units shared by N workers on this server (one per GPU, or N one-thread CPU "
               "workers): worth it on a GPU server or a many-core machine, not on a small laptop. Needs `ray` installed.")
    workers = st.number_input("Workers (N)", 1, 64, **state.sticky("bench_ray_workers", 2), disabled=not use)
    return use, int(workers)


def ray_progress_text(snap) -> str:
    """One line for a :class:`~pd_core.evaluation.dispatch.ProgressSnapshot` of the Ray engine."""
    left = snap.seconds_left
    eta = ("estimating the time left" if left != left else
           f"about {left / 60:.0f} min left" if left >= 90 else f"about {left:.0f} s left")
    return (f"{snap.done}/{snap.total} units done, {snap.total - snap.done} left"
            + (f" ({snap.resumed} resumed)" if snap.resumed else "")
            + f" · {snap.workers} workers · {snap.rate * 60:.1f} units/min · {eta} · "
              f"{snap.failed} failed, {snap.retried} retried")


def run_on_ray(bar, workers: int, **kwargs):
    """The benchmark on a local Ray cluster (:func:`pd_core.evaluation.distributed.evaluate_distributed`),
    its progress drawn on ``bar``; returns the result and the last progress line."""
    from pd_core.evaluation import distributed

    shown = {"text": ""}

    def show(snap) -> None:
        shown["text"] = ray_progress_text(snap)
        bar.progress(min(max(snap.fraction, 0.0), 1.0), text=shown["text"])

    result = distributed.evaluate_distributed(ray=f"local:{workers}", threads=1, on_progress=show, **kwargs)
    return result, shown["text"]


SWEEP_FILES = Path(__file__).resolve().parent.parent / "docs" / "results"
UPLOAD = "Upload a sweep results file"


def sweep_section() -> None:
    """Accuracy against perturbation size (issue 13): the curves of a ``python -m pd_core sweep``
    results file (one of docs/results/sweep*.csv, or an upload), drawn by pd_core.evaluation.curve_figures."""
    from pd_core.evaluation.curve_figures import MEASURE_TITLES, SWEEP_CAPTION, sweep_figures
    from pd_core.evaluation.sweeps import sweep_summary

    st.divider()
    st.subheader("Accuracy against perturbation size")
    st.caption("Each attack at a range of strengths (ε for FGSM and IGSM, overshoot for DeepFool, C&W and L-BFGS, "
               "γ for JSMA): how accuracy falls, without defence and with it, as the change to the photo grows. "
               "Made by `python -m pd_core sweep` (long runs: see docs/results.md).")
    files = sorted(p.name for p in SWEEP_FILES.glob("sweep*.csv"))
    source = st.selectbox("Sweep results", files + [UPLOAD], key="bench_sweep_file")
    path = SWEEP_FILES / source if source != UPLOAD else None
    if path is None:
        upload = st.file_uploader("Sweep results (CSV)", type=["csv"], key="bench_sweep_upload")
        if upload is None:
            return
        path = session_dir() / "uploaded_sweep.csv"
        path.write_bytes(upload.getvalue())
    measure = st.radio("Perturbation size measured as", list(MEASURE_TITLES), format_func=MEASURE_TITLES.get,
                       horizontal=True, key="bench_sweep_measure",
                       help="The paper's |L2| could be any of these three (issue 13); its points are drawn at all three.")
    try:
        summary = sweep_summary(ev.read_results(path))
    except (ev.EvaluationError, ValueError, KeyError) as exc:
        st.error(f"That file could not be read as sweep results: {exc}")
        return
    if summary.empty:
        st.info("That file has no sweep rows (its presets carry no '@parameter=value').")
        return
    for (attack, preset), fig in sweep_figures(summary, measure).items():
        st.plotly_chart(fig, width="stretch", key=f"bench_sweep_{attack}_{preset}")
        n = int(summary[(summary["attack"] == attack) & (summary["preset"] == preset)]["n"].max())
        st.caption(f"{ev.ATTACK_TITLES.get(attack, attack)}, {preset} preset: up to {n} photos per point.")
    st.caption(SWEEP_CAPTION)


# ------------------------------------------------------------------------------------------ page
cfg_settings = settings()
st.title("Benchmark")
st.caption("The paper's experiment on a whole folder of labelled photos: attack every photo, defend it, and count "
           "how often the model's answer is right. Photos the model gets wrong *before* any attack are left out "
           "(as in the paper), so the clean, undefended row is 100% by construction. Every percentage comes "
           "with its 95% confidence interval: with few photos the intervals are wide.")

root = image_root()
choices = [GALLERY] + (folder_choices(str(root)) if root is not None else [])
left, right = st.columns([1, 1], gap="large")
with left:
    folder = st.selectbox("Photos", choices, **state.sticky("bench_folder", GALLERY),
                          help="The sample photos, or a folder of the server's data directory. Labels come from "
                               "the folder's labels.csv (columns file, class_index) or from ImageNet WordNet ids "
                               "at the start of the file names (n01440764_…).")
    if root is None:
        st.caption("No data folder is configured on this server (environment variable PD_IMAGE_ROOT), so only "
                   "the sample photos can be used.")
    table = st.radio("Table", [1, 3, 4], format_func=TABLE_HELP.get, **state.sticky("bench_table", 1))
    preset = st.radio("Attack strength", ["paper", "large"], horizontal=True,
                      format_func={"paper": "Paper's budgets (Table 1)",
                                   "large": "Large perturbations (Table 1, lower half)"}.get,
                      **state.sticky("bench_preset", "paper"))
with right:
    from pd_core.attacks import ATTACKS

    attacks = st.multiselect("Attacks", list(ATTACKS), format_func=lambda a: f"{ATTACKS[a].title} — {ATTACK_HELP.get(a, '')}",
                             **state.sticky("bench_attacks", ["fgsm", "igsm", "deepfool"]),
                             help="Every attack adds a row. The clean row is always computed. On a CPU, "
                                  "JSMA, L-BFGS and C&W take minutes per photo: try them on a few photos first.")
    on_gpu = cfg_settings.device.startswith("cuda")
    limit = st.slider("Photos to use (at most)", 1, 200, **state.sticky("bench_limit", 100 if on_gpu else 10),
                      help="The first N photos of the folder in a fixed shuffled order; more photos give "
                           "narrower confidence intervals but take longer.")
    ensemble = st.slider("Copies in the ensemble vote", 1, 10, **state.sticky("bench_ensemble", 10),
                         help="Ens-10 in the paper: the defence is run 10 times with different random deflections "
                              "and the majority answer wins. 1 = single run only (fastest).")
    tuning = st.slider("Held apart for tuning (Figure 5)", 0.0, 0.5, step=0.05,
                       **state.sticky("bench_tuning", ev.DEFAULT_TUNING_FRACTION),
                       help="This share of the photos is never used in the tables: the parameter search of "
                            "Figure 5 runs on it only, so parameters are never chosen on the photos they are "
                            "judged on (paper §9.1). The split is fixed by the file names.")
    use_ray, ray_workers = ray_option()

if folder == GALLERY:
    images = [(g.path, g.label_index) for g in gallery_images()]
    source_key, source_arg = "gallery", None
else:
    from pd_core.images import InputError, safe_resolve

    try:
        path = safe_resolve(root, folder)
    except InputError as exc:
        st.error(str(exc))
        st.stop()
    images, source_key, source_arg = path, f"folder:{folder}", path

model = get_model(cfg_settings.model_name, cfg_settings.device)
config = cfg_settings.config
if config != ev.PAPER_DEFAULTS:
    st.info("The defence parameters in the sidebar differ from the paper's; the tables use the sidebar's values.",
            icon=":material/tune:")
out = results_file(source_key, config, model.name, cfg_settings.seed, ensemble, tuning)
if use_ray:  # its own file: a Ray run writes the merged shards over its CSV
    out = out.with_name(f"{out.stem}_ray{out.suffix}")
run = st.button("Run the benchmark", type="primary", icon=":material/play_arrow:",
                help="Runs in batches; if it is interrupted (you leave the page), pressing Run again continues "
                     "where it stopped.")

if run:
    with st.status("Running the benchmark…", expanded=True) as status:
        bar = status.progress(0.0, text="Starting…")
        try:
            ray_text = ""
            if use_ray:
                result, ray_text = run_heavy(
                    lambda: run_on_ray(bar, ray_workers, model_name=model.name, images=ev.load_items(images),
                                       store=out.with_suffix(".shards"), out_csv=out, attacks=attacks, preset=preset,
                                       table=table, ensemble=ensemble, limit=limit, seed=cfg_settings.seed,
                                       config=config, tuning_fraction=tuning, batch_size=32 if on_gpu else 8),
                    "the benchmark", cfg_settings.device)
            else:
                result = run_heavy(lambda: ev.evaluate(model, images, attacks=attacks, preset=preset, table=table,
                                                       ensemble=ensemble, limit=limit, seed=cfg_settings.seed,
                                                       out_csv=out, progress=eta_reporter(bar, time.monotonic()),
                                                       config=config, tuning_fraction=tuning,
                                                       batch_size=32 if on_gpu else 8),
                                   "the benchmark", cfg_settings.device)
            st.session_state["bench_result"] = {"csv": str(out), "table": table, "preset": preset,
                                                "ensemble": ensemble, "images": result.images,
                                                "unreadable": result.unreadable, "seconds": result.seconds,
                                                "ray": ray_text}
            status.update(label=f"Done in {result.seconds:.0f} s", state="complete", expanded=False)
        except ev.EvaluationError as exc:
            st.error(str(exc))
            status.update(label="That did not work", state="error")
        except Failed:
            status.update(label="That did not work", state="error")

last = st.session_state.get("bench_result")
if not last or not Path(last["csv"]).exists():
    st.info("Press **Run the benchmark**. With the defaults (10 sample photos, FGSM, IGSM and DeepFool, Ens-10) it "
            "takes a few minutes on a CPU, seconds on a GPU.", icon=":material/touch_app:")
    sweep_section()
    st.stop()

rows = ev.read_results(last["csv"])
if last["csv"] != str(out):
    st.warning("The settings changed since these results were computed; press **Run** to update them.",
               icon=":material/update:")
table_shown, preset_shown = last["table"], last["preset"]
frame = ev.table_frame(rows, table_shown, preset_shown, last["ensemble"])
clean = rows[(rows["attack"] == "clean") & (rows["defence"] == "none")]
kept = int((clean["correct"].astype(int) == 1).sum())
st.subheader(TABLE_HELP[table_shown].split(" — ")[0] + f" · {model.spec.title} · {preset_shown} budgets")
st.markdown(f"**{kept}** photos counted; **{len(clean) - kept}** left out because the model was wrong before any "
            f"attack." + (f" {len(last['unreadable'])} file(s) could not be read and were skipped."
                          if last.get("unreadable") else ""))
if last.get("ray"):
    st.caption(f"Computed on a local Ray cluster: {last['ray']}.")

defence_cols = [c for c in frame.columns if c not in ("attack", "key", "n", "|L2|", "paper |L2|")
                and not c.endswith((" CI", " n")) and not c.startswith("paper ")]
display = frame[["attack", "n", "|L2|"]].copy()
for c in defence_cols:
    display[c] = [f"{a:.1f}  ({ci})" if a == a else "—" for a, ci in zip(frame[c], frame[f"{c} CI"])]
    display[f"paper {c}"] = frame[f"paper {c}"]
display["paper |L2|"] = frame["paper |L2|"]
st.dataframe(display, hide_index=True, width="stretch",
             column_config={"|L2|": st.column_config.NumberColumn("|L2| here", format="%.3f",
                                                                  help="Mean normalised L2 size of the attack"),
                            "paper |L2|": st.column_config.NumberColumn(format="%.2f"),
                            **{f"paper {c}": st.column_config.NumberColumn(
                                "paper " + ("Ens-10" if c.startswith("Ens-") else c), format="%.1f",
                                                                           help="The paper's ResNet-50 number")
                               for c in defence_cols}})
st.caption("Each cell: top-1 accuracy in % and its 95% Wilson confidence interval; 'paper' columns: the paper's "
           "numbers for ResNet-50 on its own 1000 ImageNet photos (a different model and different photos, "
           "so expect differences; docs/results.md discusses them).")

import plotly.graph_objects as go  # noqa: E402

fig = go.Figure()
for c in defence_cols:
    fig.add_bar(name=c, x=frame["attack"], y=frame[c],
                error_y=dict(type="data", symmetric=False,
                             array=[float(hi) - a if a == a else 0 for a, hi in
                                    zip(frame[c], [float(s.split("–")[1]) if s else 0 for s in frame[f"{c} CI"]])],
                             arrayminus=[a - float(lo) if a == a else 0 for a, lo in
                                         zip(frame[c], [float(s.split("–")[0]) if s else 0 for s in frame[f"{c} CI"]])]))
    fig.add_scatter(name=f"paper {c}", x=frame["attack"], y=frame[f"paper {c}"], mode="markers",
                    marker=dict(symbol="line-ew-open", size=18, line=dict(width=3)), showlegend=True)
fig.update_layout(barmode="group", yaxis_title="top-1 accuracy (%)", yaxis_range=[0, 105], height=420,
                  legend_orientation="h", margin=dict(t=30, b=10))
st.plotly_chart(fig, width="stretch", key="bench_bars")
st.caption("Bars: measured here, with 95% intervals. Dashes: the paper's numbers.")

ranks = ev.rank_histogram(rows, preset=preset_shown)
pooled = ranks[ranks["attack"] == "all"]
if pooled["count"].sum() > 0:
    with st.expander("Where does the attack send the model? (paper Figure 6)", expanded=False):
        st.caption("For every successful attack: the rank the attacker's class had among the model's top-5 answers on "
                   "the clean photo (0 = not in the top-5), and the rank of the true class among the top-5 answers "
                   "on the attacked photo. The paper found the attacker's class was the clean photo's runner-up "
                   "about 40% of the time: that is why the defence's map uses the top-5 classes, not just the first.")
        fig6 = go.Figure()
        for direction, g in pooled.groupby("direction"):
            fig6.add_bar(name=direction, x=[str(r) for r in g["rank"]], y=100 * g["fraction"])
        fig6.update_layout(barmode="group", xaxis_title="rank (0 = not in the top-5)", yaxis_title="% of attacks",
                           height=330, legend_orientation="h", margin=dict(t=20, b=10))
        st.plotly_chart(fig6, width="stretch", key="bench_fig6")

with st.expander("The table as text, the files, and the command line"):
    st.code(ev.format_table(rows, table_shown, preset_shown, ensemble=last["ensemble"]), language=None)
    a, b = st.columns(2)
    with a:
        st.download_button("All results (CSV)", Path(last["csv"]).read_bytes(), file_name="benchmark_results.csv",
                           mime="text/csv", on_click="ignore",
                           help="One row per (photo, attack, defence): prediction, correct, norms, seed.")
    with b:
        meta = Path(last["csv"] + ".meta.json")
        if meta.exists():
            st.download_button("Run details (JSON)", meta.read_bytes(), file_name="benchmark_results.csv.meta.json",
                               mime="application/json", on_click="ignore",
                               help="Model, parameters, library versions, seed and dates of the run.")
    images_arg = data_folder_argument(source_arg) if source_arg is not None else None
    if images_arg is not None:
        cmd = (f"python -m pd_core evaluate --images {images_arg} --model {model.name} "
               f"--attacks {','.join(attacks)} --preset {preset} --table {table} --ensemble {ensemble} "
               f"--limit {limit} --seed {cfg_settings.seed} --tuning-fraction {tuning} --out results.csv")
        command_line(cmd, "Run it in the project's folder" + (" with PD_IMAGE_ROOT set as on this server."
                                                              if os.environ.get("PD_IMAGE_ROOT") else "."))

st.divider()
st.subheader("Figures")
fig_left, fig_right = st.columns(2, gap="large")
with fig_left:
    st.markdown("**Figure 2 — how many deflections does it take?**")
    st.caption("Mean probability of the true class and of the attacker's class as more pixels are deflected "
               "(deflection alone, no denoising, as in the paper), on attacked and on clean photos.")
    n_fig2 = st.slider("Photos", 2, 32, **state.sticky("bench_fig2_n", 8))
    if st.button("Compute Figure 2", key="fig2_run", disabled=not attacks):
        from pd_core.evaluation import load_items, split_tuning
        from pd_core.images import load_batch

        try:
            evaluation_items, _ = split_tuning(load_items(images), tuning)
        except ev.EvaluationError as exc:
            st.error(str(exc))
            st.stop()
        chosen = evaluation_items[:n_fig2]
        with st.status("Computing Figure 2…", expanded=True) as status:
            bar = status.progress(0.0)
            try:
                def job():
                    import torch

                    x = load_batch([it.path for it in chosen], spec=model.spec, device=model.device)
                    y = torch.tensor([it.label for it in chosen], device=model.device)
                    return ev.deflection_curve(model, x, y, attack=attacks[0], preset=preset, seed=cfg_settings.seed,
                                               progress=eta_reporter(bar, time.monotonic()))

                st.session_state["bench_fig2"] = (attacks[0], run_heavy(job, "Figure 2", cfg_settings.device))
                status.update(label="Done", state="complete", expanded=False)
            except Failed:
                status.update(label="That did not work", state="error")
    if "bench_fig2" in st.session_state:
        attack2, curve = st.session_state["bench_fig2"]
        if curve.empty:
            st.info("The attack fooled none of these photos; try more photos or a stronger attack.")
        else:
            fig2 = go.Figure()
            for (kind, cls), g in curve.groupby(["image", "class"]):
                fig2.add_scatter(x=g["deflections"], y=g["mean_prob"], mode="lines+markers",
                                 name=f"{cls} class, {kind} photos",
                                 line=dict(dash="solid" if kind == "adversarial" else "dot"),
                                 error_y=dict(type="data", array=g["sem"]))
            fig2.update_layout(xaxis_title="deflections K", yaxis_title="mean probability", height=360,
                               legend_orientation="h", margin=dict(t=20, b=10), xaxis_type="log")
            st.plotly_chart(fig2, width="stretch", key="bench_fig2_chart")
            st.caption(f"{attack2.upper()} at the {preset} budget, {int(curve['n'].iloc[0])} photos "
                       "the attack fooled. K = 0 is plotted at the left edge of the log axis.")
with fig_right:
    st.markdown("**Figure 5 — the parameter search (on the held-apart photos only)**")
    st.caption("Accuracy when one of σ, the window r or the number of deflections K moves away from the paper's "
               "values, the others fixed. Computed only on the photos held apart for tuning.")
    if st.button("Compute Figure 5", key="fig5_run", disabled=tuning <= 0 or not attacks):
        with st.status("Computing Figure 5…", expanded=True) as status:
            bar = status.progress(0.0)
            try:
                grid = run_heavy(lambda: ev.tuning_grid(model, images, attacks=attacks[:1], preset=preset,
                                                        sigmas=(0.02, 0.04, 0.08), windows=(5, 10, 20),
                                                        deflections=(50, 100, 200, 400), seed=cfg_settings.seed,
                                                        tuning_fraction=tuning, limit=16 if not on_gpu else None,
                                                        progress=eta_reporter(bar, time.monotonic())),
                                 "Figure 5", cfg_settings.device)
                st.session_state["bench_fig5"] = grid
                status.update(label="Done", state="complete", expanded=False)
            except ev.EvaluationError as exc:
                st.error(str(exc))
                status.update(label="That did not work", state="error")
            except Failed:
                status.update(label="That did not work", state="error")
    if "bench_fig5" in st.session_state:
        grid = st.session_state["bench_fig5"]
        from plotly.subplots import make_subplots

        fig5 = make_subplots(rows=1, cols=3, shared_yaxes=True, subplot_titles=("σ", "window r", "deflections K"))
        default = grid[grid["varied"] == "default"]
        for col, (param, column) in enumerate((("sigma", "sigma"), ("window", "window"),
                                               ("deflections", "deflections")), start=1):
            for attack5, g in grid[grid["varied"].isin([param, "default"])].groupby("attack"):
                g = g.sort_values(column)
                fig5.add_scatter(x=g[column], y=100 * g["accuracy"], mode="lines+markers", name=attack5,
                                 legendgroup=attack5, showlegend=col == 1, row=1, col=col,
                                 error_y=dict(type="data", symmetric=False, array=100 * (g["ci_high"] - g["accuracy"]),
                                              arrayminus=100 * (g["accuracy"] - g["ci_low"])))
        fig5.update_layout(height=360, yaxis_title="accuracy (%)", legend_orientation="h", margin=dict(t=30, b=10))
        st.plotly_chart(fig5, width="stretch", key="bench_fig5_chart")
        st.caption(f"{int(default['n'].max()) if not default.empty else 0} held-apart photos per point. The tables "
                   "above keep the paper's parameters whatever this shows.")

sweep_section()
