"""The paper's reference numbers (ResNet-50, Tables 1, 3, 4) and the tables in the paper's layout.

:func:`table_frame` gives the measured table as a DataFrame (one row per attack, every cell with
its n and Wilson 95% interval, beside the paper's value) and :func:`format_table` as text.
"""
from __future__ import annotations

import math
from typing import Sequence

from .stats import counted_rows, summarize, wilson_interval
from .store import read_results
from .tables import ATTACK_ORDER, ATTACK_TITLES, column_titles, ens_name, table_columns

__all__ = ["PAPER_TABLE1", "PAPER_TABLE3", "PAPER_TABLE4", "SINGLE_SUFFIX", "results_rows", "table_frame",
           "format_table"]


# --------------------------------------------------------------------------------------------
# The paper's numbers (ResNet-50, paper Tables 1, 3, 4), for side-by-side display.
# Table 1: attack -> (|L2|, no defence, single, Ens-10), per preset ("paper" = the main rows,
# "large" = the "Large perturbations" rows). Tables 3 and 4: attack -> {defence: accuracy}; their
# WD+PD and Bayes columns equal Table 1's Ens-10 column, so they are Ens-10 accuracies.
# --------------------------------------------------------------------------------------------

PAPER_TABLE1: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "paper": {
        "clean": (0.00, 100.0, 98.3, 98.9),
        "fgsm": (0.05, 20.0, 79.9, 81.5),
        "igsm": (0.03, 14.1, 83.7, 83.7),
        "deepfool": (0.02, 26.3, 86.3, 90.3),
        "jsma": (0.02, 25.5, 91.5, 97.0),
        "lbfgs": (0.02, 12.1, 88.0, 91.6),
        "cw": (0.04, 4.8, 92.7, 98.0),
    },
    "large": {
        "fgsm": (0.12, 11.1, 61.5, 70.4),
        "igsm": (0.09, 11.1, 62.5, 72.5),
        "deepfool": (0.08, 8.0, 82.4, 88.9),
        "jsma": (0.05, 22.1, 88.9, 92.1),
        "lbfgs": (0.04, 12.1, 77.0, 89.0),
    },
}
PAPER_TABLE3: dict[str, dict[str, float]] = {
    "clean": {"jpeg": 96.1, "wd": 98.7, "pd": 97.4, "pd+jpeg": 96.1, "wd+pd+jpeg": 96.1, "wd+pd": 98.9},
    "fgsm": {"jpeg": 49.1, "wd": 40.6, "pd": 79.7, "pd+jpeg": 81.1, "wd+pd+jpeg": 78.8, "wd+pd": 81.5},
    "igsm": {"jpeg": 49.1, "wd": 31.2, "pd": 82.4, "pd+jpeg": 82.4, "wd+pd+jpeg": 79.7, "wd+pd": 83.7},
    "deepfool": {"jpeg": 67.8, "wd": 61.1, "pd": 86.3, "pd+jpeg": 86.3, "wd+pd+jpeg": 86.3, "wd+pd": 90.3},
    "jsma": {"jpeg": 91.6, "wd": 89.1, "pd": 95.7, "pd+jpeg": 93.0, "wd+pd+jpeg": 93.0, "wd+pd": 97.0},
    "lbfgs": {"jpeg": 71.8, "wd": 67.2, "pd": 90.3, "pd+jpeg": 89.1, "wd+pd+jpeg": 88.9, "wd+pd": 91.6},
    "cw": {"jpeg": 85.5, "wd": 95.4, "pd": 95.4, "pd+jpeg": 94.1, "wd+pd+jpeg": 93.4, "wd+pd": 98.0},
}
PAPER_TABLE4: dict[str, dict[str, float]] = {
    "clean": {"hard": 39.5, "visu": 96.1, "sure": 92.1, "bayes": 98.9},
    "fgsm": {"hard": 35.9, "visu": 63.8, "sure": 79.7, "bayes": 81.5},
    "igsm": {"hard": 42.5, "visu": 67.8, "sure": 81.1, "bayes": 83.7},
    "deepfool": {"hard": 37.2, "visu": 78.4, "sure": 87.7, "bayes": 90.3},
    "jsma": {"hard": 39.9, "visu": 93.0, "sure": 93.0, "bayes": 97.0},
    "lbfgs": {"hard": 37.2, "visu": 81.1, "sure": 90.4, "bayes": 91.6},
    "cw": {"hard": 36.8, "visu": 93.4, "sure": 92.8, "bayes": 98.0},
}

def _is_result(results) -> bool:
    """An engine's result (:class:`~pd_core.evaluation.result.EvaluationResult`): its rows, ensemble
    and sidecar ``meta``, read by attribute so this module needs nothing of the engines."""
    import pandas as pd

    return all(hasattr(results, a) for a in ("rows", "ensemble", "meta")) and isinstance(results.rows, pd.DataFrame)


def results_rows(results):
    """The rows of an engine's result, of a DataFrame of rows, or of a results file / shard folder."""
    import pandas as pd

    if _is_result(results):
        return results.rows
    if isinstance(results, pd.DataFrame):
        return results
    return read_results(results)


def _paper_value(table: int, preset: str, attack: str, defence: str) -> float | None:
    """The paper's (ResNet-50) accuracy in % for one cell, or None where the paper has none.
    The clean row does not depend on the attack preset."""
    if attack == "clean":
        preset = "paper"
    t1 = PAPER_TABLE1.get(preset, {}).get(attack)
    if defence == "none":
        return t1[1] if t1 else None
    if table == 1:
        if t1 is None:
            return None
        return t1[2] if defence == "single" else t1[3] if defence.startswith("ens") else None
    if preset != "paper":
        return None
    paper = PAPER_TABLE3 if table == 3 else PAPER_TABLE4
    return paper.get(attack, {}).get(defence)


def _table_defences(summary, table: int, ensemble: int | None) -> list[str]:
    if table == 1:
        ens = sorted({d for d in summary["defence"] if str(d).startswith("ens")},
                     key=lambda d: int(d[3:]) if d[3:].isdigit() else 0)
        if ensemble is not None and ens_name(ensemble) in ens:
            ens = [ens_name(ensemble)]
        return ["none", "single", *ens[-1:]]
    return table_columns(table)


#: The ``defence`` value of a randomised defence's single-run column in Table 1's transfer setting
#: (derived from its rows' ``single_correct``, never stored).
SINGLE_SUFFIX = ":single"


def _transfer_columns(rows, defences: Sequence[str]):
    """A list of defences in Table 1's transfer setting: each defence's column (the Ens-n vote
    when it is randomised) and, after a randomised one, its single-run column; titles from the
    registry entries. Returns (rows with the single-run rows added, columns, titles)."""
    import pandas as pd

    short = column_titles(1, list(defences))
    columns, titles, extra = ["none"], {"none": "No defence"}, []
    for d in defences:
        mine = rows[rows["defence"] == d]
        copies = pd.to_numeric(mine["copies"], errors="coerce").max()
        columns.append(d)
        if copies == copies and copies > 1:  # not NaN: a randomised defence, judged by the vote
            titles[d] = f"{short[d]} Ens-{int(copies)}"
            single = f"{d}{SINGLE_SUFFIX}"
            extra.append(mine.assign(defence=single, correct=mine["single_correct"]))
            columns.append(single)
            titles[single] = f"{short[d]} single"
        else:
            titles[d] = short[d]
    return (pd.concat([rows, *extra], ignore_index=True) if extra else rows), columns, titles


def _layout(results, table: int, ensemble: int | None, defences: Sequence[str] | None):
    """(rows, columns, titles) of the table: the paper's layout, or ``defences`` (default: those of
    an engine's result that was run with a list of defences) in Table 1's transfer setting."""
    rows = results_rows(results)
    if _is_result(results):
        ensemble = results.ensemble if ensemble is None else ensemble
        defences = defences if defences is not None else getattr(results, "columns", ())
    if defences:
        return _transfer_columns(rows, list(defences))
    columns = _table_defences(summarize(rows), table, ensemble)
    return rows, columns, column_titles(table, columns)


def _table_attacks(summary, preset: str) -> list[str]:
    present = set(summary.loc[summary["preset"] == preset, "attack"])
    if (summary["attack"] == "clean").any():
        present.add("clean")
    order = [a for a in ATTACK_ORDER if a in present]
    return order + sorted(present - set(order))


def table_frame(results, table: int = 1, preset: str = "paper", ensemble: int | None = None,
                defences: Sequence[str] | None = None):
    """The measured table in the paper's layout as a DataFrame (one row per attack).

    Columns: ``attack``, ``n``, ``|L2|`` (mean normalised L2 achieved), ``paper |L2|``, and per
    defence column ``<title>`` (accuracy %), ``<title> CI`` (Wilson 95%, "lo–hi" in %),
    ``<title> n`` and ``paper <title>`` (the paper's ResNet-50 value, NaN where it has none).
    ``defences``: registry names judged in Table 1's transfer setting instead of the table's
    columns (a randomised one gets its Ens-n and its single-run column).
    """
    import pandas as pd

    rows, defences, titles = _layout(results, table, ensemble, defences)
    summary = summarize(rows)
    counted = counted_rows(rows)
    out = []
    for attack in _table_attacks(summary, preset):
        pre = "none" if attack == "clean" else preset
        sub = counted[(counted["attack"] == attack) & (counted["preset"] == pre) & counted["defence"].isin(defences)]
        present = [d for d in defences if (sub["defence"] == d).any()]
        if not [d for d in present if d != "none"]:
            continue  # e.g. PGD in Table 3: only its undefended rows exist
        # Every cell of a row is computed on the same images: those with all the row's columns (a
        # file may hold Table 1 on many images and Table 3 on a few).
        images = set.intersection(*(set(sub.loc[sub["defence"] == d, "image"]) for d in present))
        sub = sub[sub["image"].isin(images)]
        base = sub[sub["defence"] == present[0]]
        paper_t1 = PAPER_TABLE1.get("paper" if attack == "clean" else preset, {}).get(attack)
        rec = {"attack": ATTACK_TITLES.get(attack, attack), "key": attack, "n": len(images),
               "|L2|": float(pd.to_numeric(base["norm_l2"], errors="coerce").mean()),
               "paper |L2|": paper_t1[0] if paper_t1 else math.nan}
        for d in defences:
            title = titles[d]
            g = sub[sub["defence"] == d]
            n, k = len(g), int(g["correct"].astype(int).sum())
            lo, hi = wilson_interval(k, n)
            rec[title] = 100 * k / n if n else math.nan
            rec[f"{title} CI"] = f"{100 * lo:.1f}–{100 * hi:.1f}" if n else ""
            rec[f"{title} n"] = n
            p = _paper_value(table, preset, attack, d)
            rec[f"paper {title}"] = p if p is not None else math.nan
        out.append(rec)
    return pd.DataFrame(out)


def format_table(results, table: int = 1, preset: str = "paper", paper: bool = True,
                 ensemble: int | None = None, defences: Sequence[str] | None = None) -> str:
    """The measured table as text in the paper's layout (rows: attacks; columns: |L2|, then the
    defences), each accuracy in % with its Wilson 95% interval, the row's n, and below it the
    paper's ResNet-50 numbers for the same cells. ``defences``: as for :func:`table_frame`."""
    if _is_result(results):
        ensemble = results.ensemble if ensemble is None else ensemble
        defences = defences if defences is not None else (getattr(results, "columns", ()) or None)
    rows = results_rows(results)
    frame = table_frame(rows, table, preset, ensemble, defences=defences)
    _, _, title_of = _layout(rows, table, ensemble, defences)
    custom = bool(defences)
    titles = list(title_of.values())
    clean = rows[(rows["attack"] == "clean") & (rows["defence"] == "none")]
    kept = int((clean["correct"].astype(int) == 1).sum())
    dropped = len(clean) - kept
    model = ""
    if _is_result(results):
        model = results.meta.get("model", {}).get("name", "")
    head = ("Defences in Table 1's setting (attacks crafted on the undefended model): no defence, "
            "each defence's Ens-n vote and single run" if custom else
            {1: "Table 1: no defence, single defended run, majority of the ensemble",
             3: "Table 3: ablation (JPEG, wavelet denoising WD, pixel deflection PD)",
             4: "Table 4: thresholding after pixel deflection"}[table])
    lines = [f"{head}" + (f" · {model}" if model else "") + f" · attack preset '{preset}'",
             f"top-1 accuracy % [Wilson 95% interval]; {kept} images counted, {dropped} dropped "
             f"(misclassified without attack); every cell of a row uses the row's n images"]
    if table in (3, 4):
        lines.append("randomised columns are the majority vote of the ensemble (as the paper's, "
                     "whose WD+PD / Bayes columns equal its Ens-10)")
    if frame.empty:
        return "\n".join(lines + ["(no results yet)"])
    cell_w = 20
    header = f"{'Attack':8s} {'n':>4s} {'|L2|':>6s}  " + "".join(f"{t:<{cell_w}s}" for t in titles)
    lines += ["", header, "-" * len(header)]
    for r in frame.to_dict("records"):
        cells = []
        for t in titles:
            acc = r.get(t, math.nan)
            if acc != acc:  # NaN
                cells.append(f"{'—':<{cell_w}s}")
                continue
            extra = "" if r[f"{t} n"] == r["n"] else f" n={r[f'{t} n']}"
            lo, _, hi = r[f"{t} CI"].partition("–")
            cells.append(f"{f'{acc:5.1f} [{lo}, {hi}]{extra}':<{cell_w}s}")
        l2 = "" if r["|L2|"] != r["|L2|"] else f"{r['|L2|']:.3f}"
        lines.append(f"{r['attack']:8s} {r['n']:>4d} {l2:>6s}  " + "".join(cells))
    if paper:
        lines += ["", "Paper (ResNet-50, correctly classified images of 1000 ImageNet validation images):"]
        paper_titles = ["Ens-10" if t.startswith("Ens-") else t for t in titles]  # the paper's vote is of 10
        header_p = f"{'Attack':8s} {'':>4s} {'|L2|':>6s}  " + "".join(f"{t:<{cell_w}s}" for t in paper_titles)
        lines += [header_p, "-" * len(header_p)]
        for r in frame.to_dict("records"):
            vals = [r.get(f"paper {t}", math.nan) for t in titles]
            if all(v != v for v in vals):
                lines.append(f"{r['attack']:8s} {'':>4s} {'':>6s}  (not in the paper)")
                continue
            l2 = "" if r["paper |L2|"] != r["paper |L2|"] else f"{r['paper |L2|']:.2f}"
            lines.append(f"{r['attack']:8s} {'':>4s} {l2:>6s}  " +
                         "".join(f"{('—' if v != v else f'{v:5.1f}'):<{cell_w}s}" for v in vals))
    return "\n".join(lines)
