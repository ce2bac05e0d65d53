"""The Benchmark page's sections: the choices, the run, the table and the figures (paper Tables
1, 3, 4 and Figures 2, 5, 6). Everything is computed by :mod:`pd_core.evaluation` through
``run_heavy``; the table titles and column names come from the defence registry.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from . import state
from .benchmark import eta_reporter, folder_choices, image_root, ray_option, results_file, run_on_ray
from .cache import gallery_images
from .compute import Failed, run_heavy

__all__ = ["GALLERY", "BenchmarkChoice", "table_help", "benchmark_controls", "results_path", "run_benchmark"]

GALLERY = "Sample photos (installed with the app)"
ATTACK_HELP = {
    "fgsm": "fast (one gradient step)", "igsm": "fast (10 steps)", "pgd": "medium (40 steps)",
    "deepfool": "medium", "jsma": "slow", "lbfgs": "slow", "cw": "slowest (400 optimisation steps)",
}


def table_help() -> dict[int, str]:
    """The three tables in words; the columns of Tables 3 and 4 named from the registry entries."""
    from pd_core.defences import TABLE3_COLUMNS, TABLE4_COLUMNS, defence_info

    def columns(table) -> str:
        return ", ".join(defence_info(name).column_title for name in table.values())

    return {1: "Table 1 — no defence, one defended run, and the vote of the ensemble",
            3: f"Table 3 — ablation of the defence's stages: {columns(TABLE3_COLUMNS)}",
            4: f"Table 4 — thresholding rules after pixel deflection: {columns(TABLE4_COLUMNS)}"}


@dataclass
class BenchmarkChoice:
    """What the controls say: the photos (a list of (path, label) or a folder), the table, the attacks…"""

    images: object
    source_key: str
    source_arg: object
    table: int
    preset: str
    attacks: list
    limit: int
    ensemble: int
    tuning: float
    use_ray: bool
    ray_workers: int
    on_gpu: bool


def _photos(root, folder: str):
    if folder == GALLERY:
        return [(g.path, g.label_index) for g in gallery_images()], "gallery", None
    from pd_core.images import InputError, safe_resolve

    try:
        path = safe_resolve(root, folder)
    except InputError as exc:
        st.error(str(exc))
        st.stop()
    return path, f"folder:{folder}", path


def benchmark_controls(cfg_settings) -> BenchmarkChoice:
    """The photos, table, attack strength, attacks, photo count, ensemble, tuning split and Ray."""
    from pd_core import evaluation as ev
    from pd_core.attacks import ATTACKS

    root = image_root()
    choices = [GALLERY] + (folder_choices(str(root)) if root is not None else [])
    helps = table_help()
    left, right = st.columns([1, 1], gap="large")
    with left:
        folder = st.selectbox("Photos", choices, **state.sticky("bench_folder", GALLERY),
                              help="The sample photos, or a folder of the server's data directory. Labels come "
                                   "from the folder's labels.csv (columns file, class_index) or from ImageNet "
                                   "WordNet ids at the start of the file names (n01440764_…).")
        if root is None:
            st.caption("No data folder is configured on this server (environment variable PD_IMAGE_ROOT), so only "
                       "the sample photos can be used.")
        table = st.radio("Table", [1, 3, 4], format_func=helps.get, **state.sticky("bench_table", 1))
        preset = st.radio("Attack strength", ["paper", "large"], horizontal=True,
                          format_func={"paper": "Paper's budgets (Table 1)",
                                       "large": "Large perturbations (Table 1, lower half)"}.get,
                          **state.sticky("bench_preset", "paper"))
    with right:
        attacks = st.multiselect("Attacks", list(ATTACKS),
                                 format_func=lambda a: f"{ATTACKS[a].title} — {ATTACK_HELP.get(a, '')}",
                                 **state.sticky("bench_attacks", ["fgsm", "igsm", "deepfool"]),
                                 help="Every attack adds a row. The clean row is always computed. On a CPU, "
                                      "JSMA, L-BFGS and C&W take minutes per photo: try them on a few photos first.")
        on_gpu = cfg_settings.device.startswith("cuda")
        limit = st.slider("Photos to use (at most)", 1, 200, **state.sticky("bench_limit", 100 if on_gpu else 10),
                          help="The first N photos of the folder in a fixed shuffled order; more photos give "
                               "narrower confidence intervals but take longer.")
        ensemble = st.slider("Copies in the ensemble vote", 1, 10, **state.sticky("bench_ensemble", 10),
                             help="Ens-10 in the paper: the defence is run 10 times with different random "
                                  "deflections and the majority answer wins. 1 = single run only (fastest).")
        tuning = st.slider("Held apart for tuning (Figure 5)", 0.0, 0.5, step=0.05,
                           **state.sticky("bench_tuning", ev.DEFAULT_TUNING_FRACTION),
                           help="This share of the photos is never used in the tables: the parameter search of "
                                "Figure 5 runs on it only, so parameters are never chosen on the photos they are "
                                "judged on (paper §9.1). The split is fixed by the file names.")
        use_ray, ray_workers = ray_option()
    images, source_key, source_arg = _photos(root, folder)
    return BenchmarkChoice(images, source_key, source_arg, table, preset, attacks, limit, ensemble, tuning,
                           use_ray, ray_workers, on_gpu)


def results_path(choice: BenchmarkChoice, model, cfg_settings) -> Path:
    out = results_file(choice.source_key, cfg_settings.config, model.name, cfg_settings.seed, choice.ensemble,
                       choice.tuning)
    return out.with_name(f"{out.stem}_ray{out.suffix}") if choice.use_ray else out  # a Ray run: its own file


def _evaluate(choice: BenchmarkChoice, model, cfg_settings, out: Path, bar):
    from pd_core import evaluation as ev

    settings = ev.ProtocolSettings(attacks=tuple(choice.attacks), preset=choice.preset, table=choice.table,
                                   ensemble=choice.ensemble, limit=choice.limit, seed=cfg_settings.seed,
                                   config=cfg_settings.config, tuning_fraction=choice.tuning,
                                   batch_size=32 if choice.on_gpu else 8)
    if choice.use_ray:
        return run_heavy(
            lambda: run_on_ray(bar, choice.ray_workers, model.name, ev.load_items(choice.images), settings,
                               store=out.with_suffix(".shards"), out_csv=out),
            "the benchmark", cfg_settings.device)
    result = run_heavy(lambda: ev.evaluate(model, choice.images, settings, out_csv=out,
                                           progress=eta_reporter(bar, time.monotonic())),
                       "the benchmark", cfg_settings.device)
    return result, ""


def run_benchmark(choice: BenchmarkChoice, model, cfg_settings, out: Path) -> None:
    """Run the protocol with progress; the finished run's summary goes to ``bench_result``."""
    from pd_core import evaluation as ev

    with st.status("Running the benchmark…", expanded=True) as status:
        bar = status.progress(0.0, text="Starting…")
        try:
            result, ray_text = _evaluate(choice, model, cfg_settings, out, bar)
            st.session_state["bench_result"] = {"csv": str(out), "table": choice.table, "preset": choice.preset,
                                                "ensemble": choice.ensemble, "images": result.images,
                                                "unreadable": result.unreadable, "seconds": result.seconds,
                                                "ray": ray_text}
            status.update(label=f"Done in {result.seconds:.0f} s", state="complete", expanded=False)
        except ev.EvaluationError as exc:
            st.error(str(exc))
            status.update(label="That did not work", state="error")
        except Failed:
            status.update(label="That did not work", state="error")
