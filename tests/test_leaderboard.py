"""The leaderboard (issue 20 item 4) from real ladder reports: two tiny ladders run through the command
line in a temporary folder (pixel deflection, randomised, and JPEG, deterministic), then read back.

Oracles: every number equals the report it came from; the intervals equal SciPy's Wilson interval;
the worst rung and the transfer rung are recomputed here from the report's rows."""
import copy
import json

import pytest
from gallery_cases import labelled_folder
from scipy.stats import binomtest

from pd_core.cli import main
from pd_core.leaderboard import (Accuracy, LeaderboardError, build_leaderboard, entry_from_report, find_reports,
                                 leaderboard_figure, load_leaderboard, read_report)

EPS = ("2", "4")


@pytest.fixture(scope="module")
def reports(tmp_path_factory, model):
    """{kind: (path, report)} for a ladder on pixel deflection (the default) and on JPEG."""
    root = tmp_path_factory.mktemp("ladders")
    folder = labelled_folder(root)
    made = {}
    for kind, extra in (("pd", []), ("jpeg", ["--baseline", "jpeg75"])):
        path = root / "reports" / f"{kind}.json"
        code = main(["adaptive", "--images", str(folder), "--ladder", "--eps", ",".join(EPS), "--eot", "1",
                     "--steps", "1", "--ensemble", "2", "--tuning-fraction", "0", "--seed", "0", "--no-progress",
                     "--report", str(path), "--out", str(root / f"{kind}.csv"), *extra])
        assert code == 0
        made[kind] = (path, json.loads(path.read_text()))
    return made


def _pairs(reports, *kinds):
    return [(str(reports[k][0]), reports[k][1]) for k in kinds]


def _worst_from_rows(report, judge, rung=None):
    """The oracle: per ε, the lowest accuracy among the report's rows (of ``rung`` when given)."""
    out = {}
    for row in report["attacks"]:
        if row["defence"] == judge and (rung is None or row["rung"] == rung):
            out[row["eps_255"]] = min(out.get(row["eps_255"], 2.0), row["accuracy"])
    return out


def test_every_number_is_the_reports(reports):
    board = build_leaderboard(_pairs(reports, "pd", "jpeg"))
    assert board.eps_255 == (2.0, 4.0) and board.headline_eps_255 == 4.0
    by_kind = {"pd": board.entries[[e.source for e in board.entries].index(str(reports["pd"][0]))],
               "jpeg": board.entries[[e.source for e in board.entries].index(str(reports["jpeg"][0]))]}
    # Pixel deflection is randomised: judged by the Ens vote; JPEG is not: one defended run.
    assert by_kind["pd"].judge == "ens2" and by_kind["pd"].randomised is True
    assert by_kind["jpeg"].judge == "single" and by_kind["jpeg"].randomised is False
    for kind, entry in by_kind.items():
        report = reports[kind][1]
        assert entry.n == report["n"]
        clean = report["clean"][entry.judge]
        assert (entry.clean.correct, entry.clean.n) == (clean["correct"], clean["n"])
        assert entry.clean.interval == pytest.approx((clean["ci_low"], clean["ci_high"]))
        for row in report["robust"]:
            mine = entry.is_robust[row["eps_255"]]
            assert (mine.correct, mine.n) == (row[entry.judge]["correct"], row[entry.judge]["n"])
            assert mine.interval == pytest.approx((row[entry.judge]["ci_low"], row[entry.judge]["ci_high"]))
        assert {e: a.accuracy for e, a in entry.is_robust.items()} == _worst_from_rows(report, entry.judge)
        assert {e: a.accuracy for e, a in entry.looks_robust.items()} == _worst_from_rows(report, entry.judge,
                                                                                           "transfer")
        assert all(a.attack.startswith("transfer/") for a in entry.looks_robust.values())
        assert [c["name"] for c in entry.checks] == [c["name"] for c in report["checks"]]
        assert entry.checks_passed == sum(c["status"] == "pass" for c in report["checks"])
        # The ladder times one defended run per image; the board shows exactly that.
        assert entry.seconds_per_image == report["timings"]["defence_seconds_per_image"] > 0
        assert "With only 2 photos this is a first look" in board.sentence(entry)
    # Best first: by the worst-rung accuracy at the headline budget.
    robust = [e.is_robust[4.0].accuracy for e in board.entries]
    assert robust == sorted(robust, reverse=True)


@pytest.mark.parametrize("correct,n", [(0, 2), (1, 2), (2, 2), (5, 102), (84, 102), (0, 7)])
def test_intervals_are_wilson(correct, n):
    expected = binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert Accuracy(correct, n).interval == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_forced_judge_reads_the_other_column(reports):
    report = reports["pd"][1]
    single = entry_from_report(report, judge="single")
    assert single.judge == "single"
    assert single.clean.correct == report["clean"]["single"]["correct"]
    assert {e: a.accuracy for e, a in single.is_robust.items()} == _worst_from_rows(report, "single")


def test_missing_fields_are_said_not_invented(reports):
    report = copy.deepcopy(reports["jpeg"][1])
    report.pop("timings", None)
    del report["attacks"]
    entry = entry_from_report(report, "trimmed.json")
    assert entry.looks_robust == {} and entry.seconds_per_image is None
    assert {e: a.correct for e, a in entry.is_robust.items()} == {r["eps_255"]: r["single"]["correct"]
                                                                  for r in report["robust"]}
    assert any("transfer accuracy is unknown" in note for note in entry.notes)
    assert any("no timings" in note for note in entry.notes)
    board = build_leaderboard([("trimmed.json", report)])
    text = board.markdown()
    assert "no timings" in text and "—" in text
    # A report that records the defence's cost shows it.
    timed = copy.deepcopy(reports["jpeg"][1])
    timed["timings"] = {"defence_seconds_per_image": 0.0123}
    assert entry_from_report(timed).seconds_per_image == 0.0123
    assert "0.0123" in build_leaderboard([("t.json", timed)]).markdown()


def test_command_line_table_json_and_figure(reports, tmp_path, capsys):
    folder = reports["pd"][0].parent
    out, html = tmp_path / "board.json", tmp_path / "board.html"
    assert main(["leaderboard", str(folder), "--json", str(out), "--html", str(html)]) == 0
    printed = capsys.readouterr().out
    board = build_leaderboard(_pairs(reports, "pd", "jpeg"))
    for entry in board.entries:
        assert entry.title in printed and entry.is_robust[4.0].text() in printed
        assert board.sentence(entry) in printed
    loaded = load_leaderboard(out)
    assert loaded.as_dict() == board.as_dict()
    assert "plotly" in html.read_text()[:20000].lower()
    fig = leaderboard_figure(loaded)
    assert fig.to_dict() == loaded.figure().to_dict()  # the method the app's pages call
    robust_4 = next(t for t in fig.data if t.name.startswith("is robust") and "4/255" in t.name)
    assert list(robust_4.y) == [e.is_robust[4.0].accuracy for e in loaded.entries]
    low = [e.is_robust[4.0].accuracy - e.is_robust[4.0].interval[0] for e in loaded.entries]
    assert list(robust_4.error_y.arrayminus) == pytest.approx(low)


def _fails(capsys, *argv) -> str:
    assert main(["leaderboard", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_bad_inputs_are_one_sentence_and_exit_2(reports, tmp_path, capsys):
    pd_path, pd_report = reports["pd"]
    assert "no file or folder" in _fails(capsys, str(tmp_path / "missing.json"))
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    assert "not an adaptive-attack report" in _fails(capsys, str(tmp_path / "notes.json"))
    (tmp_path / "broken.json").write_text("{not json")
    assert "not a JSON file" in _fails(capsys, str(tmp_path / "broken.json"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no adaptive-attack report" in _fails(capsys, str(empty))
    # The same real report twice, and one restricted to fewer budgets or another model.
    twin = tmp_path / "twin.json"
    twin.write_text(json.dumps(pd_report))
    assert "Two reports judge" in _fails(capsys, str(pd_path), str(twin))
    fewer = copy.deepcopy(pd_report)
    fewer["eps_255"] = [2.0]
    fewer["attacks"] = [r for r in fewer["attacks"] if r["eps_255"] == 2.0]
    fewer["defence"]["name"] = "jpeg"
    (tmp_path / "fewer.json").write_text(json.dumps(fewer))
    assert "same command" in _fails(capsys, str(pd_path), str(tmp_path / "fewer.json"))
    other = copy.deepcopy(reports["jpeg"][1])
    other["model"]["name"] = "resnet50"
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert "one model" in _fails(capsys, str(pd_path), str(tmp_path / "other.json"))
    damaged = copy.deepcopy(pd_report)
    damaged["eps_255"] = 3  # not a list
    (tmp_path / "damaged.json").write_text(json.dumps(damaged))
    assert "is damaged" in _fails(capsys, str(tmp_path / "damaged.json"))
    assert "none of the leaderboard's" in _fails(capsys, str(pd_path), "--eps", "16")
    assert "--eps" in _fails(capsys, str(pd_path), "--eps", "two")
    assert "does not exist" in _fails(capsys, str(pd_path), "--json", str(tmp_path / "no" / "b.json"))


def test_a_wider_report_joins_on_the_shared_budgets_and_the_board_says_how_they_differ(reports):
    """The JPEG report cut down to its 2/255 rows, beside the full pixel deflection report: the board's
    columns are the budgets both evaluate, each number is still its own report's, and the notes name
    the budget left out. The cut report's ``settings.losses`` is then changed (its rows are not) so
    that the note on differing attack settings is exercised."""
    pd_path, pd_report = reports["pd"]
    narrow = copy.deepcopy(reports["jpeg"][1])
    narrow["eps_255"] = [2.0]
    narrow["attacks"] = [r for r in narrow["attacks"] if r["eps_255"] == 2.0]
    narrow["robust"] = [r for r in narrow["robust"] if r["eps_255"] == 2.0]
    narrow["settings"]["losses"] = ["margin"]
    board = build_leaderboard([(str(pd_path), pd_report), ("narrow.json", narrow)], eps_255=[2.0, 8.0])
    assert board.eps_255 == (2.0,)
    for entry in board.entries:
        report = pd_report if entry.source == str(pd_path) else narrow
        assert entry.is_robust[2.0].accuracy == _worst_from_rows(report, entry.judge)[2.0]
        assert entry.looks_robust[2.0].accuracy == _worst_from_rows(report, entry.judge, "transfer")[2.0]
    notes = " ".join(board.notes)
    assert f"{pd_path} also evaluates 4/255" in notes
    assert "differ in losses" in notes and "narrow.json margin" in notes and "ce/margin" in notes
    assert "no attack at 8/255" in notes
    # A report lacking a column's budget is still refused (2 and 4 asked, the cut report has only 2).
    with pytest.raises(LeaderboardError, match="same command"):
        build_leaderboard([(str(pd_path), pd_report), ("narrow.json", narrow)], eps_255=[2.0, 4.0])


def test_library_errors_are_leaderboard_errors(tmp_path):
    with pytest.raises(LeaderboardError):
        find_reports([tmp_path / "nothing"])
    with pytest.raises(LeaderboardError):
        read_report(tmp_path)
    with pytest.raises(LeaderboardError, match="not a leaderboard"):
        (tmp_path / "x.json").write_text("[]")
        load_leaderboard(tmp_path / "x.json")


def test_an_l2_report_reads_its_budgets_as_l2(reports):
    """The ladder's ``--norm l2`` reports its normalised L2 budgets in ``eps_255``: the board shows them as
    such, and by default every budget evaluated (L∞'s 2, 4, 8/255 mean nothing there)."""
    report = copy.deepcopy(reports["jpeg"][1])
    report["threat_model"] = "L2"
    board = build_leaderboard([("l2.json", report)])
    assert board.eps_255 == tuple(sorted(float(e) for e in report["eps_255"]))
    text = board.markdown()
    assert "Is robust L2 2" in text and "/255" not in text.split("\n")[0]
    with pytest.raises(LeaderboardError, match="one threat model"):
        build_leaderboard([("l2.json", report), ("linf.json", reports["pd"][1])])


@pytest.mark.parametrize("transfer_correct, says", [(40, "looks robust against an attack made without knowing it (39%"),
                                                    (0, "is not even robust against an attack made without knowing "
                                                        "it (0%")])
def test_the_sentence_says_looks_robust_only_when_the_transfer_attack_leaves_something(transfer_correct, says):
    from pd_core.leaderboard.board import Entry

    entry = Entry(defence="d", title="D", source="d.json", n=102, judge="single", randomised=False,
                  clean=Accuracy(100, 102), looks_robust={4.0: Accuracy(transfer_correct, 102)},
                  is_robust={4.0: Accuracy(0, 102)})
    sentence = entry.sentence(4.0)
    assert says in sentence and sentence.endswith("it gives no real protection.")


def test_the_undefended_row_is_called_the_reference_not_a_defence_without_protection():
    from pd_core.leaderboard.board import Entry

    entry = Entry(defence="none", title="No defence", source="none.json", n=102, judge="single", randomised=False,
                  clean=Accuracy(102, 102), looks_robust={4.0: Accuracy(1, 102)}, is_robust={4.0: Accuracy(1, 102)})
    sentence = entry.sentence(4.0)
    assert sentence.startswith("With no defence at all the model classifies 100% of the photos correctly")
    assert "an attack at 4/255 leaves 1% (95% interval 0%–5%, 102 photos)" in sentence
    assert sentence.endswith("the reference every defence is measured against.")
    assert "protection" not in sentence
