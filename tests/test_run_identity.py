"""Run identity survives refactoring (issue 19, "what it must show"): a results file written by the
code before the defence registry (commit db5ec61) still reads, and the same command resumes from
it without computing anything.

``tests/data/table3_db5ec61.csv`` (+ its sidecar) is the output of, at db5ec61,
``PD_THREADS=1 python -m pd_core evaluate --images ../shared/imagenet-dev --table 3 --attacks fgsm
--limit 12 --seed 0 --out t.csv`` (155 rows: 12 images, 1 dropped, 11 × 2 attacks × 7 columns).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pd_core.evaluation.paper import table_frame
from pd_core.evaluation.store import read_results

DATA = Path(__file__).resolve().parent / "data"
OLD = DATA / "table3_db5ec61.csv"
DEV = Path(__file__).resolve().parents[2] / "shared" / "imagenet-dev"


def test_a_results_file_of_db5ec61_reads_into_the_same_table():
    rows = read_results(OLD)
    assert len(rows) == 155
    frame = table_frame(rows, table=3, preset="paper").set_index("key")
    assert list(frame.index) == ["clean", "fgsm"] and set(frame["n"]) == {11}
    # Correct images of 11 per column, as that run printed them (JPG, WD, PD, PD+JPG, WD+PD+JPG, WD+PD).
    titles = ["No defence", "JPG", "WD", "PD", "PD+JPG", "WD+PD+JPG", "WD+PD"]
    counts = {key: [round(frame.loc[key, t] * 11 / 100) for t in titles] for key in frame.index}
    assert counts == {"clean": [11, 11, 9, 11, 11, 10, 8], "fgsm": [1, 1, 3, 1, 1, 5, 2]}
    assert frame.loc["fgsm", "WD+PD CI"] == "5.1–47.7"


@pytest.mark.skipif(not DEV.is_dir(), reason="needs ../shared/imagenet-dev (the folder the file was made on)")
def test_the_same_command_resumes_from_it_without_computing_anything(model, tmp_path, monkeypatch, capsys):
    from pd_core.cli import main

    out = tmp_path / OLD.name
    shutil.copy(OLD, out)
    shutil.copy(OLD.with_name(OLD.name + ".meta.json"), out.with_name(out.name + ".meta.json"))
    before = out.read_bytes()

    def no_forward(images):
        raise AssertionError("the resumed run classified images: a unit was recomputed")

    monkeypatch.setattr(model, "normalize", no_forward)  # every forward pass goes through it
    monkeypatch.setattr("pd_core.cli.evaluate.load_model", lambda name: model)
    code = main(["evaluate", "--images", str(DEV), "--table", "3", "--attacks", "fgsm", "--limit", "12",
                 "--seed", "0", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert out.read_bytes() == before  # nothing appended, nothing rewritten
    assert "11 images counted, 1 dropped" in printed
    assert "WD+PD" in printed and " 18.2 [5.1, 47.7]" in printed
