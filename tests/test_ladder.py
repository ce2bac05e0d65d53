"""The adaptive-attack ladder, its checks and the JSON report (issue 14 items 2-5), on a tiny budget."""
import json

import pytest
import torch
from gallery_cases import correct_foolbox_photos, labelled_folder

from pd_core.adaptive.checks import CHECK_NAMES
from pd_core.adaptive.ladder import ladder_checks, run_ladder
from pd_core.adaptive.report_json import (REPORT_SCHEMA, build_report, describe_defence, robustness_verdict,
                                          validate_report, worst_case, write_report)
from pd_core.adaptive.settings import LadderSettings
from pd_core.defences import create_defence

TINY = LadderSettings(eps_255=(1, 8), steps=2, eot=2, losses=("ce",), ensemble=3, seed=0)


@pytest.fixture(scope="module")
def two_images(model):
    return correct_foolbox_photos(model, 2, among=6)


@pytest.fixture(scope="module")
def ladder(model, two_images):
    x, y = two_images
    rows = run_ladder(model, x, y, None, TINY)
    found = ladder_checks(model, x, y, rows, None, TINY)
    return rows, found


def test_ladder_rows_cover_every_rung_loss_eps_and_vote(ladder):
    rows, _ = ladder
    assert len(rows) == 2 + 4 * 1 * 2 * 2
    attacked = [r for r in rows if r["rung"] != "clean"]
    assert {(r["rung"], r["eps_255"], r["defence"]) for r in attacked} == {
        (rung, e, d) for rung in ("transfer", "bpda", "bpda_eot", "exact_eot")
        for e in (1, 8) for d in ("single", "ens3")}
    for r in rows:
        assert r["ci_low"] <= r["accuracy"] <= r["ci_high"] and r["n"] == 2
    assert {r["eot"] for r in attacked if r["rung"].endswith("_eot")} == {2}
    assert {r["eot"] for r in attacked if not r["rung"].endswith("_eot")} == {1}
    clean = next(r for r in rows if r["rung"] == "clean" and r["defence"] == "single")
    # the adaptive attacks at 8/255 fool the defence on these photos; the clean images are kept
    exact8 = next(r for r in attacked if r["rung"] == "exact_eot" and r["eps_255"] == 8 and r["defence"] == "single")
    assert exact8["accuracy"] < clean["accuracy"]


def test_checks_are_the_six_named_ones(ladder):
    _, found = ladder
    assert tuple(c.name for c in found) == CHECK_NAMES
    assert all(c.status in ("pass", "warn") for c in found)
    # 32/255 with the exact gradient fools both photos
    assert found[0].passed and found[0].numbers["correct"] == 0


def test_report_validates_and_reports_the_worst_case(model, ladder, tmp_path):
    rows, found = ladder
    report = build_report(rows, found, model_name="efficientnet_lite0", input_size=224,
                          defence=describe_defence(create_defence("pixel_deflection", model)), settings=TINY)
    validate_report(report)
    path = tmp_path / "report.json"
    write_report(report, path)
    loaded = json.loads(path.read_text())
    validate_report(loaded)
    for entry in loaded["robust"]:
        at_eps = [a["accuracy"] for a in loaded["attacks"]
                  if a["eps_255"] == entry["eps_255"] and a["defence"] == "single"]
        assert entry["single"]["accuracy"] == min(at_eps)
    assert loaded["software"]["torch"] == torch.__version__
    assert loaded["verdict"].startswith("Pixel deflection (the paper's defence) at 1/255 looks robust: ")  # the budget closest to 4/255
    assert loaded["defence"]["name"] == "pixel_deflection" and loaded["defence"]["randomised"] is True
    assert loaded["rungs"] == ["transfer", "bpda", "bpda_eot", "exact_eot"]


def test_schema_rejects_broken_reports(model, ladder):
    rows, found = ladder
    report = build_report(rows, found, model_name="m", input_size=224,
                          defence=describe_defence(create_defence("pd", model)), settings=TINY)
    for broken in ({k: v for k, v in report.items() if k != "checks"},
                   {**report, "checks": [{**report["checks"][0], "status": "fail"}]},
                   {**report, "attacks": [{**report["attacks"][0], "rung": "magic"}]},
                   {**report, "threat_model": "L1"}):
        with pytest.raises(ValueError, match="adaptive-report/1"):
            validate_report(broken)
    assert REPORT_SCHEMA["properties"]["schema"]["const"] == report["schema"]


def test_verdict_in_plain_language():
    robust = [{"eps_255": 4.0, "single": {"accuracy": 0.02}}, {"eps_255": 1.0, "single": {"accuracy": 0.6}}]
    text = robustness_verdict(robust, 0.9, {4.0: 0.85, 1.0: 0.9}, title="JPEG, quality 75")
    assert text == ("JPEG, quality 75 at 4/255 looks robust: 85% (transfer), is robust: 2% (worst rung); without "
                    "attack 90%: it gives no real protection against an attacker who knows it.")
    assert "most of its accuracy" in robustness_verdict([{"eps_255": 4.0, "single": {"accuracy": 0.8}}], 0.9)
    l2 = robustness_verdict([{"eps_255": 0.05, "single": {"accuracy": 0.3}, "attack": "bpda/ce"}], 0.9,
                            norm="l2")
    assert l2 == ("The defence at L2 0.05 is robust: 30% (worst rung: bpda/ce); without attack 90%: it gives some "
                  "protection, but most images can still be fooled by an attacker who knows it.")


def test_worst_case_takes_the_strongest_attack():
    rows = [{"rung": "transfer", "loss": "ce", "eps_255": 4, "defence": "single", "correct": 9},
            {"rung": "exact_eot", "loss": "margin", "eps_255": 4, "defence": "single", "correct": 1},
            {"rung": "bpda", "loss": "ce", "eps_255": 4, "defence": "ens10", "correct": 0}]
    assert worst_case(rows)[4]["rung"] == "exact_eot"


def test_undefended_baseline_transfer_equals_bpda(model, two_images):
    """Without a defence, BPDA's identity *is* the gradient: transfer and BPDA must coincide."""
    x, y = two_images
    settings = LadderSettings(eps_255=(1,), steps=2, eot=2, losses=("ce",), ensemble=2, rungs=("transfer", "bpda"))
    rows = run_ladder(model, x, y, create_defence("undefended"), settings)
    transfer, bpda = ([r["correct"] for r in rows if r["rung"] == rung] for rung in ("transfer", "bpda"))
    assert transfer == bpda


def test_command_line_ladder_writes_a_valid_report(model, tmp_path, capsys):
    import csv

    from pd_core.cli import main

    folder = labelled_folder(tmp_path)
    out, report = tmp_path / "ladder.csv", tmp_path / "report.json"
    code = main(["adaptive", "--images", str(folder), "--eps", "4", "--eot", "1", "--steps", "1", "--ensemble", "2",
                 "--tuning-fraction", "0", "--no-progress", "--ladder", "--report", str(report), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "exact_eot" in printed and "check reaches_zero" in printed
    rows = list(csv.DictReader(open(out)))
    assert {(r["rung"], r["loss"]) for r in rows if r["rung"] != "clean"} == {
        (rung, loss) for rung in ("transfer", "bpda", "bpda_eot", "exact_eot") for loss in ("ce", "margin")}
    loaded = json.loads(report.read_text())
    validate_report(loaded)
    assert loaded["eps_255"] == [4.0] and loaded["settings"]["steps"] == 1


def test_command_line_ladder_loss_restricts_the_ladder_to_that_loss(model, tmp_path):
    import csv

    from pd_core.cli import main

    folder = labelled_folder(tmp_path)
    out = tmp_path / "ladder.csv"
    code = main(["adaptive", "--images", str(folder), "--eps", "4", "--eot", "1", "--steps", "1", "--ensemble", "2",
                 "--tuning-fraction", "0", "--no-progress", "--ladder", "--defence", "bit_depth", "--loss", "margin",
                 "--out", str(out)])
    assert code == 0
    rows = list(csv.DictReader(open(out)))
    # bit depth is deterministic with a BPDA surrogate: no EOT rung, no exact rung
    assert {(r["rung"], r["loss"]) for r in rows if r["rung"] != "clean"} == {("transfer", "margin"),
                                                                              ("bpda", "margin")}


def test_command_line_gradient_choice_and_report_needs_ladder(model, tmp_path, capsys):
    from pd_core.cli import main

    folder = labelled_folder(tmp_path)
    out = tmp_path / "adaptive.csv"
    assert main(["adaptive", "--images", str(folder), "--eps", "2", "--eot", "1", "--steps", "1", "--ensemble", "2",
                 "--tuning-fraction", "0", "--no-progress", "--gradient", "exact", "--out", str(out)]) == 0
    assert "single" in capsys.readouterr().out
    code = main(["adaptive", "--images", str(folder), "--report", str(tmp_path / "r.json"), "--out", str(out)])
    assert code == 2
    assert "--report needs --ladder" in capsys.readouterr().err
