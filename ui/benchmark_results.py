"""The Benchmark page's results: the table with its intervals and the paper's numbers, Figure 6,
the files and the command line, and Figures 2 and 5 on demand."""
from __future__ import annotations

import os
import time
from pathlib import Path

import streamlit as st

from . import state
from .benchmark import eta_reporter
from .benchmark_page import BenchmarkChoice, table_help
from .components import command_line, data_folder_argument
from .compute import Failed, run_heavy

__all__ = ["results_section", "figure2_section", "figure5_section"]


def _table(frame) -> None:
    from pd_core.evaluation.table_figures import table_defence_columns

    defence_cols = table_defence_columns(frame)
    display = frame[["attack", "n", "|L2|"]].copy()
    for c in defence_cols:
        display[c] = [f"{a:.1f}  ({ci})" if a == a else "—" for a, ci in zip(frame[c], frame[f"{c} CI"])]
        display[f"paper {c}"] = frame[f"paper {c}"]
    display["paper |L2|"] = frame["paper |L2|"]
    paper_columns = {f"paper {c}": st.column_config.NumberColumn("paper " + ("Ens-10" if c.startswith("Ens-") else c),
                                                                 format="%.1f", help="The paper's ResNet-50 number")
                     for c in defence_cols}
    st.dataframe(display, hide_index=True, width="stretch",
                 column_config={"|L2|": st.column_config.NumberColumn("|L2| here", format="%.3f",
                                                                      help="Mean normalised L2 size of the attack"),
                                "paper |L2|": st.column_config.NumberColumn(format="%.2f"), **paper_columns})
    st.caption("Each cell: top-1 accuracy in % and its 95% Wilson confidence interval; 'paper' columns: the paper's "
               "numbers for ResNet-50 on its own 1000 ImageNet photos (a different model and different photos, "
               "so expect differences; docs/results.md discusses them).")


def _figure6(rows, preset_shown: str) -> None:
    from pd_core import evaluation as ev
    from pd_core.evaluation.table_figures import rank_figure

    ranks = ev.rank_histogram(rows, preset=preset_shown)
    if ranks[ranks["attack"] == "all"]["count"].sum() <= 0:
        return
    with st.expander("Where does the attack send the model? (paper Figure 6)", expanded=False):
        st.caption("For every successful attack: the rank the attacker's class had among the model's top-5 answers on "
                   "the clean photo (0 = not in the top-5), and the rank of the true class among the top-5 answers "
                   "on the attacked photo. The paper found the attacker's class was the clean photo's runner-up "
                   "about 40% of the time: that is why the defence's map uses the top-5 classes, not just the first.")
        st.plotly_chart(rank_figure(ranks), width="stretch", key="bench_fig6")


def _files_and_command(rows, last: dict, choice: BenchmarkChoice, model, cfg_settings) -> None:
    from pd_core import evaluation as ev
    from pd_core.cli.options import ShellWord, evaluate_command
    from pd_core.defence import PAPER_DEFAULTS

    with st.expander("The table as text, the files, and the command line"):
        st.code(ev.format_table(rows, last["table"], last["preset"], ensemble=last["ensemble"]), language=None)
        a, b = st.columns(2)
        with a:
            st.download_button("All results (CSV)", Path(last["csv"]).read_bytes(), file_name="benchmark_results.csv",
                               mime="text/csv", on_click="ignore",
                               help="One row per (photo, attack, defence): prediction, correct, norms, seed.")
        with b:
            meta = Path(last["csv"] + ".meta.json")
            if meta.exists():
                st.download_button("Run details (JSON)", meta.read_bytes(),
                                   file_name="benchmark_results.csv.meta.json", mime="application/json",
                                   on_click="ignore", help="Model, parameters, library versions, seed and dates of the run.")
        images_arg = data_folder_argument(choice.source_arg) if choice.source_arg is not None else None
        if images_arg is None:
            return
        cmd = evaluate_command(images=ShellWord(images_arg), model=model.name, attacks=choice.attacks,
                               preset=choice.preset, table=choice.table, ensemble=choice.ensemble, limit=choice.limit,
                               seed=cfg_settings.seed, tuning_fraction=choice.tuning)
        command_line(cmd, "Run it in the project's folder" + (" with PD_IMAGE_ROOT set as on this server."
                                                              if os.environ.get("PD_IMAGE_ROOT") else ".")
                     + ("" if cfg_settings.config == PAPER_DEFAULTS else
                        " The command line evaluates the paper's defence parameters, not the sidebar's."))


def results_section(last: dict, out: Path, choice: BenchmarkChoice, model, cfg_settings) -> None:
    """The last run's table (its own settings), the bars, Figure 6, the files and the command."""
    from pd_core import evaluation as ev
    from pd_core.evaluation.table_figures import table_bars_figure

    rows = ev.read_results(last["csv"])
    if last["csv"] != str(out):
        st.warning("The settings changed since these results were computed; press **Run** to update them.",
                   icon=":material/update:")
    table_shown, preset_shown = last["table"], last["preset"]
    frame = ev.table_frame(rows, table_shown, preset_shown, last["ensemble"])
    clean = rows[(rows["attack"] == "clean") & (rows["defence"] == "none")]
    kept = int((clean["correct"].astype(int) == 1).sum())
    st.subheader(table_help()[table_shown].split(" — ")[0] + f" · {model.spec.title} · {preset_shown} budgets")
    st.markdown(f"**{kept}** photos counted; **{len(clean) - kept}** left out because the model was wrong before any "
                f"attack." + (f" {len(last['unreadable'])} file(s) could not be read and were skipped."
                              if last.get("unreadable") else ""))
    if last.get("ray"):
        st.caption(f"Computed on a local Ray cluster: {last['ray']}.")
    _table(frame)
    st.plotly_chart(table_bars_figure(frame), width="stretch", key="bench_bars")
    st.caption("Bars: measured here, with 95% intervals. Dashes: the paper's numbers.")
    _figure6(rows, preset_shown)
    _files_and_command(rows, last, choice, model, cfg_settings)


def _figure2_job(choice: BenchmarkChoice, model, cfg_settings, chosen, bar):
    import torch

    from pd_core import evaluation as ev
    from pd_core.images import load_batch

    x = load_batch([it.path for it in chosen], spec=model.spec, device=model.device)
    y = torch.tensor([it.label for it in chosen], device=model.device)
    from dataclasses import replace

    from pd_core.evaluation.figures import FIGURE2

    return ev.deflection_curve(model, x, y, replace(FIGURE2, seed=cfg_settings.seed), attack=choice.attacks[0],
                               preset=choice.preset, progress=eta_reporter(bar, time.monotonic()))


def figure2_section(choice: BenchmarkChoice, model, cfg_settings) -> None:
    """Paper Figure 2 on the evaluation photos: probabilities against the number of deflections."""
    from pd_core import evaluation as ev
    from pd_core.evaluation.table_figures import deflection_curve_figure

    st.markdown("**Figure 2 — how many deflections does it take?**")
    st.caption("Mean probability of the true class and of the attacker's class as more pixels are deflected "
               "(deflection alone, no denoising, as in the paper), on attacked and on clean photos.")
    n_fig2 = st.slider("Photos", 2, 32, **state.sticky("bench_fig2_n", 8))
    if st.button("Compute Figure 2", key="fig2_run", disabled=not choice.attacks):
        try:
            evaluation_items, _ = ev.split_tuning(ev.load_items(choice.images), choice.tuning)
        except ev.EvaluationError as exc:
            st.error(str(exc))
            st.stop()
        with st.status("Computing Figure 2…", expanded=True) as status:
            bar = status.progress(0.0)
            try:
                curve = run_heavy(lambda: _figure2_job(choice, model, cfg_settings, evaluation_items[:n_fig2], bar),
                                  "Figure 2", cfg_settings.device)
                st.session_state["bench_fig2"] = (choice.attacks[0], curve)
                status.update(label="Done", state="complete", expanded=False)
            except Failed:
                status.update(label="That did not work", state="error")
    if "bench_fig2" in st.session_state:
        attack2, curve = st.session_state["bench_fig2"]
        if curve.empty:
            st.info("The attack fooled none of these photos; try more photos or a stronger attack.")
        else:
            st.plotly_chart(deflection_curve_figure(curve), width="stretch", key="bench_fig2_chart")
            st.caption(f"{attack2.upper()} at the {choice.preset} budget, {int(curve['n'].iloc[0])} photos "
                       "the attack fooled. K = 0 is plotted at the left edge of the log axis.")


def figure5_section(choice: BenchmarkChoice, model, cfg_settings) -> None:
    """Paper Figure 5: the parameter search, on the held-apart tuning photos only."""
    from pd_core import evaluation as ev
    from pd_core.evaluation.figures import TuningGrid
    from pd_core.evaluation.settings import RunSettings
    from pd_core.evaluation.table_figures import tuning_figure

    st.markdown("**Figure 5 — the parameter search (on the held-apart photos only)**")
    st.caption("Accuracy when one of σ, the window r or the number of deflections K moves away from the paper's "
               "values, the others fixed. Computed only on the photos held apart for tuning.")
    if st.button("Compute Figure 5", key="fig5_run", disabled=choice.tuning <= 0 or not choice.attacks):
        with st.status("Computing Figure 5…", expanded=True) as status:
            bar = status.progress(0.0)
            try:
                search = TuningGrid(attacks=tuple(choice.attacks[:1]), preset=choice.preset,
                                    sigmas=(0.02, 0.04, 0.08), windows=(5, 10, 20), deflections=(50, 100, 200, 400))
                run = RunSettings(ensemble=1, seed=cfg_settings.seed, tuning_fraction=choice.tuning,
                                  limit=16 if not choice.on_gpu else None)
                grid = run_heavy(lambda: ev.tuning_grid(model, choice.images, search, run,
                                                        progress=eta_reporter(bar, time.monotonic())),
                                 "Figure 5", cfg_settings.device)
                st.session_state["bench_fig5"] = grid
                status.update(label="Done", state="complete", expanded=False)
            except (ev.EvaluationError, Failed) as exc:
                if isinstance(exc, ev.EvaluationError):
                    st.error(str(exc))
                status.update(label="That did not work", state="error")
    if "bench_fig5" in st.session_state:
        grid = st.session_state["bench_fig5"]
        default = grid[grid["varied"] == "default"]
        st.plotly_chart(tuning_figure(grid), width="stretch", key="bench_fig5_chart")
        st.caption(f"{int(default['n'].max()) if not default.empty else 0} held-apart photos per point. The tables "
                   "above keep the paper's parameters whatever this shows.")
