"""Responsiveness of the real app (issue 4): ``streamlit run app.py`` driven by headless Chromium.

Measures, on this machine's CPU with EfficientNet-Lite0:

* start -> first page rendered: from launching ``streamlit run`` to the Home page's title and the
  sidebar drawn in the browser (Chromium is launched before the server, so its start-up is not
  counted). Target <= 10 s.
* first impression (issue 15): from the browser connecting (navigation start) to Home's content
  (title and first paragraph), to its "try it" button and to the real menu, for the first visitor
  of a fresh server and for a later visitor (a new tab after the clicks). Target <= 3 s. A probe
  installed before the first byte watches the DOM (:func:`browser_helpers.first_impression`); a
  file-name menu entry ("app", "about", ...) seen at any time is reported as a failure.
* click -> story shown: from clicking **Run** on Attack & Defend (the default gallery photo, FGSM,
  the defence and Ens-10) to the four result columns, the maps and the heatmaps drawn, with the
  page idle again. Targets (issue 21): the first click on a fresh server <= 3 s, the median of the
  next ``--repeats`` clicks <= 2 s, checked twice: to the four result cards drawn (with their charts:
  the issue's own measure, "click -> the four cards"), and, stricter, to the whole story shown. The first click and the median of the next clicks
  (with the seed changed each time, so nothing can be reused) are reported. Each click is also
  broken down from the browser's side (:class:`BrowserProbe`): when the server's first and last
  messages arrived, and how long the browser's main thread was busy, which on this machine is CPU
  the computation does not get (server and browser share the two cores).

The baseline is measured in the same run: the same pd_core work done directly in this process
(``attack_and_defend`` plus building the figures), warm, median of the same number of repeats,
and the cold cost of importing and loading the model. Ratios app/direct say how much the web layer
(Streamlit, serialisation, the browser drawing Plotly) adds on top of the computation.

    PD_THREADS=2 python bench/bench_app.py [--repeats 3]

The machine's load average is printed: on a shared machine absolute times move with it, the
ratios much less.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pd_core.runtime import wait_passively  # noqa: E402

wait_passively()  # the direct baseline runs torch as the app does (pd_core.runtime says why)

from browser_helpers import (ERROR_SELECTOR, FILE_NAME_ENTRIES, MENU_LINKS, chromium_page,  # noqa: E402
                             first_impression, go_to_page, install_first_impression_probe, streamlit_server,
                             wait_for_title, wait_until_idle)

STORY_IMAGE = "imagenet_04_949"


def direct_baseline(repeats: int) -> dict:
    """The app's computation without the app: load, then attack_and_defend + figures, warm."""
    t0 = time.perf_counter()
    import torch

    from pd_core.story import attack_and_defend
    from pd_core.images import gallery_image, load_image
    from pd_core.models import load_model
    from pd_core.runtime import configure_from_env

    configure_from_env()
    model = load_model("efficientnet_lite0", device="cpu")
    import foolbox  # noqa: F401

    from ui.components import build_figures  # plain Plotly building (pd_core.visuals), no Streamlit calls
    entry = gallery_image(STORY_IMAGE)
    x = load_image(entry.path, spec=model.spec, device=model.device)
    cold = time.perf_counter() - t0

    def story(seed: int) -> tuple[float, float]:
        t = time.perf_counter()
        result = attack_and_defend(model, x, entry.label_index, attack="fgsm", preset="paper", seed=seed)
        compute = time.perf_counter() - t
        build_figures(result)
        return compute, time.perf_counter() - t

    first = story(0)
    warm = [story(seed) for seed in range(1, repeats + 1)]
    return {"cold_load": cold, "first_story": first[1], "compute": statistics.median(w[0] for w in warm),
            "story": statistics.median(w[1] for w in warm), "threads": torch.get_num_threads()}


class BrowserProbe:
    """What the browser does during a click, from Chromium's own counters (DevTools protocol):
    the arrival time of every WebSocket message from the server, and how long the page's main
    thread was busy (``Performance.getMetrics``: TaskDuration, and ScriptDuration, its JavaScript
    share). The browser runs on the same cores as the server here, so its busy time is CPU taken
    from the computation."""

    def __init__(self, page):
        self.frames: list[float] = []
        page.on("websocket", lambda ws: ws.on("framereceived", lambda _: self.frames.append(time.perf_counter())))
        self._cdp = page.context.new_cdp_session(page)
        self._cdp.send("Performance.enable")

    def busy(self) -> tuple[float, float]:
        metrics = {m["name"]: m["value"] for m in self._cdp.send("Performance.getMetrics")["metrics"]}
        return metrics["TaskDuration"], metrics["ScriptDuration"]


def click_run(page, seed: int, probe: BrowserProbe | None = None) -> dict:
    """One click on Run; seconds from the click to: the result's caption shown (the script has
    computed and sent the cards), the four cards drawn (their charts too: issue 21's measure), the
    script finished (idle), every chart drawn ("shown"), and the computation's own time as the page
    states it ("computed in X s"). With a ``probe``: the first and the last message from the server
    (the script's start; the end of the transfer) and the browser's main-thread busy time, all of
    it and its JavaScript share, over the click."""
    page.wait_for_timeout(300)
    if probe is not None:
        probe.frames.clear()
        busy_before = probe.busy()
    t = time.perf_counter()
    page.get_by_role("button", name="Run", exact=True).click()
    # Shown = this seed's result is on the page, the script finished and every chart is drawn.
    caption = page.get_by_text(f"seed {seed}; computed in")
    caption.wait_for(state="visible", timeout=300_000)
    cards = time.perf_counter() - t
    page.locator(".st-key-ad_result_cards .js-plotly-plot").nth(3).wait_for(state="visible", timeout=60_000)
    cards_drawn = time.perf_counter() - t
    wait_until_idle(page, timeout_ms=300_000)
    idle = time.perf_counter() - t
    page.locator(".st-key-ad_heatmaps .js-plotly-plot").nth(2).wait_for(state="visible", timeout=60_000)
    elapsed = time.perf_counter() - t
    errors = page.locator(ERROR_SELECTOR)
    if errors.count():
        raise RuntimeError(f"the app showed an error: {errors.all_inner_texts()}")
    stated = re.search(r"computed in ([0-9.]+) s", caption.inner_text())
    parts = {"shown": elapsed, "cards": cards, "cards_drawn": cards_drawn, "idle": idle,
             "compute": float(stated.group(1)) if stated else None}
    if probe is not None:
        busy_after = probe.busy()
        frames = [f - t for f in probe.frames if f >= t]
        parts.update(first_message=frames[0] if frames else None, last_message=frames[-1] if frames else None,
                     browser_busy=busy_after[0] - busy_before[0], browser_js=busy_after[1] - busy_before[1])
    return parts


def visit_home(page, url: str) -> dict:
    """Open Home in ``page`` with the first-impression probe; its record (ms since navigation start)."""
    install_first_impression_probe(page)
    page.goto(url)
    wait_for_title(page, "Pixel Deflection Lab", timeout_ms=120_000)
    page.get_by_role("button", name="Attack and defend a sample photo").wait_for(timeout=120_000)
    page.locator(MENU_LINKS).first.wait_for(timeout=120_000)
    record = first_impression(page)
    record["file_names_seen"] = [t for t, _ in record["entries"] if t in FILE_NAME_ENTRIES]
    return record


def app_timings(repeats: int, log: Path, present_warm_up: bool = True) -> dict:
    with chromium_page() as page:  # the browser is up before the server starts
        with streamlit_server(log_path=log, env={"PD_THREADS": os.environ.get("PD_THREADS", "2"),
                                                        "PD_PRESENT_WARM_UP": "1" if present_warm_up else "0"}) as (url, t0, healthy):
            probe = BrowserProbe(page)
            first_visit = visit_home(page, url)
            page.locator('[data-testid="stSidebar"]').get_by_text("Computing on:").wait_for(timeout=120_000)
            first_page = time.perf_counter() - t0
            wait_until_idle(page)
            go_to_page(page, "Attack & Defend")
            wait_until_idle(page)
            first_click = click_run(page, 0, probe)  # the default story: the warm-up may have computed it
            clicks = []
            for seed in range(1, repeats + 1):
                box = page.locator('[data-testid="stSidebar"] input[type="number"]').first
                box.fill(str(seed))
                box.press("Enter")
                wait_until_idle(page)
                clicks.append(click_run(page, seed, probe))
            later = page.context.browser.new_context(viewport={"width": 1500, "height": 1000})
            later_visit = visit_home(later.new_page(), url)  # a new visitor: its own session and cookies
            later.close()
            return {"server_healthy": healthy - t0, "first_page": first_page, "first_click": first_click["shown"],
                    "click": statistics.median(c["shown"] for c in clicks), "clicks": clicks,
                    "first_click_parts": first_click, "first_visit": first_visit, "later_visit": later_visit}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--log", default=str(ROOT / "artifacts" / "bench_app_streamlit.log"))
    parser.add_argument("--no-present-warm-up", action="store_true",
                        help="start the server without the Present page's background gallery runs (they hold the "
                             "device between clicks until every gallery photo is done), to time the story alone")
    args = parser.parse_args()
    os.environ.setdefault("PD_THREADS", "2")
    Path(args.log).parent.mkdir(exist_ok=True)

    load_before = os.getloadavg()[0]
    app = app_timings(args.repeats, Path(args.log), present_warm_up=not args.no_present_warm_up)
    direct = direct_baseline(args.repeats)
    load_after = os.getloadavg()[0]

    print(f"bench_app: EfficientNet-Lite0 on CPU, PD_THREADS={os.environ['PD_THREADS']}, {os.cpu_count()} cores, "
          f"load average {load_before:.1f} -> {load_after:.1f}; repeats {args.repeats}; Present warm-up "
          f"{'off' if args.no_present_warm_up else 'on'}")
    rows = [
        ("start -> first page rendered", app["first_page"], direct["cold_load"], 10.0,
         "direct: import + load model + foolbox"),
        ("  (server answering /_stcore/health)", app["server_healthy"], None, None, ""),
        ("first click -> four cards drawn", app["first_click_parts"]["cards_drawn"], None, 3.0,
         "issue 21's measure: the four result cards with their charts"),
        ("click -> four cards drawn (median)", statistics.median(c["cards_drawn"] for c in app["clicks"]), None, 2.0,
         ""),
        ("first click -> story shown", app["first_click"], direct["first_story"], 3.0,
         "direct: first attack_and_defend + figures"),
        ("click -> story shown (median)", app["click"], direct["story"], 2.0,  # issue 21: <= 2 s warm
         "direct: attack_and_defend + figures (warm median)"),
        ("  of which pd_core compute (direct)", None, direct["compute"], None, "attack_and_defend only"),
    ]
    print(f"{'metric':40s} {'app s':>8s} {'direct s':>9s} {'app/direct':>10s} {'target':>8s}  verdict")
    for name, a, d, target, note in rows:
        ratio = f"{a / d:10.2f}" if a is not None and d else f"{'':10s}"
        verdict = "" if target is None or a is None else ("PASS" if a <= target else "FAIL")
        print(f"{name:40s} {'' if a is None else f'{a:8.2f}':>8s} {'' if d is None else f'{d:9.2f}':>9s} {ratio} "
              f"{'' if target is None else f'{target:8.1f}':>8s}  {verdict}  {note}")
    shown = ", ".join(f"{c['shown']:.2f}" for c in app["clicks"])
    print(f"individual clicks (s): {shown}")
    print("where a click's time goes (s from the click): first message from the server (the script starts) | "
          "stated compute | last message (transfer done) | caption shown | four cards drawn | script done | "
          "all charts drawn || the browser's main thread busy during the click (of which JavaScript)")
    named = [("first click", app["first_click_parts"]), *((f"click {i + 1}", c) for i, c in enumerate(app["clicks"]))]
    for name, c in named:
        stated = "?" if c["compute"] is None else f"{c['compute']:.1f}"
        first, last = (("?" if c.get(k) is None else f"{c[k]:.2f}") for k in ("first_message", "last_message"))
        print(f"  {name:12s} {first:>6s} | {stated:>5s} | {last:>6s} | {c['cards']:6.2f} | {c['cards_drawn']:6.2f} | "
              f"{c['idle']:6.2f} | {c['shown']:6.2f} || {c.get('browser_busy', 0):5.2f} "
              f"({c.get('browser_js', 0):4.2f})")
    print("first impression, seconds from the browser connecting (target <= 3 s):")
    print(f"  {'visitor':28s} {'Home title':>10s} {'Home text':>10s} {'Home button':>11s} {'real menu':>10s}  "
          "file-name menu seen")
    for name, key in (("first visitor, fresh server", "first_visit"), ("later visitor (new tab)", "later_visit")):
        r = app[key]
        times = [r["home_title_ms"], r["home_content_ms"], r["home_button_ms"], r["menu_ms"]]
        shown = [f"{t / 1000:.2f}" if t is not None else "never" for t in times]
        verdict = "PASS" if all(t is not None and t <= 3000 for t in (r["home_content_ms"], r["menu_ms"])) else "FAIL"
        seen = ", ".join(r["file_names_seen"]) or "none"
        print(f"  {name:28s} {shown[0]:>10s} {shown[1]:>10s} {shown[2]:>11s} {shown[3]:>10s}  {seen}  {verdict}"
              + ("" if not r["file_names_seen"] else "  (FAIL: file names shown)"))
    from present_timing import report as present_steps_report  # each step of the Present page, after warm-up

    present_steps_report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
