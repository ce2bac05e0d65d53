"""``evaluate --defence a,b,c``: any defences of the registry (plugins included) as the columns of
Table 1's transfer setting, built from the registry like the tables' columns; a defence that
fails on a unit loses only that unit's rows of it, the run goes on, and the exit code says so.

Kept small: two gallery photos, FGSM, Ens-2, one chunk of two images (2 units: clean and FGSM).
"""
from __future__ import annotations

import json
import textwrap
from dataclasses import replace

import pytest

from gallery_cases import labelled_folder
from pd_core.defences.registry import DEFENCES, unregister_defence
from pd_core.evaluation import EvaluationError, ProtocolSettings, evaluate, read_results

RUN = ["--attacks", "fgsm", "--ensemble", "2", "--batch-size", "2", "--seed", "4", "--tuning-fraction", "0",
       "--no-progress"]
KEY = ["image", "attack", "preset"]


@pytest.fixture()
def folder(tmp_path):
    return labelled_folder(tmp_path, count=2)


@pytest.fixture()
def plugins():
    """Plugin names registered by a test are removed after it (the registry is process-wide)."""
    before = set(DEFENCES)
    yield
    for name in set(DEFENCES) - before:
        unregister_defence(name)


def _cli(model, monkeypatch, *argv) -> int:
    from pd_core.cli import main

    monkeypatch.setattr("pd_core.cli.evaluate.load_model", lambda name: model)
    return main(["evaluate", *argv])


def _plugin(tmp_path, body: str):
    path = tmp_path / "mine.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_settings_are_checked_in_one_place():
    cases = [(dict(attacks=("nope",)), "unknown attack 'nope'"), (dict(table=2), "table must be 1, 3 or 4"),
             (dict(attacks=("igsm",), preset="minimal"), "igsm has no preset 'minimal'"),
             (dict(ensemble=0), "ensemble must be at least 1"),
             (dict(defences="jpeg", table=3), "Table 1's setting"),
             (dict(defences="jpeg,jpeg75"), "listed twice"), (dict(defences="nosuch"), "Unknown defence 'nosuch'")]
    for kwargs, message in cases:
        with pytest.raises(EvaluationError, match=message):
            ProtocolSettings(**kwargs)
    s = ProtocolSettings(attacks=("FGSM", " igsm", "clean", "fgsm"), defences="jpeg75, wd+pd")
    assert s.attacks == ("fgsm", "igsm") and s.defences == ("jpeg", "pixel_deflection")


def test_defence_columns_are_the_tables_own_defences(model, folder, tmp_path, monkeypatch, capsys):
    """JPEG and the paper's defence in Table 1's setting give exactly Table 3's JPG and WD+PD rows:
    the same registry entries, the same attack, the same per-image seeds."""
    listed, table3 = tmp_path / "listed.csv", tmp_path / "t3.csv"
    assert _cli(model, monkeypatch, "--images", str(folder), "--defence", "jpeg75,wd+pd", "--out", str(listed),
                *RUN) == 0
    printed = capsys.readouterr().out
    assert "JPG" in printed and "WD+PD Ens-2" in printed and "WD+PD single" in printed
    assert _cli(model, monkeypatch, "--images", str(folder), "--table", "3", "--out", str(table3), *RUN) == 0
    got, ref = read_results(listed), read_results(table3)
    assert set(got["defence"]) == {"none", "jpeg", "pixel_deflection"}
    for mine, theirs in (("jpeg", "jpeg"), ("pixel_deflection", "wd+pd"), ("none", "none")):
        a = got[got["defence"] == mine].sort_values(KEY).reset_index(drop=True)
        b = ref[ref["defence"] == theirs].sort_values(KEY).reset_index(drop=True)
        assert len(a) == len(b) > 0
        for column in ("image", "attack", "prediction", "correct", "single_correct", "copies", "seed"):
            assert list(a[column]) == list(b[column]), (mine, column)
    assert set(got.loc[got["defence"] == "jpeg", "copies"]) == {1}  # deterministic: one copy
    meta = json.loads((tmp_path / "listed.csv.meta.json").read_text())
    assert meta["settings"]["defences"] == ["jpeg", "pixel_deflection"] and meta["failed_units"] == []


def test_a_failing_plugin_loses_only_its_unit_and_the_rerun_retries_it(model, folder, tmp_path, monkeypatch,
                                                                     capsys, plugins):
    """The plugin works on the clean unit and raises on the FGSM one: exit 2 with one line, every
    other row kept, ``failed_units`` in the sidecar; fixed, the same command adds only its rows."""
    plugin = _plugin(tmp_path, """
        calls = []

        def shaky(x, *, generator):
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("the GPU caught fire")
            return x.flip(-1)

        shaky.randomised = False  # one call per unit: the first is the clean unit, the second FGSM's
        """)
    out = tmp_path / "r.csv"
    args = ["--images", str(folder), "--defence", f"jpeg,{plugin}:shaky", "--out", str(out), *RUN]
    assert _cli(model, monkeypatch, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'shaky'" in err[0] and "RuntimeError: the GPU caught fire" in err[0]
    rows = read_results(out)
    kept = rows.groupby(["attack", "defence"]).size().to_dict()
    assert kept == {("clean", "none"): 2, ("clean", "jpeg"): 2, ("clean", "shaky"): 2, ("fgsm", "none"): 2,
                    ("fgsm", "jpeg"): 2}
    meta = json.loads((tmp_path / "r.csv.meta.json").read_text())
    [failed] = meta["failed_units"]
    assert (failed["chunk"], failed["attack"], failed["defence"]) == (0, "fgsm", "shaky")
    assert "the GPU caught fire" in failed["reason"]

    plugin.write_text(plugin.read_text().replace("len(calls) == 2", "False"))
    before = read_results(out)
    assert _cli(model, monkeypatch, *args) == 0
    after = read_results(out)
    assert len(after) == len(before) + 2  # only the two missing rows
    new = after.iloc[len(before):]
    assert set(zip(new["attack"], new["defence"])) == {("fgsm", "shaky")}
    assert json.loads((tmp_path / "r.csv.meta.json").read_text())["failed_units"] == []


def test_bad_output_is_a_failed_unit_with_the_contract_s_sentence(model, folder, tmp_path, plugins):
    plugin = _plugin(tmp_path, """
        def brighter(x, *, generator):
            return x * 3
        """)
    settings = ProtocolSettings(attacks=("fgsm",), ensemble=2, batch_size=2, seed=4, tuning_fraction=0.0,
                                defences=f"{plugin}:brighter")
    result = evaluate(model, folder, settings)
    assert [(f["attack"], f["defence"]) for f in result.failed_units] == [("clean", "brighter"), ("fgsm", "brighter")]
    assert all("must stay in [0, 1]" in f["reason"] for f in result.failed_units)
    assert set(result.rows["defence"]) == {"none"} and len(result.rows) == 4
    assert replace(settings, seed=5).plugins == settings.plugins  # the specs travel with the settings


def test_sweep_takes_the_same_defence_list_and_failures(model, folder, tmp_path, monkeypatch, capsys, plugins):
    """``sweep --defence``: the registry's JPEG and a plugin that always raises, at one FGSM point:
    the plugin's units are reported (exit 2, ``failed_units``), JPEG's and the undefended rows are kept."""
    from pd_core.cli import main

    plugin = _plugin(tmp_path, """
        def broken(x, *, generator):
            raise ValueError("not my day")
        """)
    out = tmp_path / "s.csv"
    monkeypatch.setattr("pd_core.cli.common.load_model", lambda name: model)
    code = main(["sweep", "--images", str(folder), "--values", "2", "--defence", f"jpeg,{plugin}:broken",
                 "--out", str(out), *[a for a in RUN if a != "--attacks" and a != "fgsm"]])
    assert code == 2
    assert "'broken'" in capsys.readouterr().err
    rows = read_results(out)
    assert set(rows["defence"]) == {"none", "jpeg"}
    assert set(rows.loc[rows["attack"] == "fgsm", "preset"]) == {"paper@eps=2/255"}
    meta = json.loads((tmp_path / "s.csv.meta.json").read_text())
    assert sorted(f["attack"] for f in meta["failed_units"]) == ["clean", "fgsm"]
    assert meta["settings"]["defences"] == ["jpeg", "broken"]
