"""The Benchmark page's "Accuracy against perturbation size" section through Streamlit's AppTest:
an uploaded sweep results file (a small hand-made CSV) is drawn as one curve figure per
(attack, preset), with the paper's points; a file that is not a results file gives one error line."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io
import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")


def _sweep_csv() -> bytes:
    """Two images: clean rows, and FGSM 'paper' at 2/255 and 4/255 (no defence, single, Ens-10)."""
    from pd_core.evaluation import CSV_COLUMNS

    rows = []
    for image in ("a.png", "b.png"):
        for d in ("none", "single", "ens10"):
            rows.append({"image": image, "label": 1, "attack": "clean", "preset": "none", "defence": d,
                         "prediction": 1, "correct": 1, "norm_l2": 0, "norm_l2_model": 0, "rmse": 0})
        for k, wrong in ((2, image == "a.png"), (4, True)):
            for d in ("none", "single", "ens10"):
                correct = 0 if (d == "none" or wrong) else 1
                rows.append({"image": image, "label": 1, "attack": "fgsm", "preset": f"paper@eps={k}/255",
                             "defence": d, "prediction": 1 if correct else 2, "correct": correct,
                             "norm_l2": 0.0085 * k, "norm_l2_model": 0.018 * k, "rmse": k / 255,
                             "attack_success": 1})
    frame = pd.DataFrame(rows).reindex(columns=list(CSV_COLUMNS))
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    return buf.getvalue().encode()


def _array(value) -> list[float]:
    """A trace's numbers, whether Plotly sent them as a list or as base64 (``{"dtype", "bdata"}``)."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return list(value)


@pytest.fixture(scope="module")
def page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("pages/benchmark.py").run()
    return at


def _choose_upload(at):
    [source] = [s for s in at.selectbox if s.label == "Sweep results"]
    source.set_value("Upload a sweep results file").run()
    [upload] = [u for u in at.get("file_uploader") if u.label == "Sweep results (CSV)"]
    return upload


def test_uploaded_sweep_is_drawn_with_bands_and_paper_points(page):
    _choose_upload(page).set_value(("sweep.csv", _sweep_csv(), "text/csv"))
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    assert not page.error, [e.value for e in page.error]
    assert "Accuracy against perturbation size" in [h.value for h in page.subheader]
    charts = {c.proto.id.split("bench_sweep_")[-1]: plotly.io.from_json(c.proto.spec)
              for c in page.get("plotly_chart") if "bench_sweep_" in c.proto.id}
    assert list(charts) == ["fgsm_paper"]
    names = [t.name for t in charts["fgsm_paper"].data]
    assert "Ens-10" in names and "No defence 95% interval" in names and "paper, |L2| as rmse" in names
    ens = next(t for t in charts["fgsm_paper"].data if t.name == "Ens-10")
    assert _array(ens.y) == pytest.approx([100.0, 50.0, 0.0])  # clean, 2/255 (b right), 4/255
    assert _array(ens.x) == pytest.approx([0.0, 0.017, 0.034])
    captions = " ".join(c.value for c in page.caption)
    assert "up to 2 photos per point" in captions and "norm_l2_model (squares)" in captions


def test_a_file_that_is_not_a_results_file_is_one_error(page):
    _choose_upload(page).set_value(("other.csv", b"x,y\n1,2\n", "text/csv"))
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    assert len(page.error) == 1 and "could not be read as sweep results" in page.error[0].value
