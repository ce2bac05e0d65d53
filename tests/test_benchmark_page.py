"""The Benchmark page through Streamlit's AppTest (no browser): folder choice limited to the data
root, a small run (3 sample photos, FGSM, a 2-copy vote) and the table beside the paper's numbers."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A data root with one labelled folder (2 gallery photos) and one folder without images."""
    from pd_core.images import gallery

    root = tmp_path_factory.mktemp("data")
    (root / "photos").mkdir()
    (root / "empty").mkdir()
    rows = ["file,class_index"]
    for g in [g for g in gallery() if g.source == "Foolbox"][:2]:
        shutil.copy(g.path, root / "photos" / g.path.name)
        rows.append(f"{g.path.name},{g.label_index}")
    (root / "photos" / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def page(data_root):
    from streamlit.testing.v1 import AppTest

    mp = pytest.MonkeyPatch()
    mp.setenv("PD_IMAGE_ROOT", str(data_root))
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("pages/benchmark.py").run()
    yield at
    mp.undo()


def _clean(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_folders_come_only_from_the_data_root(page):
    _clean(page)
    assert page.title[0].value == "Benchmark"
    [photos] = [s for s in page.selectbox if s.label == "Photos"]
    assert photos.options == ["Sample photos (installed with the app)", "photos"]
    assert not page.text_input  # no path can be typed


def test_small_run_shows_the_table_beside_the_papers(page):
    page.session_state["bench_attacks"] = ["fgsm"]
    page.session_state["bench_limit"] = 3
    page.session_state["bench_ensemble"] = 2
    page.session_state["bench_tuning"] = 0.0
    [run] = [b for b in page.button if b.label == "Run the benchmark"]
    run.click().run()
    _clean(page)
    table = page.dataframe[0].value
    assert list(table["attack"]) == ["Clean", "FGSM"]
    assert table.loc[table["attack"] == "FGSM", "paper Ens-2"].item() == pytest.approx(81.5)
    assert table.loc[table["attack"] == "Clean", "No defence"].item().startswith("100.0")
    counted = " ".join(m.value for m in page.markdown)
    assert "photos counted" in counted
    charts = " ".join(c.proto.id for c in page.get("plotly_chart"))
    assert "bench_bars" in charts


def test_table_bars_carry_the_wilson_interval_and_the_papers_number():
    """The bars the page draws come from the table itself: each error bar reaches the interval's
    ends, a row without images draws no bar, and the paper's number is its own marker."""
    import pandas as pd

    from pd_core.evaluation import CSV_COLUMNS, table_frame, wilson_interval
    from pd_core.evaluation.table_figures import table_bars_figure, table_defence_columns

    records = []
    for attack, preset, fooled in (("clean", "none", 0), ("fgsm", "paper", 7)):
        for defence, wrong in (("none", fooled), ("single", fooled // 2)):
            for k in range(10):
                right = k >= wrong
                records.append({"image": f"i{k}", "label": 1, "attack": attack, "preset": preset, "defence": defence,
                                "prediction": 1 if right else 2, "correct": int(right),
                                "norm_l2": 0.0 if attack == "clean" else 0.05})
    rows = pd.DataFrame(records)
    for column in CSV_COLUMNS:
        if column not in rows:
            rows[column] = 0.0
    frame = table_frame(rows, 1, "paper", 10)
    columns = table_defence_columns(frame)
    assert columns[:2] == ["No defence", "Single"], columns
    fig = table_bars_figure(frame)
    bar = next(t for t in fig.data if t.type == "bar" and t.name == "No defence")
    fgsm = list(frame["attack"]).index("FGSM")
    low, high = wilson_interval(3, 10)
    assert bar.y[fgsm] == pytest.approx(30.0)
    assert bar.y[fgsm] + bar.error_y.array[fgsm] == pytest.approx(round(100 * high, 1), abs=0.06)
    assert bar.y[fgsm] - bar.error_y.arrayminus[fgsm] == pytest.approx(round(100 * low, 1), abs=0.06)
    paper = next(t for t in fig.data if t.name == "paper No defence")
    assert paper.mode == "markers" and paper.y[fgsm] == frame["paper No defence"].iloc[fgsm]
