"""The real app in a real browser: ``streamlit run app.py`` driven by headless Chromium (Playwright).

First impression (issue 15, item 4): on a freshly started server, from the very first DOM until
Home's content is on screen, no menu entry is a file name of ``pages/`` (Streamlit's old-style
menu), Streamlit's own navigation never appears, and the real menu lists the pages by title.

Home -> Attack & Defend -> Run with the defaults -> the four result columns (each with its top-5
chart), the maps and the three perturbation heatmaps are on the page, and no error element is.
Saves a full-page screenshot to artifacts/attack_defend.png.
"""
from __future__ import annotations

import pytest

from browser_helpers import (ERROR_SELECTOR, FILE_NAME_ENTRIES, MENU_LINKS, ROOT, browser_available, chromium_page,
                             first_impression, full_screenshot, go_to_page, install_first_impression_probe,
                             streamlit_server, wait_for_title, wait_until_idle)

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not browser_available(), reason="needs Playwright and /usr/bin/chromium")]


def test_home_to_attack_and_defend_in_chromium(tmp_path):
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    with streamlit_server(log_path=tmp_path / "streamlit.log") as (url, _, _), chromium_page() as page:
        page.goto(url)
        wait_for_title(page, "Pixel Deflection Lab", timeout_ms=90_000)
        # The shared sidebar: the model picker and the device in use.
        sidebar = page.locator('[data-testid="stSidebar"]')
        sidebar.get_by_text("Computing on:").wait_for(state="visible", timeout=60_000)
        wait_until_idle(page)
        sidebar.get_by_text("Classifier").first.wait_for(state="visible", timeout=30_000)
        assert sidebar.get_by_text("Computing on:").count() == 1

        go_to_page(page, "Attack & Defend")
        wait_until_idle(page)
        # Before any Run the browser has already loaded and run its Plotly code (a hidden empty chart,
        # ui.components.preload_chart_code), so the first result's charts draw at once.
        preload = page.locator(".st-key-pd_chart_code_preload .js-plotly-plot")
        preload.wait_for(state="attached", timeout=60_000)
        assert not preload.is_visible()
        page.get_by_role("button", name="Run", exact=True).click()
        cards = page.locator(".st-key-ad_result_cards")
        cards.wait_for(state="visible", timeout=180_000)
        wait_until_idle(page, timeout_ms=180_000)

        columns = cards.locator('[data-testid="stColumn"]')
        assert columns.count() == 4
        for i in range(4):
            assert columns.nth(i).locator('[data-testid="stPlotlyChart"]').count() == 1
            assert columns.nth(i).locator('[data-testid="stImage"]').count() == 1
        page.locator(".st-key-ad_heatmaps .js-plotly-plot").nth(2).wait_for(state="visible", timeout=60_000)
        assert page.locator('.st-key-ad_heatmaps [data-testid="stPlotlyChart"]').count() == 3
        assert page.locator('.st-key-ad_maps [data-testid="stPlotlyChart"]').count() == 4
        assert page.get_by_text("Fooled", exact=True).count() >= 1
        assert page.locator(ERROR_SELECTOR).count() == 0, page.locator(ERROR_SELECTOR).all_inner_texts()
        full_screenshot(page, artifacts / "attack_defend.png")
        page.set_viewport_size({"width": 1500, "height": 1000})

        # Results survive a visit to another page; the sidebar is there too.
        go_to_page(page, "About the method")
        sidebar.get_by_text("Computing on:").wait_for(state="visible", timeout=60_000)
        go_to_page(page, "Attack & Defend")
        page.locator(".st-key-ad_result_cards").wait_for(state="visible", timeout=60_000)
        assert page.locator(ERROR_SELECTOR).count() == 0


def test_first_page_never_shows_the_file_name_menu(tmp_path):
    source = (ROOT / "app.py").read_text()
    titles = [title for file, title, _, _ in _pages_of(source) if (ROOT / file).is_file()]
    # A fresh server: its first session is the one Streamlit runs through the pages/ folder logic.
    with streamlit_server(log_path=tmp_path / "streamlit.log", env={"PD_WARM_UP": "0"}) as (url, _, _), \
            chromium_page() as page:
        install_first_impression_probe(page)
        page.goto(url)
        wait_for_title(page, "Pixel Deflection Lab", timeout_ms=90_000)
        page.get_by_role("button", name="Attack and defend a sample photo").wait_for(timeout=90_000)
        page.locator(MENU_LINKS).nth(len(titles) - 1).wait_for(timeout=60_000)
        page.wait_for_function(f"() => window.__firstImpression.menu.length >= {len(titles)}", timeout=10_000)
        record = first_impression(page)
    assert record["checks"] > 10  # the DOM was watched from its first state on
    shown = [text for text, _ in record["entries"]]
    assert not [t for t in shown if t in FILE_NAME_ENTRIES], shown
    assert record["streamlit_nav_ms"] is None  # Streamlit's own (file-name) navigation never appeared
    # The menu may be painted a few links at a time, but every state it shows is the start of the
    # titled menu, in order, and it ends complete.
    assert record["menu_states"], record
    assert all(state == titles[:len(state)] for state in record["menu_states"]), record["menu_states"]
    assert record["menu"] == titles and set(shown) >= set(titles)
    assert record["home_title_ms"] is not None and record["home_content_ms"] is not None
    assert record["menu_ms"] is not None


def _pages_of(source: str) -> list[tuple]:
    """The PAGES list of app.py, read without running it (it needs a Streamlit server)."""
    import ast

    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PAGES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("app.py has no PAGES list")
