"""The layout of the paper's tables: which attacks are rows, which defences are columns, and their
titles. Shared by the unit of work (:mod:`.units`, which writes one row per column) and the readers
(:mod:`.paper`, :mod:`.table_figures`).

Columns come from the defence registry (:data:`pd_core.defences.registry.DEFENCES`): Table 3's and
Table 4's column keys (the ``defence`` values in results files, unchanged since the first results
files) map to registry entries through :data:`~pd_core.defences.registry.TABLE3_COLUMNS` and
:data:`~pd_core.defences.registry.TABLE4_COLUMNS`, and each column's title is its entry's
:attr:`~pd_core.defences.base.DefenceInfo.column_title`. Table 1 is one defence (the paper's) in
the transfer setting: ``single`` (one defended run) and ``ens<n>`` (the majority of n copies).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from ..defences.registry import TABLE3_COLUMNS, TABLE4_COLUMNS, defence_info
from .data import EvaluationError

__all__ = ["ATTACK_ORDER", "ATTACK_TITLES", "PAPER_ATTACKS", "TABLES", "check_table", "ens_name", "table_entries",
           "table_columns", "column_titles"]

#: Row order of the paper's tables; attacks the paper does not have (PGD) come after.
ATTACK_ORDER = ("clean", "fgsm", "igsm", "deepfool", "jsma", "lbfgs", "cw", "pgd")
ATTACK_TITLES = {"clean": "Clean", "fgsm": "FGSM", "igsm": "IGSM", "deepfool": "DFool", "jsma": "JSMA",
                 "lbfgs": "LBFGS", "cw": "C&W", "pgd": "PGD"}
#: The paper's Table 1 attacks in its order (the default attack list).
PAPER_ATTACKS = ("fgsm", "igsm", "deepfool", "jsma", "lbfgs", "cw")

#: The tables the protocol reproduces.
TABLES = (1, 3, 4)

#: Table 4 compares wavelet thresholds, so it heads the paper's full defence by its threshold,
#: BayesShrink, as the paper does; every other header is the registry entry's short title.
_TABLE4_FULL_DEFENCE_TITLE = "Bayes"


def check_table(table) -> int:
    """``table`` as an int; :class:`EvaluationError` unless it is 1, 3 or 4 (the one place this is checked)."""
    if table not in TABLES:
        raise EvaluationError(f"table must be 1, 3 or 4, not {table!r}.")
    return int(table)


def ens_name(n: int) -> str:
    """The ``defence`` value of Table 1's Ens-n column: ``"ens10"``."""
    return f"ens{int(n)}"


def table_entries(table: int) -> Mapping[str, str]:
    """Column key -> registry entry of Table 3 or 4 (Table 1: the paper's defence under ``"ens"``)."""
    table = check_table(table)
    if table == 1:
        return {"ens": "pixel_deflection"}
    return TABLE3_COLUMNS if table == 3 else TABLE4_COLUMNS


def table_columns(table: int, ensemble: int = 10) -> list[str]:
    """The ``defence`` values of a table's columns, in the paper's order (``none`` first)."""
    if check_table(table) == 1:
        return ["none", "single"] + ([ens_name(ensemble)] if ensemble > 1 else [])
    return ["none", *table_entries(table)]


def column_titles(table: int, defences: Sequence[str]) -> dict[str, str]:
    """``defence`` value -> column header: Table 3/4 columns and registry names from the registry
    entry's short title, ``ens<n>`` -> ``Ens-n``; anything else (a plugin no longer registered) its name."""
    entries = dict(table_entries(table)) if table in (3, 4) else {}
    titles = {}
    for d in defences:
        if d == "none":
            titles[d] = "No defence"
        elif d == "single":
            titles[d] = "Single"
        elif d.startswith("ens") and d[3:].isdigit():
            titles[d] = f"Ens-{d[3:]}"
        else:
            try:
                info = defence_info(entries.get(d, d))
                full = table == 4 and d in entries and info.group == "paper"
                titles[d] = _TABLE4_FULL_DEFENCE_TITLE if full else info.column_title
            except (KeyError, ValueError):
                titles[d] = d
    return titles
