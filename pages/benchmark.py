"""Benchmark: the paper's Tables 1, 3 and 4 (and Figures 2, 5, 6) on a folder of labelled photos.

Everything is computed by :mod:`pd_core.evaluation`; this page only chooses the inputs, shows the
progress and draws the results. Folders can only be picked from a list of sub-folders of the data
root configured on the server (``PD_IMAGE_ROOT``), never typed in.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import streamlit as st

from pd_core import evaluation as ev
from pd_core.cli.options import ShellWord, evaluate_command
from pd_core.defence import PAPER_DEFAULTS
from pd_core.evaluation.table_figures import (deflection_curve_figure, rank_figure, table_bars_figure,
                                              table_defence_columns, tuning_figure)
from ui import state
from ui.benchmark import (eta_reporter, folder_choices, image_root, ray_option, results_file, run_on_ray,
                          sweep_section)
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
if config != PAPER_DEFAULTS:
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

defence_cols = table_defence_columns(frame)
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

st.plotly_chart(table_bars_figure(frame), width="stretch", key="bench_bars")
st.caption("Bars: measured here, with 95% intervals. Dashes: the paper's numbers.")

ranks = ev.rank_histogram(rows, preset=preset_shown)
pooled = ranks[ranks["attack"] == "all"]
if pooled["count"].sum() > 0:
    with st.expander("Where does the attack send the model? (paper Figure 6)", expanded=False):
        st.caption("For every successful attack: the rank the attacker's class had among the model's top-5 answers on "
                   "the clean photo (0 = not in the top-5), and the rank of the true class among the top-5 answers "
                   "on the attacked photo. The paper found the attacker's class was the clean photo's runner-up "
                   "about 40% of the time: that is why the defence's map uses the top-5 classes, not just the first.")
        st.plotly_chart(rank_figure(ranks), width="stretch", key="bench_fig6")

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
        cmd = evaluate_command(images=ShellWord(images_arg), model=model.name, attacks=attacks, preset=preset,
                               table=table, ensemble=ensemble, limit=limit, seed=cfg_settings.seed,
                               tuning_fraction=tuning)
        command_line(cmd, "Run it in the project's folder" + (" with PD_IMAGE_ROOT set as on this server."
                                                              if os.environ.get("PD_IMAGE_ROOT") else ".")
                     + ("" if config == ev.PAPER_DEFAULTS else
                        " The command line evaluates the paper's defence parameters, not the sidebar's."))

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
            st.plotly_chart(deflection_curve_figure(curve), width="stretch", key="bench_fig2_chart")
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
        default = grid[grid["varied"] == "default"]
        st.plotly_chart(tuning_figure(grid), width="stretch", key="bench_fig5_chart")
        st.caption(f"{int(default['n'].max()) if not default.empty else 0} held-apart photos per point. The tables "
                   "above keep the paper's parameters whatever this shows.")

sweep_section()
