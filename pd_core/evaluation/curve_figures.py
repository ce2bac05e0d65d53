"""Plotly figures of the curves of issue 13: accuracy against perturbation size (:mod:`.sweeps`) and
against the number of deflections (:mod:`.dose`), and their PNG export for ``docs/results.md``.

The figures are built from the summaries (:func:`~pd_core.evaluation.sweeps.sweep_summary`,
:func:`~pd_core.evaluation.dose.dose_summary`), so the app, the command line and the docs draw the
same thing. No Streamlit here.

The paper's point on a sweep figure. The paper reports one |L2| per attack (Table 1: e.g. FGSM
0.05, and 0.12 for its large perturbations) without saying which quantity it is (issue 13): the
normalised L2 in [0, 1] pixels (``norm_l2``), the same ratio in the classifier's normalised input
(``norm_l2_model``), or the RMSE of δ in [0, 1] units (``rmse``). The figure's x axis is one
measure, chosen by the caller. The paper's value ``v`` is drawn three times, once per reading:
read as measure ``r``, it sits at ``x = v · Σ mean_x / Σ mean_r``, the ratio of the chosen measure
to measure ``r`` over this attack's sweep points (the ratio of two measures of the same
perturbations barely changes along a sweep; for the reading that *is* the chosen measure, x = v).
Each reading's markers carry the paper's three accuracies (no defence, single run, Ens-10), so the
reader sees where the paper's results would fall on our curves under each interpretation.
"""
from __future__ import annotations

import math
import os

from .paper import PAPER_TABLE1, PAPER_TABLE3
from .tables import ATTACK_TITLES, column_titles
from .sweeps import MEASURES

__all__ = ["MEASURE_TITLES", "sweep_figure", "sweep_figures", "paper_positions", "dose_figure",
           "write_png", "SWEEP_CAPTION", "DOSE_CAPTION"]

MEASURE_TITLES = {
    "norm_l2": "mean ‖δ‖₂ / ‖x‖₂ (pixels in [0, 1])",
    "norm_l2_model": "mean ‖δ‖₂ / ‖x‖₂ in the model's normalised input",
    "rmse": "mean RMSE of δ ([0, 1] units; FGSM: ε)",
}
_COLOURS = {"none": "#d62728", "single": "#1f77b4", "ens": "#2ca02c"}
_READING_SYMBOLS = {"norm_l2": "circle-open", "norm_l2_model": "square-open", "rmse": "diamond-open"}
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")

SWEEP_CAPTION = (
    "Top-1 accuracy (%) of the images the model classifies correctly, against the mean perturbation "
    "size of each sweep point, with Wilson 95% bands; the first point (size 0) is the clean images. "
    "Open markers: the paper's ResNet-50 results (Table 1, its main and large-perturbation rows), placed "
    "at its |L2| read in turn as norm_l2 (circles), norm_l2_model (squares) and rmse (diamonds), each "
    "converted to this axis' measure by the ratio of the two measures on our own perturbations.")
DOSE_CAPTION = (
    "Top-1 accuracy (%) against the number of deflections K (R-CAM guided, window 10), without "
    "(solid) and with (dashed) the wavelet denoiser, for the clean images and each attack, with Wilson "
    "95% bands. K = 0 without the denoiser is the undefended model; K = 100 with it is the paper's defence. "
    "Markers: the paper's Table 3 (ResNet-50, Ens-10) at K = 0 (WD, open diamond) and K = 100 (PD: cross, "
    "WD+PD: open diamond).")


def _defence_title(defence: str) -> str:
    """The series' legend: Table 1's titles (the single run spelt out), a registry entry's title."""
    return "Single run" if defence == "single" else column_titles(1, [defence])[defence]


def _colour(defence: str) -> str:
    return _COLOURS["ens"] if defence.startswith("ens") else _COLOURS.get(defence, "#7f7f7f")


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _band(go, x, low, high, colour: str, name: str, legendgroup: str):
    """A closed polygon between the interval's ends (one trace, filled, not in the legend)."""
    return go.Scatter(x=list(x) + list(x)[::-1], y=list(high) + list(low)[::-1], fill="toself",
                      fillcolor=_rgba(colour, 0.15), line={"width": 0}, hoverinfo="skip", showlegend=False,
                      name=name, legendgroup=legendgroup, mode="lines")


def paper_positions(summary, attack: str, preset: str, measure: str = "norm_l2") -> list[dict]:
    """Where the paper's Table 1 points of ``attack`` go on the ``measure`` axis, per reading.

    Returns one dict per reading of the paper's |L2| that can be placed: ``reading``, ``factor``
    (Σ mean ``measure`` / Σ mean ``reading`` over the sweep's undefended points) and ``points``: a
    list of ``(paper row, |L2|, x, {defence: accuracy %})`` for the paper's rows ("paper", "large")
    that have the attack. Empty when the paper has no row for the attack.
    """
    rows = [(name, table[attack]) for name, table in PAPER_TABLE1.items() if attack in table]
    if not rows or measure not in MEASURES:
        return []
    sub = summary[(summary["attack"] == attack) & (summary["preset"] == preset) & (summary["label"] != "clean")
                  & (summary["defence"] == "none")]
    out = []
    for reading in MEASURES:
        num, den = float(sub[f"mean_{measure}"].sum()), float(sub[f"mean_{reading}"].sum())
        if reading == measure:
            factor = 1.0
        elif not (math.isfinite(num) and math.isfinite(den)) or den <= 0:
            continue
        else:
            factor = num / den
        points = [(name, l2, l2 * factor, {"none": none, "single": single, "ens10": ens})
                  for name, (l2, none, single, ens) in rows]
        out.append({"reading": reading, "factor": factor, "points": points})
    return out


def sweep_figure(summary, attack: str, preset: str, measure: str = "norm_l2", paper: bool = True):
    """Accuracy (no defence, single run, Ens-n) of one (attack, preset) sweep against the mean
    ``measure`` of its points, with Wilson 95% bands and (``paper``) the paper's points at the three
    readings of its |L2| (module docstring). Traces: per defence a band then a line; then one marker
    trace per reading. Returns a ``plotly.graph_objects.Figure``."""
    import plotly.graph_objects as go

    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}, not {measure!r}.")
    sub = summary[(summary["attack"] == attack) & (summary["preset"] == preset)]
    fig = go.Figure()
    defences = list(dict.fromkeys(sub["defence"]))
    for defence in defences:
        g = sub[sub["defence"] == defence]
        g = g.assign(_x=g[f"mean_{measure}"].fillna(0.0)).sort_values("_x", kind="stable")
        colour, title = _colour(defence), _defence_title(defence)
        fig.add_trace(_band(go, g["_x"], 100 * g["ci_low"], 100 * g["ci_high"], colour, f"{title} 95% interval",
                            defence))
        text = [f"{lab}: {100 * a:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}], n={n}"
                for lab, a, lo, hi, n in zip(g["label"], g["accuracy"], g["ci_low"], g["ci_high"], g["n"])]
        fig.add_trace(go.Scatter(x=g["_x"], y=100 * g["accuracy"], mode="lines+markers", name=title,
                                 # dotted single run: it often lies on the Ens-n line
                                 line={"color": colour, "dash": "dot" if defence == "single" else "solid"},
                                 legendgroup=defence, text=text,
                                 hovertemplate="%{text}<br>x = %{x:.4f}<extra>" + title + "</extra>"))
    if paper:
        for pos in paper_positions(sub if len(sub) else summary, attack, preset, measure):
            xs, ys, colours, text = [], [], [], []
            for row, l2, x, accs in pos["points"]:
                for defence, acc in accs.items():
                    xs.append(x)
                    ys.append(acc)
                    colours.append(_colour(defence))
                    text.append(f"paper {row} row, |L2| = {l2} read as {pos['reading']}: {_defence_title(defence)} "
                                f"{acc:.1f}%")
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=f"paper, |L2| as {pos['reading']}",
                                     marker={"symbol": _READING_SYMBOLS[pos["reading"]], "size": 11,
                                             "color": colours, "line": {"width": 2, "color": colours}},
                                     text=text, hovertemplate="%{text}<extra></extra>"))
    params = sorted(set(sub.loc[sub["label"] != "clean", "param"]))
    fig.update_layout(title=f"{ATTACK_TITLES.get(attack, attack)} ({preset} preset, {', '.join(params)} swept): "
                            "accuracy against perturbation size",
                      xaxis_title=MEASURE_TITLES[measure], yaxis_title="top-1 accuracy (%)",
                      yaxis={"range": [-2, 102]}, template="plotly_white", hovermode="closest",
                      legend={"orientation": "h", "y": -0.2}, margin={"t": 60, "b": 40})
    return fig


def sweep_figures(summary, measure: str = "norm_l2", paper: bool = True) -> dict:
    """:func:`sweep_figure` for every (attack, preset) in the summary, as ``{(attack, preset): figure}``."""
    series = list(dict.fromkeys(zip(summary["attack"], summary["preset"])))
    return {(a, p): sweep_figure(summary, a, p, measure, paper) for a, p in series}


def _k_label(k: int) -> str:
    return f"{k // 1000}k" if k >= 1000 and k % 1000 == 0 else str(k)


def dose_figure(summary, vote: bool = True, paper: bool = True):
    """Accuracy against K (categorical axis, the grid's values in order) per attack (colour) and
    denoiser (solid: off, dashed: on), from :func:`~pd_core.evaluation.dose.dose_summary`; ``vote``:
    the Ens-n vote, else the single run. Band then line per series; then (``paper``) the paper's
    Table 3 values. Returns a ``plotly.graph_objects.Figure``."""
    import plotly.graph_objects as go

    data = summary[summary["defence"] != "none"]
    ks = sorted(set(int(k) for k in data["deflections"]))
    labels = {k: _k_label(k) for k in ks}
    acc, lo, hi = ("accuracy", "ci_low", "ci_high") if vote else ("single_accuracy", "single_ci_low", "single_ci_high")
    fig = go.Figure()
    attacks = list(dict.fromkeys(data["attack"]))
    for i, attack in enumerate(attacks):
        colour = _PALETTE[i % len(_PALETTE)]
        for wd in (False, True):
            g = data[(data["attack"] == attack) & (data["denoise"] == wd)].sort_values("deflections")
            if g.empty:
                continue
            name = f"{ATTACK_TITLES.get(attack, attack)}, deflection" + (" + denoiser" if wd else " only")
            x = [labels[int(k)] for k in g["deflections"]]
            fig.add_trace(_band(go, x, 100 * g[lo], 100 * g[hi], colour, f"{name} 95% interval", name))
            fig.add_trace(go.Scatter(x=x, y=100 * g[acc], mode="lines+markers", name=name, legendgroup=name,
                                     line={"color": colour, "dash": "dash" if wd else "solid"},
                                     customdata=list(zip(g["n"], 100 * g[lo], 100 * g[hi])),
                                     hovertemplate="K = %{x}: %{y:.1f}% [%{customdata[1]:.1f}, %{customdata[2]:.1f}], "
                                                   "n = %{customdata[0]}<extra>" + name + "</extra>"))
    if paper:
        xs, ys, text, colours, symbols = [], [], [], [], []
        for i, attack in enumerate(attacks):
            cells = PAPER_TABLE3.get(attack, {})
            for k, column in ((0, "wd"), (100, "pd"), (100, "wd+pd")):
                if k in labels and column in cells:
                    xs.append(labels[k])
                    ys.append(cells[column])
                    colours.append(_PALETTE[i % len(_PALETTE)])
                    symbols.append("x" if column == "pd" else "diamond-x-open")  # without / with the denoiser
                    text.append(f"paper Table 3, {ATTACK_TITLES.get(attack, attack)}, {column.upper()}: {cells[column]}%")
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name="paper (ResNet-50, Table 3, Ens-10)",
                                     marker={"symbol": symbols, "size": 11, "color": colours}, text=text,
                                     hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(title="Deflection dose: accuracy against the number of deflections K"
                            + (" (Ens vote)" if vote else " (single run)"),
                      xaxis={"title": "K, deflections per image", "type": "category",
                             "categoryorder": "array", "categoryarray": [labels[k] for k in ks]},
                      yaxis={"title": "top-1 accuracy (%)", "range": [-2, 102]}, template="plotly_white",
                      legend={"orientation": "h", "y": -0.2}, margin={"t": 60, "b": 40})
    return fig


def write_png(fig, path: str | os.PathLike, width: int = 900, height: int = 600, scale: float = 1.0) -> None:
    """Write ``fig`` as a PNG through Plotly's Kaleido (which drives a local Chrome or Chromium; set
    ``BROWSER_PATH`` to choose one). Raises ``RuntimeError`` with one sentence when that is missing."""
    try:
        fig.write_image(str(path), format="png", width=width, height=height, scale=scale)
    except (ImportError, ValueError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeError("writing a PNG needs the kaleido package and a Chrome or Chromium browser "
                           f"(pip install kaleido; BROWSER_PATH=/usr/bin/chromium): {first}") from None
