"""Benchmark: the paper's Tables 1, 3 and 4 (and Figures 2, 5, 6) on a folder of labelled photos.

Everything is computed by :mod:`pd_core.evaluation`; this page only chooses the inputs, shows the
progress and draws the results (:mod:`ui.benchmark_page`, :mod:`ui.benchmark_results`). Folders
can only be picked from a list of sub-folders of the data root configured on the server
(``PD_IMAGE_ROOT``), never typed in.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from pd_core.defence import PAPER_DEFAULTS
from ui.benchmark import sweep_section
from ui.benchmark_page import benchmark_controls, results_path, run_benchmark
from ui.benchmark_results import figure2_section, figure5_section, results_section
from ui.cache import get_model
from ui.sidebar import settings

cfg_settings = settings()
st.title("Benchmark")
st.caption("The paper's experiment on a whole folder of labelled photos: attack every photo, defend it, and count "
           "how often the model's answer is right. Photos the model gets wrong *before* any attack are left out "
           "(as in the paper), so the clean, undefended row is 100% by construction. Every percentage comes "
           "with its 95% confidence interval: with few photos the intervals are wide.")

choice = benchmark_controls(cfg_settings)
model = get_model(cfg_settings.model_name, cfg_settings.device)
if cfg_settings.config != PAPER_DEFAULTS:
    st.info("The defence parameters in the sidebar differ from the paper's; the tables use the sidebar's values.",
            icon=":material/tune:")
out = results_path(choice, model, cfg_settings)
if st.button("Run the benchmark", type="primary", icon=":material/play_arrow:",
             help="Runs in batches; if it is interrupted (you leave the page), pressing Run again continues "
                  "where it stopped."):
    run_benchmark(choice, model, cfg_settings, out)

last = st.session_state.get("bench_result")
if not last or not Path(last["csv"]).exists():
    st.info("Press **Run the benchmark**. With the defaults (10 sample photos, FGSM, IGSM and DeepFool, Ens-10) it "
            "takes a few minutes on a CPU, seconds on a GPU.", icon=":material/touch_app:")
    sweep_section()
    st.stop()

results_section(last, out, choice, model, cfg_settings)
st.divider()
st.subheader("Figures")
fig_left, fig_right = st.columns(2, gap="large")
with fig_left:
    figure2_section(choice, model, cfg_settings)
with fig_right:
    figure5_section(choice, model, cfg_settings)
sweep_section()
