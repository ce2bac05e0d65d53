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


#: The curve's lines: how each adversarial image is judged (the rows' ``defence`` column).
JUDGE_TITLES = {"none": "no defence", "single": "defended, one run", "ens10": "Ens-10 (vote of 10 runs)"}


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
            x=[r["eps_255"] for r in pts], y=acc, mode="lines+markers", name=JUDGE_TITLES.get(name, name),
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


# ----------------------------------------------------------------------------- the ladder, for the app's page
#: The rungs of :mod:`pd_core.adaptive.ladder` in plain words: what the attacker knows.
RUNG_TITLES = {"transfer": "(a) transfer", "bpda": "(b) BPDA", "bpda_eot": "(c) BPDA+EOT",
               "exact_eot": "(d) exact gradient+EOT"}
RUNG_KNOWLEDGE = {
    "transfer": "knows nothing about the defence: attacks the bare model and hopes the change survives",
    "bpda": "knows the defence is there, pretends it does nothing when asking for the gradient, one run per step",
    "bpda_eot": "also knows it is random: averages that gradient over k runs of the defence per step",
    "exact_eot": "knows the defence exactly and differentiates through it, averaged over k runs per step",
}
#: What each sanity check of :mod:`pd_core.adaptive.checks` guards against, in one sentence.
CHECK_EXPLANATIONS = {
    "reaches_zero": "With a huge budget any real attack must win; if it does not, the attack is broken, "
                    "not the defence strong.",
    "does_not_rise": "A bigger budget can only help the attacker; accuracy that rises means the attack "
                     "is getting lost.",
    "iterative_beats_single_step": "Many small steps must do at least as well as one big step, or the "
                                   "gradient is misleading the attack.",
    "noise_costs_little": "Random noise of the same size should barely matter; if it hurts as much as the "
                          "attack, the attack learned nothing.",
    "loss_converged": "If the attack's objective was still climbing at the end, more steps would have "
                      "found more.",
    "fresh_randomness_agrees": "The attack's own estimate of its success must match a fresh, independent "
                               "run of the defence.",
}
_RUNG_COLOURS = {"transfer": "#7986a8", "bpda": "#ef6c00", "bpda_eot": "#c62828", "exact_eot": "#6a1b9a"}


def rung_curves(rows: list[dict], defence: str) -> dict[str, list[dict]]:
    """Per rung, the points (ε ascending, the clean row at ε = 0 first) of ladder ``rows`` judged by
    ``defence`` (``"single"`` or ``"ens<k>"``). At each ε the rung's stronger loss counts (lower
    accuracy): an attacker with that knowledge uses the better of the two."""
    clean = [r for r in rows if r["rung"] == "clean" and r["defence"] == defence]
    curves: dict[str, list[dict]] = {}
    for rung in [r for r in RUNG_TITLES if any(row["rung"] == r for row in rows)]:
        best: dict[float, dict] = {}
        for row in rows:
            if row["rung"] == rung and row["defence"] == defence and (
                    row["eps_255"] not in best or row["correct"] < best[row["eps_255"]]["correct"]):
                best[row["eps_255"]] = row
        curves[rung] = clean + [best[e] for e in sorted(best)]
    return curves


def _band(go, points: list[dict], colour: str, group: str):
    """The Wilson 95% band of a line as one closed filled shape (upper edge out, lower edge back)."""
    x = [p["eps_255"] for p in points]
    upper, lower = [100 * p["ci_high"] for p in points], [100 * p["ci_low"] for p in points]
    rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return go.Scatter(x=x + x[::-1], y=upper + lower[::-1], fill="toself", mode="lines", line=dict(width=0),
                      fillcolor=f"rgba({rgb[0]},{rgb[1]},{rgb[2]},0.12)", hoverinfo="skip", showlegend=False,
                      legendgroup=group)


def ladder_figure(rows: list[dict], title: str | None = None, height: int = 360):
    """Plotly figure of a ladder (:func:`pd_core.adaptive.ladder.run_ladder` rows): accuracy (%) against
    ε (/255), one line per rung (its stronger loss, :func:`rung_curves`), one panel for the single
    defended run and one for the vote, with Wilson 95% bands when the rows carry intervals."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    votes = [d for d in dict.fromkeys(r["defence"] for r in rows) if d != "single"]
    panels = ["single"] + votes[:1]
    titles = ["one defended run" if d == "single" else f"vote of {d[3:]} runs (Ens-{d[3:]})" for d in panels]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=titles, shared_yaxes=True)
    for col, panel in enumerate(panels, start=1):
        for rung, points in rung_curves(rows, panel).items():
            colour = _RUNG_COLOURS[rung]
            if all("ci_low" in p and "ci_high" in p for p in points):
                fig.add_trace(_band(go, points, colour, rung), row=1, col=col)
            fig.add_trace(go.Scatter(
                x=[p["eps_255"] for p in points], y=[100 * p["accuracy"] for p in points], mode="lines+markers",
                name=RUNG_TITLES[rung], legendgroup=rung, showlegend=col == 1, line=dict(color=colour),
                customdata=[[p["n"], 100 * p.get("ci_low", p["accuracy"]), 100 * p.get("ci_high", p["accuracy"]),
                             p.get("loss") or "no attack"] for p in points],
                hovertemplate="ε %{x:g}/255: %{y:.1f}% [95%: %{customdata[1]:.1f}–%{customdata[2]:.1f}%], "
                              "n = %{customdata[0]}, loss %{customdata[3]}<extra>%{fullData.name}</extra>"),
                row=1, col=col)
    eps = sorted({r["eps_255"] for r in rows})
    fig.update_xaxes(title_text="attack budget ε (/255)", tickmode="array", tickvals=eps)
    fig.update_yaxes(range=[-3, 103])
    fig.update_yaxes(title_text="accuracy (%)", row=1, col=1)
    fig.update_layout(title=dict(text=title) if title else None, height=height,
                      margin=dict(l=0, r=0, t=60 if title else 30, b=0), legend=dict(orientation="h", y=-0.3))
    return fig


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return "[" + ", ".join(_number(v) for v in value) + "]"
    return str(value)


def checks_table(checks: list[dict]) -> list[dict]:
    """One row per sanity check (dicts of a report's ``checks``): name, ``pass``/``warn``, what was
    found, its numbers (``key = value``) and why the check matters (:data:`CHECK_EXPLANATIONS`)."""
    return [{"check": c["name"].replace("_", " "), "result": c["status"], "found": c["message"],
             "numbers": ", ".join(f"{k} = {_number(v)}" for k, v in c["numbers"].items()),
             "why it matters": CHECK_EXPLANATIONS.get(c["name"], "")} for c in checks]


#: Below this many photos the verdict says it is an illustration, not a measurement.
SMALL_N = 30


def verdict_details(report: dict, eps_255: float = 4.0) -> dict:
    """The report's plain-language ``verdict`` with what backs it: the ε it speaks of (the evaluated
    budget closest to ``eps_255``, as :func:`pd_core.adaptive.report_json.robustness_verdict` picks it), the
    strongest attack there, ``n``, the kept accuracy and its Wilson 95% interval, and a ``caveat``
    sentence when ``n`` is below :data:`SMALL_N` (else ``None``)."""
    row = min(report["robust"], key=lambda r: (abs(r["eps_255"] - eps_255), r["eps_255"]))
    acc = row["single"]
    caveat = None
    if acc["n"] < SMALL_N:
        caveat = (f"Only {acc['n']} photo{'s were' if acc['n'] != 1 else ' was'} attacked, so the true share could be "
                  f"anywhere from {acc['ci_low']:.0%} to {acc['ci_high']:.0%} (95% interval): read this as an "
                  f"illustration, and run the command below on more photos for a measurement.")
    return {"sentence": report["verdict"], "eps_255": row["eps_255"], "attack": row["attack"], "n": acc["n"],
            "accuracy": acc["accuracy"], "ci_low": acc["ci_low"], "ci_high": acc["ci_high"], "caveat": caveat}


def looks_versus_is(reports: dict[str, dict], eps_255: float = 4.0) -> list[dict]:
    """Per defence (name -> report), at the evaluated ε closest to ``eps_255``: accuracy without attack,
    against the transfer attack ("looks robust") and against the strongest rung ("is robust"), on
    one defended run; the defence's title is the report's (its registry entry's)."""
    table = []
    for name, report in reports.items():
        eps = min(report["eps_255"], key=lambda e: (abs(e - eps_255), e))
        single = [a for a in report["attacks"] if a["eps_255"] == eps and a["defence"] == "single"]
        transfer = [a["accuracy"] for a in single if a["rung"] == "transfer"]
        strongest = min(single, key=lambda a: a["correct"])
        table.append({"defence": report["defence"].get("title", name), "ε (/255)": eps,
                      "without attack": report["clean"]["single"]["accuracy"],
                      "looks robust (transfer)": min(transfer) if transfer else float("nan"),
                      "is robust (strongest attack)": strongest["accuracy"],
                      "strongest attack": f"{RUNG_TITLES[strongest['rung']]}, {strongest['loss']}",
                      "n": report["n"]})
    return table
