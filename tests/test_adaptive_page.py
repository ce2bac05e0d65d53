"""The "Adaptive attack" page through Streamlit's AppTest (no browser), kept short: 2 steps, 1 EOT run.

Sidebar settings are changed through ``at.session_state`` (see the AppTest quirk in tests/test_app.py).
"""
from __future__ import annotations

from pathlib import Path

import pytest

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
