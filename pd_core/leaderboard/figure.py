"""The leaderboard's figure (issue 20 item 4): per defence, accuracy without attack, against transfer
("looks robust") and against the strongest adaptive attack at each budget ("is robust"), with the
Wilson 95% intervals as error bars, drawn from a :class:`~pd_core.leaderboard.board.Leaderboard`.
Interactive (Plotly): hovering a bar gives correct / n, the interval and the attack that reached it.
A value a report lacks is left out, never drawn as 0.
"""
from __future__ import annotations

__all__ = ["leaderboard_figure", "CLEAN_COLOUR", "TRANSFER_COLOUR", "ROBUST_COLOURS"]

CLEAN_COLOUR = "#9e9e9e"
TRANSFER_COLOUR = "#64b5f6"
#: "Is robust" bars from the smallest to the largest budget: darker red for a stronger attacker.
ROBUST_COLOURS = ("#ef9a9a", "#e53935", "#b71c1c", "#7f0000")


def _series(name: str, titles: list[str], values: list["Accuracy | None"], colour: str):
    import plotly.graph_objects as go

    y = [None if v is None else v.accuracy for v in values]
    plus = [None if v is None else v.interval[1] - v.accuracy for v in values]
    minus = [None if v is None else v.accuracy - v.interval[0] for v in values]
    hover = [None if v is None else
             f"{v.correct} of {v.n} correct<br>95% interval {v.interval[0]:.1%} – {v.interval[1]:.1%}"
             + (f"<br>attack: {v.attack}" if v.attack else "") for v in values]
    # The value on each bar, so that a 0% bar (no height) still reads as 0% and not as missing.
    text = [None if v is None else f"{v.accuracy:.0%}" for v in values]
    return go.Bar(name=name, x=titles, y=y, marker_color=colour, customdata=hover, text=text,
                  textposition="outside", textfont=dict(size=10), cliponaxis=False,
                  error_y=dict(type="data", symmetric=False, array=plus, arrayminus=minus, thickness=1.2, width=3),
                  hovertemplate="%{x}<br>" + name + ": %{y:.1%}<br>%{customdata}<extra></extra>")


def leaderboard_figure(board: "Leaderboard", height: int = 420):
    """Grouped bars per defence (best first): clean, transfer at the headline budget, and the worst
    rung at each of the board's budgets."""
    import plotly.graph_objects as go

    head = board.headline_eps_255
    titles = [e.title for e in board.entries]
    fig = go.Figure()
    fig.add_trace(_series("without attack", titles, [e.clean for e in board.entries], CLEAN_COLOUR))
    fig.add_trace(_series(f"looks robust: transfer attack, {board.budget(head)}", titles,
                          [e.looks_robust.get(head) for e in board.entries], TRANSFER_COLOUR))
    for i, eps in enumerate(board.eps_255):
        fig.add_trace(_series(f"is robust: strongest attack, {board.budget(eps)}", titles,
                              [e.is_robust.get(eps) for e in board.entries],
                              ROBUST_COLOURS[min(i, len(ROBUST_COLOURS) - 1)]))
    n = sorted({e.n for e in board.entries})
    fig.update_layout(
        barmode="group", height=height, margin=dict(l=10, r=10, t=50, b=10),
        title=dict(text=f"Accuracy of each defence on {board.model} (n = {', '.join(map(str, n))} photos; "
                        "bars: 95% intervals)", font=dict(size=14)),
        yaxis=dict(title="accuracy", tickformat=".0%", range=[0, 1.05]),
        legend=dict(orientation="h", yanchor="bottom", y=-0.35, x=0))
    return fig
