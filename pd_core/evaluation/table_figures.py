"""Plotly figures of the paper's tables and figures as the Benchmark page shows them: Table 1/3/4 as
bars with their 95% intervals beside the paper's numbers, Figure 2 (class probability against K),
Figure 5 (the parameter search) and Figure 6 (where the attack sends the model).

Each builder takes what :mod:`.paper` or :mod:`.figures` computed (:func:`~.paper.table_frame`,
:func:`~.figures.deflection_curve`, :func:`~.figures.tuning_grid`, :func:`~.figures.rank_histogram`)
and draws it; nothing is computed here. No Streamlit here.
"""
from __future__ import annotations

__all__ = ["table_defence_columns", "table_bars_figure", "rank_figure", "deflection_curve_figure",
           "tuning_figure"]


def _go():
    import plotly.graph_objects as go

    return go


def table_defence_columns(frame) -> list[str]:
    """The accuracy columns of a :func:`~.paper.table_frame` (one per defence), in its order."""
    return [c for c in frame.columns if c not in ("attack", "key", "n", "|L2|", "paper |L2|")
            and not c.endswith((" CI", " n")) and not c.startswith("paper ")]


def _interval(text: str) -> tuple[float, float]:
    """``"lo–hi"`` (in %, as :func:`~.paper.table_frame` writes it) -> (lo, hi); NaNs when empty."""
    lo, _, hi = str(text or "").partition("–")
    return (float(lo), float(hi)) if hi else (float("nan"), float("nan"))


def table_bars_figure(frame, height: int = 420):
    """Accuracy (%) per attack and defence as grouped bars with asymmetric 95% error bars, and the
    paper's ResNet-50 number of each cell as a dash."""
    go = _go()
    fig = go.Figure()
    for column in table_defence_columns(frame):
        accuracy = [float(a) for a in frame[column]]
        bounds = [_interval(s) for s in frame[f"{column} CI"]]
        fig.add_bar(name=column, x=frame["attack"], y=accuracy,
                    error_y=dict(type="data", symmetric=False,
                                 array=[hi - a if a == a and hi == hi else 0 for a, (_, hi) in zip(accuracy, bounds)],
                                 arrayminus=[a - lo if a == a and lo == lo else 0
                                             for a, (lo, _) in zip(accuracy, bounds)]))
        fig.add_scatter(name=f"paper {column}", x=frame["attack"], y=frame[f"paper {column}"], mode="markers",
                        marker=dict(symbol="line-ew-open", size=18, line=dict(width=3)), showlegend=True)
    fig.update_layout(barmode="group", yaxis_title="top-1 accuracy (%)", yaxis_range=[0, 105], height=height,
                      legend_orientation="h", margin=dict(t=30, b=10))
    return fig


def rank_figure(ranks, height: int = 330):
    """Paper Figure 6 from :func:`~.figures.rank_histogram`'s pooled rows (``attack == "all"``):
    % of successful attacks per rank (0 = not in the top-5), one bar group per direction."""
    go = _go()
    pooled = ranks[ranks["attack"] == "all"]
    fig = go.Figure()
    for direction, g in pooled.groupby("direction"):
        fig.add_bar(name=direction, x=[str(r) for r in g["rank"]], y=100 * g["fraction"])
    fig.update_layout(barmode="group", xaxis_title="rank (0 = not in the top-5)", yaxis_title="% of attacks",
                      height=height, legend_orientation="h", margin=dict(t=20, b=10))
    return fig


def deflection_curve_figure(curve, height: int = 360):
    """Paper Figure 2 from :func:`~.figures.deflection_curve`: mean probability (± its standard error)
    of the true and the adversarial class against K, on attacked (solid) and clean (dotted) photos."""
    go = _go()
    fig = go.Figure()
    for (kind, cls), g in curve.groupby(["image", "class"]):
        fig.add_scatter(x=g["deflections"], y=g["mean_prob"], mode="lines+markers", name=f"{cls} class, {kind} photos",
                        line=dict(dash="solid" if kind == "adversarial" else "dot"),
                        error_y=dict(type="data", array=g["sem"]))
    fig.update_layout(xaxis_title="deflections K", yaxis_title="mean probability", height=height,
                      legend_orientation="h", margin=dict(t=20, b=10), xaxis_type="log")
    return fig


def tuning_figure(grid, height: int = 360):
    """Paper Figure 5 from :func:`~.figures.tuning_grid`: accuracy (%, with 95% intervals) as σ, the
    window r or K moves away from the defaults, one panel each, one line per attack."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, shared_yaxes=True, subplot_titles=("σ", "window r", "deflections K"))
    for col, param in enumerate(("sigma", "window", "deflections"), start=1):
        for attack, g in grid[grid["varied"].isin([param, "default"])].groupby("attack"):
            g = g.sort_values(param)
            fig.add_scatter(x=g[param], y=100 * g["accuracy"], mode="lines+markers", name=attack, legendgroup=attack,
                            showlegend=col == 1, row=1, col=col,
                            error_y=dict(type="data", symmetric=False, array=100 * (g["ci_high"] - g["accuracy"]),
                                         arrayminus=100 * (g["accuracy"] - g["ci_low"])))
    fig.update_layout(height=height, yaxis_title="accuracy (%)", legend_orientation="h", margin=dict(t=30, b=10))
    return fig
