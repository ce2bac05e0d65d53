"""The Benchmark page's "local Ray cluster" option (issue 12 item 5), through Streamlit's AppTest.

AppTest cannot run Ray inside a loopback namespace, so the engine entry point the page calls
(:func:`pd_core.evaluation.distributed.evaluate_distributed`) is replaced by a fake that emits
progress snapshots (with a failed and retried unit) and computes the rows with the single-process
engine; the test checks what the page shows of the snapshots.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")


@pytest.fixture()
def fake_engine(monkeypatch):
    from pd_core import evaluation as ev
    from pd_core.evaluation import distributed
    from pd_core.evaluation.dispatch import ProgressSnapshot
    from pd_core.models import load_model

    calls = []

    def fake(model_name, images, settings, *, store, cluster, on_progress, out_csv, labels=None):
        calls.append({"model": model_name, "ray": cluster.ray, "threads": cluster.threads, "store": store,
                      "attacks": list(settings.attacks)})
        on_progress(ProgressSnapshot(6, 0, 0, 2, 0, 0, 3, 0.0, 0.0, float("nan"), "started"))
        on_progress(ProgressSnapshot(6, 2, 0, 3, 1, 1, 3, 20.0, 0.1, 40.0, "FGSM chunk 0"))
        on_progress(ProgressSnapshot(6, 6, 0, 0, 1, 1, 3, 50.0, 0.12, 0.0, "finished"))
        return ev.evaluate(load_model(model_name, device="cpu"), images, replace(settings, batch_size=2),
                           out_csv=out_csv)

    monkeypatch.setattr(distributed, "evaluate_distributed", fake)
    return calls


def test_ray_option_shows_the_engines_progress(fake_engine):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("pages/benchmark.py").run()
    [option] = [c for c in at.checkbox if c.label == "Run on a local Ray cluster with N workers"]
    assert "`ray`" in " ".join(c.value for c in at.caption)
    option.check().run()
    at.session_state["bench_attacks"] = ["fgsm"]
    at.session_state["bench_limit"] = 1
    at.session_state["bench_ensemble"] = 2
    at.session_state["bench_tuning"] = 0.0
    at.session_state["bench_ray_workers"] = 3
    [run] = [b for b in at.button if b.label == "Run the benchmark"]
    run.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    [call] = fake_engine
    assert call["ray"] == "local:3" and call["threads"] == 1 and call["attacks"] == ["fgsm"]
    assert str(call["store"]).endswith("_ray.shards")
    shown = " ".join(c.value for c in at.caption if "Ray cluster:" in c.value)
    assert "6/6 units done, 0 left" in shown and "1 failed, 1 retried" in shown and "3 workers" in shown
    assert "7.2 units/min" in shown
    assert list(at.dataframe[0].value["attack"]) == ["Clean", "FGSM"]


def test_progress_text_of_a_snapshot():
    from pd_core.evaluation.dispatch import ProgressSnapshot
    from ui.benchmark import ray_progress_text

    text = ray_progress_text(ProgressSnapshot(10, 4, 1, 2, 2, 1, 2, 30.0, 0.1, 120.0))
    assert text.startswith("4/10 units done, 6 left (1 resumed)")
    assert "2 workers" in text and "6.0 units/min" in text and "about 2 min left" in text
    assert text.endswith("2 failed, 1 retried")
