"""The Benchmark page's parts (pages/benchmark.py): where photos and results live, the progress
line, the local-Ray option, and the accuracy-against-perturbation-size section.

All computing is :mod:`pd_core.evaluation`'s; these functions choose inputs and draw.
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


def run_on_ray(bar, workers: int, model_name: str, images, settings, *, store, out_csv):
    """The benchmark (``settings``: a :class:`~pd_core.evaluation.settings.ProtocolSettings`) on a
    local Ray cluster of ``workers`` one-thread workers
    (:func:`pd_core.evaluation.distributed.evaluate_distributed`), its progress drawn on ``bar``;
    returns the result and the last progress line."""
    from pd_core.evaluation import distributed
    from pd_core.evaluation.settings import ClusterSettings

    shown = {"text": ""}

    def show(snap) -> None:
        shown["text"] = ray_progress_text(snap)
        bar.progress(min(max(snap.fraction, 0.0), 1.0), text=shown["text"])

    result = distributed.evaluate_distributed(model_name, images, settings, store=store,
                                              cluster=ClusterSettings(ray=f"local:{workers}", threads=1),
                                              on_progress=show, out_csv=out_csv)
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
