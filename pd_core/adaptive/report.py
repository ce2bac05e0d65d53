"""Reporting the adaptive evaluation: its CSV (write and read back), the text table and the accuracy curve.

The rows are those of :func:`pd_core.adaptive.evaluate.evaluate_adaptive`: one per (ε, defence), with
accuracy and its 95% Wilson interval (SPEC §3), and the gradient estimator the attack used
(``gradient``: ``"bpda"`` or ``"exact"``, issue 14; files written before that column existed were
all BPDA and read back as such). The app's "Adaptive attack" page reads the same
file back (:func:`read_adaptive_csv`) and draws :func:`accuracy_curve_figure`.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

ADAPTIVE_CSV_COLUMNS = ["eps_255", "defence", "n", "correct", "accuracy", "ci_low", "ci_high",
                        "mean_linf_255", "mean_l2_normalised", "steps", "eot", "loss", "gradient", "step_size_255",
                        "copies", "seed", "model", "images", "dropped", "seconds"]


def write_csv(rows: list[dict], path: Path | str) -> None:
    """Write ``rows`` to ``path`` (columns :data:`ADAPTIVE_CSV_COLUMNS`, floats to 6 significant digits)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=ADAPTIVE_CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


#: How the text table names each gradient estimator of the ``gradient`` column.
GRADIENT_TITLES = {"bpda": "BPDA", "exact": "exact gradient"}


def format_table(rows: list[dict]) -> str:
    """Accuracy against ε, one line per ε, as percentages with their 95% Wilson intervals."""
    by_eps: dict[float, dict[str, dict]] = {}
    defences: list[str] = []
    for row in rows:
        by_eps.setdefault(float(row["eps_255"]), {})[row["defence"]] = row
        if row["defence"] not in defences:
            defences.append(row["defence"])
    if not rows:
        return "no results"
    first = rows[0]
    estimator = GRADIENT_TITLES.get(next((r.get("gradient") for r in rows if r.get("gradient")), "bpda"), "BPDA")
    lines = [f"Accuracy under {estimator}+EOT (L-inf PGD, {max(r['steps'] for r in rows)} steps, "
             f"EOT {max(r['eot'] for r in rows)}), {first['model']}, n = {first['n']} images the undefended "
             f"model classifies correctly (of {first['images']}); [95% Wilson interval]",
             f"{'eps/255':>8}  " + "  ".join(f"{name:>21}" for name in defences)]
    for eps_255 in sorted(by_eps):
        cells = []
        for name in defences:
            r = by_eps[eps_255].get(name)
            cells.append(f"{'-':>21}" if r is None else
                         f"{r['accuracy']:6.1%} [{r['ci_low']:5.1%},{r['ci_high']:6.1%}]".rjust(21))
        lines.append(f"{eps_255:>8g}  " + "  ".join(cells))
    return "\n".join(lines)


def read_adaptive_csv(source) -> list[dict]:
    """Rows of a CSV written by :func:`evaluate_adaptive` (path or text stream), numbers parsed.

    Raises ``ValueError`` with a one-sentence message when it is not such a file.
    """
    try:
        if isinstance(source, (str, Path)):
            text = Path(source).read_text()
        else:
            raw = source.read()
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        rows = list(csv.DictReader(io.StringIO(text)))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"the results file cannot be read ({exc.__class__.__name__}).") from None
    needed = {"eps_255", "defence", "n", "accuracy", "ci_low", "ci_high"}
    if not rows or not needed <= set(rows[0]):
        raise ValueError("this is not an adaptive-attack results file: it needs the columns "
                         + ", ".join(sorted(needed)) + ".")
    out = []
    for row in rows:
        try:
            parsed = dict(row)
            for key in ("eps_255", "accuracy", "ci_low", "ci_high"):
                parsed[key] = float(row[key])
            parsed["n"] = int(float(row["n"]))
            for key in ("steps", "eot", "images", "correct"):
                if row.get(key) not in (None, ""):
                    parsed[key] = int(float(row[key]))
            if row.get("gradient") is None:  # written before the column existed: every attack was BPDA
                parsed["gradient"] = "bpda" if parsed["eps_255"] > 0 else ""
        except (ValueError, OverflowError):  # OverflowError: int(float("inf")) in a hostile file
            raise ValueError("the results file has a row whose numbers cannot be read.") from None
        out.append(parsed)
    return out


DEFENCE_TITLES = {"none": "no defence", "single": "defended, one run", "ens10": "Ens-10 (vote of 10 runs)"}


def accuracy_curve_figure(rows: list[dict], title: str | None = None, height: int = 360):
    """Plotly figure: accuracy (%) against ε (/255), one line per defence, Wilson 95% error bars."""
    import plotly.graph_objects as go

    colours = {"none": "#7986a8", "single": "#c62828", "ens10": "#2e7d32"}
    fig = go.Figure()
    defences = list(dict.fromkeys(r["defence"] for r in rows))
    for name in defences:
        pts = sorted((r for r in rows if r["defence"] == name), key=lambda r: r["eps_255"])
        acc = [100 * r["accuracy"] for r in pts]
        fig.add_trace(go.Scatter(
            x=[r["eps_255"] for r in pts], y=acc, mode="lines+markers", name=DEFENCE_TITLES.get(name, name),
            line=dict(color=colours.get(name)),
            error_y=dict(type="data", symmetric=False,
                         array=[100 * r["ci_high"] - a for r, a in zip(pts, acc)],
                         arrayminus=[a - 100 * r["ci_low"] for r, a in zip(pts, acc)]),
            customdata=[[r["n"], 100 * r["ci_low"], 100 * r["ci_high"]] for r in pts],
            hovertemplate="ε %{x:g}/255: %{y:.1f}% [95%: %{customdata[1]:.1f}–%{customdata[2]:.1f}%], "
                          "n = %{customdata[0]}<extra>%{fullData.name}</extra>"))
    fig.update_layout(title=dict(text=title) if title else None, height=height,
                      margin=dict(l=0, r=0, t=40 if title else 10, b=0),
                      xaxis=dict(title="attack budget ε (/255)", tickmode="array",
                                 tickvals=sorted({r["eps_255"] for r in rows})),
                      yaxis=dict(title="accuracy (%)", range=[-3, 103]),
                      legend=dict(orientation="h", y=-0.25))
    return fig
