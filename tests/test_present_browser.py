"""The Present page in a real browser (``streamlit run app.py`` + headless Chromium, Playwright).

Through all nine steps with the arrow keys (→ forward, ← back), then with the Next and Back
buttons: at every step no exception or error element, the step's title (the one of
:data:`ui.present_steps.STEPS`), its sentence and its pictures (loaded, not broken) are on the page;
on step 4 the before/after slider sweeps by itself when the step opens and then follows a mouse
drag (the clean photo's cut moves), and the arrow keys still change the step while the slider's
frame has the focus. The warm-up computes only the story's photo (``PD_PRESENT_WARM_UP=1``).
Saves a screenshot of each step to artifacts/present_step_N.png.
"""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from browser_helpers import ERROR_SELECTOR, ROOT, browser_available, chromium_page, streamlit_server, wait_until_idle

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not browser_available(), reason="needs Playwright and /usr/bin/chromium")]

# Pictures (st.image) each step shows; step 4's two are inside the slider's frame, step 8 draws a chart.
# The buttons shown (Streamlit keeps a hidden copy of a button that has a tooltip).
BACK, NEXT = ".st-key-present_back button:visible", ".st-key-present_next button:visible"
# True once the picture has loaded and is not broken (waits for it to finish loading).
LOADED = ("img => img.complete && img.naturalWidth > 0 ? true : new Promise(done => {"
          " img.addEventListener('load', () => done(img.naturalWidth > 0)); img.addEventListener('error', () => done(false)); })")
PICTURES = {1: 1, 2: 1, 3: 2, 4: 0, 5: 3, 6: 1, 7: 1, 8: 0, 9: 4}


def step_shown(page, number: int, timeout_ms: float = 60_000):
    block = page.locator(f".st-key-present_step_{number}")
    block.wait_for(state="visible", timeout=timeout_ms)
    return block


def check_step(page, number: int, sentences: dict) -> None:
    from ui.present_steps import STEPS

    block = step_shown(page, number)
    # Streamlit draws a rerun into the elements already on screen: wait for this step's own title.
    expect(block.locator(".pd-present-title")).to_have_text(STEPS[number - 1].title, timeout=30_000)
    wait_until_idle(page)
    assert page.locator(ERROR_SELECTOR).count() == 0, page.locator(ERROR_SELECTOR).all_inner_texts()
    sentence = block.locator(".pd-present-sentence").inner_text().strip()
    assert len(sentence) > 40 and sentence.endswith((".", ")")), sentence
    assert sentences.setdefault(number, sentence) == sentence  # the same words each time the step is shown
    images = block.locator('[data-testid="stImage"] img')
    # Streamlit leaves the previous step's elements on screen (stale) until the rerun has finished.
    expect(images).to_have_count(PICTURES[number], timeout=30_000)
    for i in range(images.count()):
        images.nth(i).wait_for(state="visible")
        assert images.nth(i).evaluate(LOADED), (number, i)
    if number == 4:
        frame = page.frame_locator(".st-key-present_step_4 iframe")
        for name in ("clean", "attacked"):
            frame.locator(f"#{name}").wait_for(state="visible")
            assert frame.locator(f"#{name}").evaluate(LOADED), name
    if number == 8:
        assert block.locator('[data-testid="stPlotlyChart"]').count() in (0, 1)


def cut(frame) -> float:
    """Where the clean photo is cut, in % of its width from the left (its clip-path's right inset)."""
    style = frame.locator("#clean").evaluate("img => img.style.clipPath")
    right = float(re.search(r"inset\(\S+ ([\d.]+)%", style).group(1))
    return 100.0 - right


def test_present_steps_with_the_arrow_keys_and_the_buttons(tmp_path):
    from ui.present_steps import STEPS

    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    n = len(STEPS)
    sentences: dict[int, str] = {}
    with streamlit_server(log_path=tmp_path / "streamlit.log", env={"PD_PRESENT_WARM_UP": "1"}) as (url, _, _), \
            chromium_page(width=1600, height=1000) as page:
        page.goto(f"{url}/present")
        step_shown(page, 1, timeout_ms=400_000)  # the story photo's run: from the warm-up, or computed now
        wait_until_idle(page)

        # The arrow keys, forward through every step, then back.
        for number in range(1, n + 1):
            check_step(page, number, sentences)
            page.screenshot(path=str(artifacts / f"present_step_{number}.png"))
            if number == 4:
                frame = page.frame_locator(".st-key-present_step_4 iframe")
                frame.locator("body").evaluate("() => new Promise(r => { const w = () => window.sweepDone ? r() : "
                                               "setTimeout(w, 50); w(); })")
                seen = frame.locator("body").evaluate("() => window.sweepPositions")
                # It swept by itself when the step opened: all the way to each side, then rests in the middle.
                assert len(seen) > 10 and min(seen) <= 5 and max(seen) >= 95, seen
                assert cut(frame) == pytest.approx(50.0, abs=0.5)
                box = frame.locator("#wrap").bounding_box()
                y = box["y"] + box["height"] / 2
                page.mouse.move(box["x"] + 0.5 * box["width"], y)
                page.mouse.down()
                page.mouse.move(box["x"] + 0.2 * box["width"], y, steps=8)
                assert cut(frame) == pytest.approx(20.0, abs=2.0)
                page.mouse.move(box["x"] + 0.85 * box["width"], y, steps=8)
                page.mouse.up()
                assert cut(frame) == pytest.approx(85.0, abs=2.0)  # it follows the mouse
            if number < n:
                page.keyboard.press("ArrowRight")  # on step 4 the slider's frame has the focus
        page.keyboard.press("ArrowRight")  # past the end: nothing happens
        page.wait_for_timeout(500)
        step_shown(page, n)
        for number in range(n - 1, 0, -1):
            page.keyboard.press("ArrowLeft")
            check_step(page, number, sentences)

        # The buttons, forward and back.
        assert page.locator(BACK).is_disabled()
        for number in range(2, n + 1):
            page.locator(NEXT).click()
            check_step(page, number, sentences)
        assert page.locator(NEXT).is_disabled()
        for number in range(n - 1, 0, -1):
            page.locator(BACK).click()
            check_step(page, number, sentences)
        assert len(set(sentences.values())) == n  # one idea per step
        assert page.get_by_role("button", name="Download handout").count() == 1
