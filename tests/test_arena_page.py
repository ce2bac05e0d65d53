"""The "Defence arena" page through Streamlit's AppTest (issue 20 item 4): a card per registry defence
with its prediction, each prediction equal to what ``pdlab classify --defence NAME`` says; the operator's
plugin appears; the leaderboard is drawn from its JSON when the file exists, and the page says plainly
that it has not been computed (with the command) when it does not, or that it cannot be read."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

os.environ["PD_WARM_UP"] = "0"  # no background warm-up thread in the test process

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
RUN = "Defend the photo with every defence"

PLUGIN = '''
import torch

title = "Half brightness (test plugin)"
randomised = False


def halve(x, *, generator):
    return x * 0.5
'''


def _page(monkeypatch, leaderboard: Path, plugins: str = ""):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("PD_LEADERBOARD_FILE", str(leaderboard))
    monkeypatch.setenv("PD_DEFENCE_PLUGINS", plugins)
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("pages/arena.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _clean(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _card_predictions(at) -> dict[str, str]:
    """title -> the badge line drawn right after the card's title."""
    values = [m.value for m in at.markdown]
    return {re.fullmatch(r"\*\*(.+)\*\*", v).group(1): values[i + 1] for i, v in enumerate(values[:-1])
            if re.fullmatch(r"\*\*(.+)\*\*", v) and "-badge[" in values[i + 1]}


@pytest.fixture
def plugin_file(tmp_path):
    from pd_core.defences import DEFENCES, unregister_defence

    path = tmp_path / "halve_plugin.py"
    path.write_text(PLUGIN)
    yield path
    if "halve" in DEFENCES:
        unregister_defence("halve")


def test_every_defence_has_a_card_with_the_command_lines_prediction(monkeypatch, tmp_path, plugin_file, capsys):
    from pd_core.arena import arena_defence_names
    from pd_core.cli import main
    from pd_core.defences import defence_info
    from pd_core.labels import label_name

    at = _page(monkeypatch, tmp_path / "no_leaderboard.json", plugins=f"{plugin_file}:halve")
    assert at.title[0].value == "Defence arena"
    assert not at.text_input, "a visitor must never be able to name code to load"
    [run] = [b for b in at.button if b.label == RUN]
    run.click().run()
    _clean(at)
    key, results, reference = at.session_state["arena_result"]
    names = arena_defence_names()
    assert "halve" in names and list(results) == names  # the operator's plugin is one of the cards
    cards = _card_predictions(at)
    photo = at.session_state["current_image"]
    for name in names:
        run_ = results[name]
        prediction = run_.predictions[0]
        assert label_name(prediction) in cards[defence_info(name).title]
        # The card's prediction is the command line's, with the seed shown.
        assert main(["classify", photo.path, "--defence", f"{plugin_file}:halve" if name == "halve" else name,
                     "--seed", "0", "--json"]) == 0
        record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert record["defended_top5"][0]["index"] == prediction, name
    times = [c.value for c in at.caption if "Defence time: " in c.value]
    assert len(times) == len(names) and all(re.search(r"Defence time: \d+(\.\d)? ms", t) for t in times)
    # What each defence did: nothing for no defence, exactly half for the plugin.
    import torch

    assert torch.equal(results["halve"].defended, results["none"].defended * 0.5)
    assert not torch.equal(results["pixel_deflection"].defended, results["none"].defended)
    assert reference == photo.label_index
    # No leaderboard file: said plainly, with the command that makes it, and no chart.
    info = " ".join(i.value for i in at.info)
    assert "has not been computed yet" in info
    assert any("pd_core leaderboard" in c.value for c in at.code)
    assert not [c for c in at.get("plotly_chart") if c.proto.id.endswith("arena_leaderboard")]


def test_the_leaderboard_is_read_from_its_file(monkeypatch, tmp_path):
    from pd_core.leaderboard import build_leaderboard, read_report

    report = ROOT / "docs" / "results" / "ladder_report.json"  # a real ladder report, made by the code
    board = build_leaderboard([(str(report), read_report(report))])
    path = tmp_path / "zoo_leaderboard.json"
    board.write_json(path)
    at = _page(monkeypatch, path)
    _clean(at)
    [chart] = [c for c in at.get("plotly_chart") if c.proto.id.endswith("arena_leaderboard")]
    spec = json.loads(chart.proto.spec)
    robust = {t["name"]: t["y"] for t in spec["data"]}
    assert robust["is robust: strongest attack, 4/255"] == [e.is_robust[4.0].accuracy for e in board.entries]
    text = " ".join(m.value for m in at.markdown)
    for entry in board.entries:
        assert board.sentence(entry) in text
    assert "first look" not in text  # 102 photos
    assert "has not been computed" not in " ".join(i.value for i in at.info)


def test_a_damaged_leaderboard_is_one_message_and_the_page_goes_on(monkeypatch, tmp_path):
    path = tmp_path / "zoo_leaderboard.json"
    path.write_text('{"schema": "something else"}')
    at = _page(monkeypatch, path)
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "cannot be read" in errors and "not a leaderboard" in errors
    assert [b for b in at.button if b.label == RUN]


def test_an_upload_is_judged_against_the_models_answer(monkeypatch, tmp_path):
    """A photo without a known class: the reference is the bare model's answer (computed through
    run_heavy), the same as the card of no defence."""
    from pd_core.images import gallery

    photo = next(g for g in gallery() if g.path.name.startswith("imagenet_"))
    at = _page(monkeypatch, tmp_path / "no_leaderboard.json")
    at.radio(key="image_source").set_value("Upload your own").run()
    at.file_uploader(key="uploader").set_value((photo.path.name, photo.path.read_bytes(), "image/jpeg")).run()
    [run] = [b for b in at.button if b.label == RUN]
    run.click().run()
    _clean(at)
    _, results, reference = at.session_state["arena_result"]
    assert at.session_state["current_image"].source == "upload"
    assert reference == results["none"].predictions[0]
    assert "the model's answer on the clean photo" in " ".join(c.value for c in at.caption)


def test_the_commands_that_make_the_leaderboard_parse():
    """The page's commands are real: each line parses with the real parsers, one ladder per built-in
    arena defence, and the leaderboard reads the folder the ladders write."""
    import shlex

    from pd_core.arena import arena_defence_names
    from pd_core.cli import build_parser
    from ui.arena import leaderboard_commands

    text = leaderboard_commands().replace("\\\n", " ")
    loop, ladder, _, board = [line.strip() for line in text.splitlines()]
    names = loop.removeprefix("for d in ").removesuffix("; do").split()
    assert names == arena_defence_names()
    for name in names:
        argv = shlex.split(ladder.replace("$d", name))[3:]
        args = build_parser("adaptive").parse_args(argv)
        assert args.ladder and args.defence == name and args.report == f"docs/results/zoo/{name}.json"
    args = build_parser("leaderboard").parse_args(shlex.split(board)[3:])
    assert args.results == ["docs/results/zoo"] and args.json == "docs/results/zoo_leaderboard.json"


def test_the_shown_leaderboard_command_remakes_the_committed_file(tmp_path):
    """The command under the arena's chart reads the same reports again and gives the same board."""
    from pd_core.cli import main
    from pd_core.leaderboard import load_leaderboard
    from ui.arena import LEADERBOARD_FILE, board_sources

    board = load_leaderboard(LEADERBOARD_FILE)
    sources = board_sources(board)
    assert "docs/results/ladder_report.json" in sources  # the pixel-deflection row is not in the zoo folder
    out = tmp_path / "board.json"
    assert main(["leaderboard", *[str(ROOT / s) for s in sources], "--json", str(out)]) == 0
    committed, remade = json.loads(LEADERBOARD_FILE.read_text()), json.loads(out.read_text())
    strip = lambda entries: [{k: v for k, v in e.items() if k != "report"} for e in entries]  # noqa: E731
    assert strip(remade["entries"]) == strip(committed["entries"])
