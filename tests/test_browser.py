"""The real app in a real browser: ``streamlit run app.py`` driven by headless Chromium (Playwright).

Home -> Attack & Defend -> Run with the defaults -> the four result columns (each with its top-5
chart), the maps and the three perturbation heatmaps are on the page, and no error element is.
Saves a full-page screenshot to artifacts/attack_defend.png.
"""
from __future__ import annotations

import pytest

from browser_helpers import (ERROR_SELECTOR, ROOT, browser_available, chromium_page, full_screenshot, go_to_page,
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
