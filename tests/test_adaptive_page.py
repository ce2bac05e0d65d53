"""The "Adaptive attack" page through Streamlit's AppTest (no browser), kept short: 2 steps, 1 EOT run;
the ladder on 2 photos, one ε, 1 step, k = 1, a vote of 2 (issue 14).

Sidebar settings are changed through ``at.session_state`` (see the AppTest quirk in tests/test_app.py).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# No background warm-up thread in the test process: it could still be inside torch when the
# interpreter exits (an abort, exit code 134, after every test passed).
os.environ["PD_WARM_UP"] = "0"

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")


@pytest.fixture(scope="module")
def page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("pages/adaptive.py").run()
    return at


def _clean(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_page_explains_the_attack_and_shows_the_saved_curve(page):
    _clean(page)
    assert page.title[0].value == "Adaptive attack"
    text = " ".join(m.value for m in page.markdown)
    for words in ("BPDA", "EOT", "pretend the defence does nothing", "average"):
        assert words in text
    charts = [c.proto.id for c in page.get("plotly_chart")]
    saved = ROOT / "docs" / "adaptive_results.csv"
    assert any("adaptive_curve" in c for c in charts) == saved.is_file()


def test_run_attacks_the_photo_and_shows_before_and_after(page):
    page.session_state["adaptive_steps"] = 2
    page.session_state["adaptive_eot"] = 1
    page.session_state["adaptive_eps"] = 8
    page.session_state["adaptive_rung"] = "exact_eot"  # the most knowing attacker, through the exact gradient
    [run] = [b for b in page.button if b.label == "Run the adaptive attack"]
    run.click().run()
    _clean(page)
    headers = [h.value for h in page.subheader]
    assert "Before the attack" in headers and "After the adaptive attack" in headers
    charts = " ".join(c.proto.id for c in page.get("plotly_chart"))
    for key in ("adaptive_heatmap", "adaptive_amplified", "adaptive_clean_single", "adaptive_adversarial_ens"):
        assert key in charts
    _, _, demo, _ = page.session_state["adaptive_result"]
    assert float((demo.adversarial - demo.clean).abs().max()) <= 8 / 255 + 1e-6
    assert demo.attack.steps_done == 2 and demo.attack.params["eot"] == 1
    caption = " ".join(c.value for c in page.caption)
    assert "L∞ " in caption and "/255" in caption
    assert "1 defence runs ((d) exact gradient+EOT)" in caption


# ----------------------------------------------------------------------------- the whole ladder
LADDER_BUDGET = {"ladder_photos": 2, "ladder_eps": [4], "ladder_steps": 1, "ladder_eot": 1, "ladder_ensemble": 2,
                 "ladder_baselines": True}
DEFENCES = ("pixel_deflection", "jpeg", "none")  # registry names
SHARED_DEV = ROOT.parent / "shared" / "imagenet-dev"


@pytest.fixture(scope="module")
def ladder_page(page):
    if not SHARED_DEV.is_dir():
        pytest.skip("no data folder here: the ladder needs ../shared/imagenet-dev")
    for key, value in LADDER_BUDGET.items():
        page.session_state[key] = value
    [run] = [b for b in page.button if b.label == "Run the whole ladder"]
    run.click().run()
    _clean(page)
    return page


def _values(data) -> list[float]:
    from tests.test_reproduce import _values as plotly_values  # a list, or Plotly's typed-array form

    return plotly_values(data)


def _chart_specs(at) -> dict:
    import json

    return {c.proto.id.rsplit("-", 1)[-1]: json.loads(c.proto.spec) for c in at.get("plotly_chart")}


def test_ladder_draws_one_chart_per_defence_with_a_line_per_rung(ladder_page):
    from pd_core.adaptive import RUNG_TITLES

    reports = ladder_page.session_state["adaptive_ladder"]["reports"]
    assert tuple(reports) == DEFENCES
    specs = _chart_specs(ladder_page)
    for name in DEFENCES:
        lines = [t for t in specs[f"ladder_{name}"]["data"] if t.get("mode") == "lines+markers"]
        report = reports[name]
        # one line per rung of this defence in each panel (single run, then the vote), each starting at the
        # clean accuracy; JPEG is deterministic with no exact gradient, no defence has an exact one
        rungs = {"pixel_deflection": ["transfer", "bpda", "bpda_eot", "exact_eot"], "jpeg": ["transfer", "bpda"],
                 "none": ["transfer", "bpda", "exact_eot"]}[name]
        assert report["rungs"] == rungs
        assert [t["name"] for t in lines] == 2 * [RUNG_TITLES[r] for r in rungs]
        for trace, panel in zip(lines, ["single"] * len(rungs) + ["ens2"] * len(rungs)):
            rung = next(r for r, title in RUNG_TITLES.items() if title == trace["name"])
            at4 = [a["accuracy"] for a in report["attacks"] if a["rung"] == rung and a["defence"] == panel]
            assert len(at4) == 2  # both losses ran; the line shows the stronger one
            assert _values(trace["y"]) == pytest.approx([100 * report["clean"][panel]["accuracy"], 100 * min(at4)])


def test_ladder_shows_the_checks_as_pass_or_warn_with_their_numbers(ladder_page):
    from pd_core.adaptive import CHECK_NAMES

    reports = ladder_page.session_state["adaptive_ladder"]["reports"]
    tables = [d.value for d in ladder_page.dataframe if "result" in getattr(d.value, "columns", [])]
    assert len(tables) == len(DEFENCES)
    for table, name in zip(tables, DEFENCES):
        checks = reports[name]["checks"]
        assert list(table["check"]) == [c.replace("_", " ") for c in CHECK_NAMES]
        assert list(table["result"]) == [c["status"] for c in checks]
        assert set(table["result"]) <= {"pass", "warn"}
        reaches = checks[0]["numbers"]
        assert f"correct = {reaches['correct']}" in table["numbers"][0] and "eps_255 = 32" in table["numbers"][0]
        assert all(len(why) > 20 for why in table["why it matters"])


def test_ladder_verdict_states_the_number_the_rows_give(ladder_page):
    report = ladder_page.session_state["adaptive_ladder"]["reports"]["pixel_deflection"]
    # independently of the report's own summary: the strongest attack at 4/255 on one defended run
    attacks = [a for a in report["attacks"] if a["eps_255"] == 4 and a["defence"] == "single"]
    worst = attacks[0]
    for a in attacks:
        worst = a if a["correct"] < worst["correct"] else worst
    kept = worst["correct"] / report["n"]
    looks = min(a["correct"] for a in attacks if a["rung"] == "transfer") / report["n"]
    headline = [m.value for m in ladder_page.markdown if m.value.startswith("#### Pixel deflection")]
    clean = report["clean"]["single"]["accuracy"]
    judgement = ("it gives no real protection against an attacker who knows it." if kept < 0.1 else
                 "it gives some protection, but most images can still be fooled by an attacker who knows it."
                 if kept < 0.5 * clean else
                 "it keeps most of its accuracy against every attack tried (check the warnings before trusting it).")
    assert headline == [f"#### Pixel deflection (the paper's defence) at 4/255 looks robust: {looks:.0%} (transfer), "
                        f"is robust: {kept:.0%} (worst rung: {worst['rung']}/{worst['loss']}); without attack "
                        f"{clean:.0%}: {judgement}"]
    caption = " ".join(c.value for c in ladder_page.caption)
    assert f"n = {report['n']} photos at 4/255" in caption
    warnings = " ".join(w.value for w in ladder_page.warning)
    assert f"Only {report['n']} photos were attacked" in warnings  # the honest caveat of a small n
    downloads = [d.proto.label for d in ladder_page.get("download_button")]
    assert sum("report of" in label for label in downloads) == len(DEFENCES)


def test_ladder_command_parses_and_gives_the_same_numbers(ladder_page, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from pd_core.cli import build_parser
    from tests.test_reproduce import _shell_words

    (block,) = [c.value for c in ladder_page.code if "--ladder" in c.value]
    lines = block.splitlines()
    assert len(lines) == len(DEFENCES)
    for line, name in zip(lines, DEFENCES):
        words = _shell_words(line)
        assert words[:3] == ["python", "-m", "pd_core"]
        args = build_parser().parse_args(words[3:])
        assert args.ladder and args.report and (ROOT / args.images).resolve() == SHARED_DEV.resolve()
        assert (args.limit, args.eps, args.steps, args.eot, args.ensemble, args.seed) == (2, "4", 1, 1, 2, 0)
        assert args.defence == (None if name == "pixel_deflection" else name) and args.baseline is None
    # the first command, run as shown except for where it writes, gives the page's numbers
    words = _shell_words(lines[0])
    words[words.index("--report") + 1] = str(tmp_path / "report.json")
    words[words.index("--out") + 1] = str(tmp_path / "ladder.csv")
    env = {**os.environ, "PD_THREADS": "1"}
    done = subprocess.run([sys.executable, *words[1:], "--no-progress"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    printed = json.loads((tmp_path / "report.json").read_text())
    shown = ladder_page.session_state["adaptive_ladder"]["reports"]["pixel_deflection"]
    key = ("rung", "loss", "eps_255", "defence", "correct", "n")
    assert [[a[k] for k in key] for a in printed["attacks"]] == [[a[k] for k in key] for a in shown["attacks"]]
    assert printed["verdict"] == shown["verdict"]


def test_old_adaptive_csv_reads_back_as_bpda(tmp_path):
    from pd_core.adaptive import ADAPTIVE_CSV_COLUMNS, read_adaptive_csv

    assert ADAPTIVE_CSV_COLUMNS.index("gradient") == ADAPTIVE_CSV_COLUMNS.index("loss") + 1
    old = tmp_path / "old.csv"
    old.write_text("eps_255,defence,n,correct,accuracy,ci_low,ci_high\n0,single,4,4,1,0.5,1\n4,single,4,1,0.25,0.05,0.7\n")
    assert [r["gradient"] for r in read_adaptive_csv(old)] == ["", "bpda"]
    new = tmp_path / "new.csv"
    new.write_text("eps_255,defence,n,correct,accuracy,ci_low,ci_high,gradient\n4,single,4,0,0,0,0.49,exact\n")
    assert read_adaptive_csv(new)[0]["gradient"] == "exact"
