"""Accuracy against perturbation size (issue 13, item 3): sweep points, resume, summary and figure.

Kept fast: two gallery photos the model classifies correctly, FGSM only, grids of two or three ε,
an ensemble of 3 copies, one chunk.
"""
from __future__ import annotations

import math

import pandas as pd
import pytest

from pd_core.evaluation import EvaluationError, read_results, wilson_interval
from pd_core.evaluation import grid_engine
from pd_core.evaluation import sweeps as sw
from pd_core.evaluation.settings import RunSettings
from pd_core.evaluation.curve_figures import paper_positions, sweep_figure

RUN = RunSettings(ensemble=3, batch_size=2, seed=3, tuning_fraction=0.0)


@pytest.fixture(scope="module")
def minimal_run(model, correct_pair, tmp_path_factory):
    """FGSM's minimal (early-stopped) preset with caps 1, 2, 4 (/255), and its paper preset at 1 and 4."""
    out = tmp_path_factory.mktemp("sweep") / "sweep.csv"
    result = sw.sweep(model, correct_pair, sw.SweepGrid(("fgsm",), ("minimal", "paper"), (1, 2, 4)), RUN, out_csv=out)
    return result, out


# --- points and labels ------------------------------------------------------------------------

def test_point_labels_round_trip():
    assert sw.point_label("paper", "eps", 4) == "paper@eps=4/255"
    assert sw.parse_point_label("paper@eps=4/255") == ("paper", "eps", 4.0)
    assert sw.parse_point_label("budget@eps=0.5/255") == ("budget", "eps", 0.5)
    assert sw.parse_point_label("paper@overshoot=4.9") == ("paper", "overshoot", 4.9)
    assert sw.parse_point_label("paper") is None
    assert sw.parse_point_label("none") is None


def test_iterative_presets_keep_their_step_rule():
    steps = {pt.value: pt.overrides()["steps"] for pt in sw.sweep_points(["igsm"], ["paper"])}
    # IGSM paper: 1/255 steps, 10 at 8/255 -> Kurakin et al.'s min(eps + 4, 1.25 eps), rounded up.
    assert steps == {1: 2, 2: 3, 4: 5, 6: 8, 8: 10, 12: 15, 16: 20}
    budget = {pt.value: pt.params() for pt in sw.sweep_points(["igsm"], ["budget"], [8])}
    assert budget[8]["steps"] == 10 and budget[8]["early_stop"] is False
    assert math.isclose(budget[8]["stepsize"], 1 / 255, rel_tol=1e-6)
    pgd = {pt.value: pt.overrides()["steps"] for pt in sw.sweep_points(["pgd"], ["paper"], [1, 4, 16])}
    assert pgd == {1: 5, 4: 20, 16: 80}  # steps * 0.5/255 = 2.5 eps, as the preset's 20 at 4/255
    fgsm = sw.sweep_points(["fgsm"], ["paper"], [6])[0]
    assert fgsm.overrides() == {"eps": round(6 / 255, 8)}


def test_default_grids_and_other_parameters():
    labels = [pt.label for pt in sw.sweep_points(["deepfool", "jsma"], ["paper"])]
    assert labels[0] == "paper@overshoot=0.02" and "paper@overshoot=21" in labels
    assert "paper@gamma=0.1" in labels and "paper@gamma=0.001" in labels
    cw = sw.sweep_points(["cw"], ["paper"], [0, 2], param="confidence")
    assert [pt.overrides() for pt in cw] == [{"confidence": 0.0}, {"confidence": 2.0}]
    # each attack runs the listed presets it has
    pts = sw.sweep_points(["fgsm", "igsm"], ["paper", "budget", "minimal"], [4])
    assert {(p.attack, p.preset) for p in pts} == {("fgsm", "paper"), ("fgsm", "minimal"),
                                                   ("igsm", "paper"), ("igsm", "budget")}


@pytest.mark.parametrize("kwargs, words", [
    (dict(attacks=["fgsm"], values=[0]), "between 1 and 255"),
    (dict(attacks=["fgsm"], presets=["budget"]), "none of the presets"),
    (dict(attacks=["nope"]), "unknown attack"),
    (dict(attacks=["fgsm"], param="steps"), "no parameter"),
    (dict(attacks=["jsma"], values=[2]), "fraction"),
])
def test_bad_sweeps_are_one_sentence(kwargs, words):
    with pytest.raises(EvaluationError, match=words):
        sw.sweep_points(**kwargs)


# --- rows -------------------------------------------------------------------------------------

def test_rows_per_point_carry_the_strength_and_three_measures(minimal_run):
    result, out = minimal_run
    rows = read_results(out)
    attacked = rows[rows["attack"] == "fgsm"]
    assert sorted(set(attacked["preset"])) == sorted(
        f"{p}@eps={v}/255" for p in ("minimal", "paper") for v in (1, 2, 4))
    for label, g in attacked.groupby("preset"):
        assert len(g) == 2 * 3  # images x (none, single, ens3)
        assert sorted(g["defence"].unique()) == ["ens3", "none", "single"]
        _, _, k = sw.parse_point_label(label)
        for m in ("norm_l2", "norm_l2_model", "rmse"):
            assert g[m].notna().all() and (g[m] >= 0).all()
        assert (g["linf_255"] <= k + 1e-3).all() and (g["rmse"] <= k / 255 + 1e-6).all()
        if label.startswith("paper"):  # one step of eps: every pixel moves by eps unless clipped
            assert (g["linf_255"].round(3) == k).all()
            assert (g["rmse"] > 0.8 * k / 255).all()
            assert (g["norm_l2_model"] > g["norm_l2"]).all()  # /std (< 0.5) magnifies the change


def test_minimal_fgsm_curve_is_monotone_and_keeps_each_image_s_perturbation(minimal_run):
    """A larger cap never helps an image that a smaller cap already fooled: it keeps the same
    (smallest) eps, so its perturbation is the same and no-defence accuracy cannot rise."""
    result, _ = minimal_run
    s = result.summary
    none = s[(s["preset"] == "minimal") & (s["defence"] == "none")]
    assert none.iloc[0]["label"] == "clean" and none.iloc[0]["accuracy"] == 1.0  # size 0: the clean images
    accs = none[none["label"] != "clean"].sort_values("value")["accuracy"].tolist()
    assert accs == sorted(accs, reverse=True)
    rows = result.rows[(result.rows["attack"] == "fgsm") & (result.rows["defence"] == "none")]
    minimal = rows[rows["preset"].str.startswith("minimal@")]
    for image, g in minimal.groupby("image"):
        g = g.assign(cap=[sw.parse_point_label(p)[2] for p in g["preset"]]).sort_values("cap")
        fooled_at = g.loc[g["attack_success"].astype(int) == 1, "cap"]
        if len(fooled_at):
            later = g[g["cap"] >= fooled_at.min()]
            assert later["linf_255"].nunique() == 1 and later["norm_l2"].nunique() == 1


def test_summary_accuracy_and_wilson_interval_match_the_rows(minimal_run):
    result, _ = minimal_run
    s = result.summary
    rec = s[(s["label"] == "paper@eps=4/255") & (s["defence"] == "ens3")].iloc[0]
    g = result.rows[(result.rows["preset"] == "paper@eps=4/255") & (result.rows["defence"] == "ens3")]
    k = int(g["correct"].sum())
    assert (rec["n"], rec["correct"]) == (2, k)
    assert (rec["ci_low"], rec["ci_high"]) == pytest.approx(wilson_interval(k, 2))
    none = result.rows[(result.rows["preset"] == "paper@eps=4/255") & (result.rows["defence"] == "none")]
    assert rec["mean_rmse"] == pytest.approx(none["rmse"].mean())


def test_summary_ignores_ordinary_table_rows():
    def row(attack, preset, defence, correct):
        return {"image": "a.png", "label": 1, "attack": attack, "preset": preset, "defence": defence,
                "prediction": 1, "correct": correct, "norm_l2": 0.1, "norm_l2_model": 0.2, "rmse": 0.05,
                "attack_success": 1}

    rows = pd.DataFrame([row("clean", "none", "none", 1), row("fgsm", "paper", "none", 0),
                         row("fgsm", "paper@eps=2/255", "none", 1)])
    s = sw.sweep_summary(rows)
    assert list(s["label"]) == ["clean", "paper@eps=2/255"]
    assert s.iloc[1]["accuracy"] == 1.0 and s.iloc[1]["value"] == 2.0


# --- resume -----------------------------------------------------------------------------------

def test_resume_computes_only_the_missing_points(model, correct_pair, minimal_run, tmp_path, monkeypatch):
    _, full_out = minimal_run
    out = tmp_path / "sweep.csv"
    calls = []
    real = grid_engine.run_unit  # the engine sweeps and doses run on

    def counting(model, chunk, attack, settings, **kw):
        calls.append((attack, settings.row_preset(attack)))
        return real(model, chunk, attack, settings, **kw)

    monkeypatch.setattr(grid_engine, "run_unit", counting)
    first = sw.sweep(model, correct_pair, sw.SweepGrid(("fgsm",), ("paper",), (1,)), RUN, out_csv=out)
    assert calls == [("clean", "none"), ("fgsm", "paper@eps=1/255")] and first.computed_units == 2
    calls.clear()
    again = sw.sweep(model, correct_pair, sw.SweepGrid(("fgsm",), ("paper",), (1, 4)), RUN, out_csv=out)
    assert calls == [("fgsm", "paper@eps=4/255")] and again.computed_units == 1
    calls.clear()
    done = sw.sweep(model, correct_pair, sw.SweepGrid(("fgsm",), ("paper",), (4, 1)), RUN, out_csv=out)
    assert calls == [] and done.computed_units == 0
    # the resumed file holds the same rows as the uninterrupted run's for these points
    ours = read_results(out)
    full = read_results(full_out)
    full = full[full["preset"].isin(set(ours["preset"]))]
    key = ["image", "attack", "preset", "defence"]
    cols = key + ["prediction", "correct", "norm_l2", "rmse", "seed", "attack_seed"]
    pd.testing.assert_frame_equal(ours.sort_values(key)[cols].reset_index(drop=True),
                                  full.sort_values(key)[cols].reset_index(drop=True))


# --- figure -----------------------------------------------------------------------------------

def test_figure_has_a_line_and_band_per_defence_and_the_three_paper_readings(minimal_run):
    result, _ = minimal_run
    s = result.summary
    fig = sweep_figure(s, "fgsm", "paper", measure="norm_l2")
    names = [t.name for t in fig.data]
    assert names == ["No defence 95% interval", "No defence", "Single run 95% interval", "Single run",
                     "Ens-3 95% interval", "Ens-3", "paper, |L2| as norm_l2", "paper, |L2| as norm_l2_model",
                     "paper, |L2| as rmse"]
    assert [t.fill for t in fig.data[:6:2]] == ["toself"] * 3
    sub = s[(s["preset"] == "paper") & (s["defence"] == "ens3")]
    assert list(fig.data[5].y) == pytest.approx(list(100 * sub["accuracy"]))
    assert list(fig.data[5].x) == pytest.approx(list(sub["mean_norm_l2"].fillna(0)))
    # the paper's FGSM |L2| (0.05 main row, 0.12 large) at each reading, three accuracies each
    none = s[(s["preset"] == "paper") & (s["defence"] == "none") & (s["label"] != "clean")]
    as_l2, as_model, as_rmse = fig.data[6:]
    assert sorted(set(as_l2.x)) == pytest.approx([0.05, 0.12])
    ratio = none["mean_norm_l2"].sum() / none["mean_rmse"].sum()
    assert sorted(set(as_rmse.x)) == pytest.approx([0.05 * ratio, 0.12 * ratio])
    assert list(as_l2.y) == [20.0, 79.9, 81.5, 11.1, 61.5, 70.4]
    # on the rmse axis the rmse reading sits at the paper's value itself
    on_rmse = {p["reading"]: p for p in paper_positions(s, "fgsm", "paper", "rmse")}
    assert on_rmse["rmse"]["factor"] == 1.0 and on_rmse["norm_l2"]["factor"] == pytest.approx(1 / ratio)


def test_cli_plot_writes_html_and_bad_values_exit_2(minimal_run, tmp_path, capsys):
    from pd_core.cli import main

    _, out = minimal_run
    html = tmp_path / "curves.html"
    assert main(["sweep", "--plot", str(out), "--html", str(html), "--measure", "rmse"]) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "curves_fgsm_minimal.html").exists() and (tmp_path / "curves_fgsm_paper.html").exists()
    assert "paper@eps=4/255" in printed
    assert main(["sweep", "--images", str(tmp_path), "--out", str(tmp_path / "x.csv"), "--values", "1,x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:")
