"""The deflection dose (issue 13, item 4): rows, the K = 0 identity, agreement with the protocol.

Kept fast: two gallery photos, FGSM only, K ∈ {0, 100}, with and without the denoiser, an ensemble
of 3 copies, one chunk.
"""
from __future__ import annotations

import pandas as pd
import pytest

from pd_core import evaluation as ev
from pd_core.evaluation import EvaluationError, read_results
from pd_core.evaluation import dose as ds
from pd_core.evaluation.settings import RunSettings
from pd_core.evaluation.curve_figures import dose_figure

RUN = dict(ensemble=3, batch_size=2, seed=5, tuning_fraction=0.0)
GRID = ds.DoseGrid(attacks=("fgsm",), preset="paper", deflections=(0, 100))


@pytest.fixture(scope="module")
def dose_run(model, correct_pair, tmp_path_factory):
    out = tmp_path_factory.mktemp("dose") / "dose.csv"
    return ds.deflection_dose(model, correct_pair, GRID, RunSettings(**RUN), out_csv=out), out


def test_rows_per_image_attack_and_dose(dose_run):
    result, out = dose_run
    rows = read_results(out)
    assert result.kept == 2 and len(rows) == 2 * 2 * 5  # images x (clean, fgsm) x (none + 4 doses)
    for (image, attack), g in rows.groupby(["image", "attack"]):
        assert sorted(g["defence"]) == ["k=0", "k=0+wd", "k=100", "k=100+wd", "none"]
        copies = dict(zip(g["defence"], g["copies"]))
        assert copies == {"none": 1, "k=0": 1, "k=0+wd": 1, "k=100": 3, "k=100+wd": 3}
    assert set(rows.loc[rows["attack"] == "fgsm", "preset"]) == {"paper"}


def test_zero_deflections_without_denoiser_is_the_undefended_model(dose_run):
    result, _ = dose_run
    rows = result.rows
    key = ["image", "attack"]
    none = rows[rows["defence"] == "none"].sort_values(key).reset_index(drop=True)
    zero = rows[rows["defence"] == "k=0"].sort_values(key).reset_index(drop=True)
    assert list(zero["prediction"]) == list(none["prediction"])
    assert list(zero["correct"]) == list(none["correct"])
    s = result.summary
    fgsm = s[s["attack"] == "fgsm"].set_index("defence")
    assert fgsm.loc["k=0", "accuracy"] == fgsm.loc["none", "accuracy"]


def test_paper_dose_equals_the_protocol_s_defence(model, correct_pair, dose_run):
    """K = 100 with the denoiser is the paper's defence: same attack, same deflection seeds, so the
    rows equal :func:`evaluate`'s Table 1 (single run and Ens-3) for the same images."""
    result, _ = dose_run
    table = ev.evaluate(model, correct_pair, ev.ProtocolSettings(attacks=("fgsm",), preset="paper", table=1, **RUN))
    t = table.rows
    d = result.rows[result.rows["defence"] == "k=100+wd"].set_index(["image", "attack"]).sort_index()
    ens = t[t["defence"] == "ens3"].set_index(["image", "attack"]).sort_index()
    single = t[t["defence"] == "single"].set_index(["image", "attack"]).sort_index()
    assert list(d["prediction"]) == list(ens["prediction"])
    assert list(d["correct"]) == list(ens["correct"])
    assert list(d["single_correct"]) == list(single["correct"])
    assert list(d["seed"]) == list(ens["seed"])


def test_resume_computes_nothing_twice(model, correct_pair, dose_run):
    _, out = dose_run
    before = read_results(out)
    again = ds.deflection_dose(model, correct_pair, GRID, RunSettings(**RUN), out_csv=out)
    assert again.computed_units == 0
    pd.testing.assert_frame_equal(read_results(out), before)


def test_summary_and_figure(dose_run):
    result, _ = dose_run
    s = result.summary
    rec = s[(s["attack"] == "clean") & (s["defence"] == "k=100+wd")].iloc[0]
    assert (rec["deflections"], rec["denoise"], rec["n"]) == (100, True, 2)
    fgsm_none = s[(s["attack"] == "fgsm") & (s["defence"] == "none")].iloc[0]
    assert fgsm_none["fooled"] == int(result.rows.query("attack == 'fgsm' and defence == 'none'")
                                      ["attack_success"].astype(int).sum())
    fig = dose_figure(s)
    names = [t.name for t in fig.data]
    lines = [n for n in names if not n.endswith("interval") and not n.startswith("paper")]
    assert lines == ["Clean, deflection only", "Clean, deflection + denoiser", "FGSM, deflection only",
                     "FGSM, deflection + denoiser"]
    assert len(names) == 2 * len(lines) + 1 and names[-1].startswith("paper")
    assert list(fig.layout.xaxis.categoryarray) == ["0", "100"]
    fgsm_wd = fig.data[names.index("FGSM, deflection + denoiser")]
    want = s[(s["attack"] == "fgsm") & (s["defence"].isin(["k=0+wd", "k=100+wd"]))].sort_values("deflections")
    assert list(fgsm_wd.y) == pytest.approx(list(100 * want["accuracy"]))
    # paper Table 3 (WD, PD, WD+PD), clean then FGSM
    assert list(fig.data[-1].y) == [98.7, 97.4, 98.9, 40.6, 79.7, 81.5]


def test_bad_grids_are_one_sentence():
    with pytest.raises(EvaluationError, match="0 or more"):
        ds.dose_defences([-1, 100])
    with pytest.raises(EvaluationError, match="denoiser"):
        ds.dose_defences([100], denoise=())
    assert ds.parse_dose_defence("k=300+wd") == (300, True)
    assert ds.parse_dose_defence("k=0") == (0, False)
    assert ds.parse_dose_defence("ens10") is None
