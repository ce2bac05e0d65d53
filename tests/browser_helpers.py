"""Start the real app (``streamlit run app.py``) on a free port and drive it with headless Chromium.

Used by tests/test_browser.py and bench/bench_app.py. Chromium is Debian's (/usr/bin/chromium):
Playwright's own browsers cannot be downloaded here.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("PD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

# What an error looks like on a Streamlit page: an uncaught exception or an st.error alert.
ERROR_SELECTOR = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser_available() -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).is_file()


@contextmanager
def streamlit_server(port: int | None = None, log_path: Path | None = None, env: dict | None = None,
                     timeout: float = 90.0, args: tuple[str, ...] = ()):
    """Run ``streamlit run app.py`` until the block ends; yields (base_url, started_at, healthy_at).

    ``args`` are added to the command line (e.g. ``("--client.showSidebarNavigation", "true")``).
    ``started_at`` is when the process was launched and ``healthy_at`` when /_stcore/health first
    answered "ok" (both ``time.perf_counter()``). The server is stopped (its process group) on exit.
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", *args],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    try:
        healthy = None
        while time.perf_counter() - started < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        healthy = time.perf_counter()
                        break
            except OSError:
                time.sleep(0.1)
        if healthy is None:
            raise RuntimeError(f"streamlit did not answer within {timeout:.0f} s; see {log_path}")
        yield url, started, healthy
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # our own process group only
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if log_path:
            log.close()


@contextmanager
def chromium_page(width: int = 1500, height: int = 1000):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


# The real menu: app.py draws one page link per page in the sidebar container "pd_menu".
MENU_LINKS = ".st-key-pd_menu a"
# Streamlit's own menus (the sidebar navigation of a pages/ folder or of st.navigation, and the top
# navigation): with client.showSidebarNavigation = false none of them should ever appear.
STREAMLIT_NAV = '[data-testid="stSidebarNav"], [data-testid="stSidebarNavItems"], [data-testid="stTopNavLinkContainer"]'
# Menu entries Streamlit makes from the file names in pages/ (and "app" for the entry script).
FILE_NAME_ENTRIES = ("app", "about", "adaptive", "attack defend", "benchmark", "explorer", "home", "present")


def go_to_page(page, title: str, timeout_ms: float = 60_000) -> None:
    """Click the sidebar menu entry ``title`` and wait for the page's h1."""
    page.locator(MENU_LINKS, has_text=title).first.click()
    wait_for_title(page, title, timeout_ms)


# Installed before the first byte of the page arrives (Playwright's add_init_script): a
# MutationObserver records, at every change of the DOM from the very first one, every entry any
# sidebar or navigation menu shows, and when Home's content and the real menu first appear
# (milliseconds since navigation start, performance.now()).
_FIRST_IMPRESSION_PROBE = """
(() => {
  const probe = {entries: [], checks: 0, home_title_ms: null, home_content_ms: null, home_button_ms: null,
                 menu_ms: null,
                 menu: [], menu_states: [], streamlit_nav_ms: null};
  window.__firstImpression = probe;
  const seen = new Set();
  const check = () => {
    probe.checks += 1;
    const items = document.querySelectorAll(
      '[data-testid="stSidebar"] a, [data-testid="stSidebar"] li, [data-testid="stSidebarNav"] *, ' +
      '[data-testid="stSidebarNavItems"] *, [data-testid="stTopNavLinkContainer"] *, header a');
    for (const el of items) {
      const label = el.cloneNode(true);  // the entry's words, without its icon's ligature name
      label.querySelectorAll('[data-testid="stIconMaterial"]').forEach(icon => icon.remove());
      const text = (label.textContent || '').trim();
      if (text && !seen.has(text)) { seen.add(text); probe.entries.push([text, performance.now()]); }
    }
    if (probe.streamlit_nav_ms === null && document.querySelector('%(nav)s'))
      probe.streamlit_nav_ms = performance.now();
    const h1 = Array.from(document.querySelectorAll('h1')).find(h => h.innerText.includes('Pixel Deflection Lab'));
    if (h1 && probe.home_title_ms === null) probe.home_title_ms = performance.now();
    if (h1 && probe.home_content_ms === null &&
        Array.from(document.querySelectorAll('p')).some(p => p.innerText.includes('Image classifiers can be fooled')))
      probe.home_content_ms = performance.now();
    if (h1 && probe.home_button_ms === null &&
        Array.from(document.querySelectorAll('button')).some(b => b.innerText.includes('Attack and defend a sample photo')))
      probe.home_button_ms = performance.now();
    const links = Array.from(document.querySelectorAll('%(menu)s')).map(a => {
      const label = a.cloneNode(true);
      label.querySelectorAll('[data-testid="stIconMaterial"]').forEach(icon => icon.remove());
      return (label.textContent || '').trim();
    });
    // Streamlit renders the menu's links one delta at a time, so a slow machine may paint a frame
    // with only the first few: every distinct state is kept, for the test to check each one.
    if (links.length >= 2) {
      if (probe.menu_ms === null) probe.menu_ms = performance.now();
      const last = probe.menu_states[probe.menu_states.length - 1];
      if (!last || last.join('\u0001') !== links.join('\u0001')) probe.menu_states.push(links);
      probe.menu = links;
    }
  };
  const start = () => {
    check();
    new MutationObserver(check).observe(document, {childList: true, subtree: true, characterData: true});
    const poll = () => { check(); requestAnimationFrame(poll); };  // and once per frame besides
    requestAnimationFrame(poll);
  };
  if (document.documentElement) start(); else document.addEventListener('readystatechange', start, {once: true});
})();
""" % {"nav": STREAMLIT_NAV, "menu": MENU_LINKS}


def install_first_impression_probe(page) -> None:
    """Record what the menus show from the first DOM on; read it with :func:`first_impression`."""
    page.add_init_script(_FIRST_IMPRESSION_PROBE)


def first_impression(page) -> dict:
    """The probe's record, times in ms since navigation start (``None``: not seen yet):
    ``entries`` [(menu entry text, ms)] in order of appearance; ``home_title_ms`` (Home's h1),
    ``home_content_ms`` (h1 and the first paragraph), ``home_button_ms`` (its "Attack and defend"
    button), ``menu_ms`` (the real menu first showed two entries), ``menu`` (its latest entries),
    ``menu_states`` (every distinct list of entries it showed, in order), ``streamlit_nav_ms``
    (Streamlit's own navigation menu appeared), ``checks`` (how often the DOM was inspected)."""
    return page.evaluate("() => window.__firstImpression")


def wait_for_title(page, title: str, timeout_ms: float = 60_000) -> None:
    page.locator("h1", has_text=title).first.wait_for(state="visible", timeout=timeout_ms)


def wait_until_idle(page, timeout_ms: float = 120_000) -> None:
    """Wait until the script has finished running (the "Running..." indicator is gone)."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)


def full_screenshot(page, path, width: int = 1500) -> None:
    """Screenshot of the whole page: Streamlit scrolls inside its main container, not the document,
    so the viewport is made as tall as that container first."""
    page.mouse.move(0, 0)  # no tooltip in the picture
    height = page.evaluate(
        "() => { const m = document.querySelector('[data-testid=\"stMain\"]') || document.body;"
        " return Math.max(m.scrollHeight, 1000); }")
    page.set_viewport_size({"width": width, "height": int(height) + 40})
    page.wait_for_timeout(1500)  # let Plotly redraw at the new size
    page.screenshot(path=str(path), full_page=True)
