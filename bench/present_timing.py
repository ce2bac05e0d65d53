"""How fast each step of the Present page appears (issue 21: target <= 0.5 s per step, after warm-up).

Starts ``streamlit run app.py`` (the warm-up computes the story's photo only,
``PD_PRESENT_WARM_UP=1``), opens the Present page in headless Chromium, waits for the first step
(the warm-up's run, or the page computing it), then times every step change: from the key press
(→ forward, ← back) or the button click (Next, Back) until the new step's title, sentence and every
picture are on screen, loaded, and the script has finished. ``--rounds`` forward-and-back passes;
each step's median is reported.

Baseline, measured in the same run: the computation one step would wait for without the server-wide
store (:func:`ui.present_run.compute_presentation` for the same photo, in this process, warm). The
ratio step/compute says what the store saves.

    PD_THREADS=2 python bench/present_timing.py [--rounds 2]

``bench/bench_app.py`` calls :func:`report` at its end.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from browser_helpers import ERROR_SELECTOR, chromium_page, streamlit_server  # noqa: E402

TARGET_S = 0.5
# True once every picture of the step has loaded (st.image, and the slider's two photos in its frame).
_STEP_READY = """([number, title]) => {
  const block = document.querySelector('.st-key-present_step_' + number);
  if (!block || document.querySelector('[data-testid="stStatusWidget"]')) return false;
  const shown = block.querySelector('.pd-present-title');
  if (!shown || shown.textContent.trim() !== title) return false;
  const images = Array.from(block.querySelectorAll('[data-testid="stImage"] img'));
  for (const frame of block.querySelectorAll('iframe')) {
    const doc = frame.contentDocument;
    if (!doc || doc.readyState !== 'complete') return false;
    images.push(...doc.querySelectorAll('img'));
  }
  if (number === 4 && images.length < 2) return false;
  return images.every(img => img.complete && img.naturalWidth > 0);
}"""


def _wait_for_step(page, number: int, timeout_ms: float = 60_000) -> None:
    from ui.present_steps import STEPS

    page.wait_for_function(_STEP_READY, arg=[number, STEPS[number - 1].title], timeout=timeout_ms, polling="raf")


def _timed(page, action, number: int) -> float:
    t = time.perf_counter()
    action()
    _wait_for_step(page, number)
    elapsed = time.perf_counter() - t
    if page.locator(ERROR_SELECTOR).count():
        raise RuntimeError(f"the app showed an error on step {number}: {page.locator(ERROR_SELECTOR).all_inner_texts()}")
    page.wait_for_timeout(150)  # a presenter's pause; also lets the previous step's transfers finish
    return elapsed


def browser_timings(rounds: int, log: Path) -> dict:
    from ui.present_steps import STEPS

    n = len(STEPS)
    keys: dict[int, list[float]] = {i: [] for i in range(1, n + 1)}
    buttons: dict[int, list[float]] = {i: [] for i in range(1, n + 1)}
    env = {"PD_THREADS": os.environ.get("PD_THREADS", "2"), "PD_PRESENT_WARM_UP": "1"}
    with chromium_page(width=1600, height=1000) as page, \
            streamlit_server(log_path=log, env=env) as (url, _, _):
        t = time.perf_counter()
        page.goto(f"{url}/present")
        _wait_for_step(page, 1, timeout_ms=600_000)
        first = time.perf_counter() - t
        next_button = page.locator(".st-key-present_next button:visible")
        back_button = page.locator(".st-key-present_back button:visible")
        for _ in range(rounds):
            for number in range(2, n + 1):
                keys[number].append(_timed(page, lambda: page.keyboard.press("ArrowRight"), number))
            for number in range(n - 1, 0, -1):
                keys[number].append(_timed(page, lambda: page.keyboard.press("ArrowLeft"), number))
            for number in range(2, n + 1):
                buttons[number].append(_timed(page, next_button.click, number))
            for number in range(n - 1, 0, -1):
                buttons[number].append(_timed(page, back_button.click, number))
    return {"first": first, "keys": keys, "buttons": buttons}


def compute_baseline() -> float:
    """One warm :func:`compute_presentation` of the story's photo in this process (s)."""
    from pd_core.images import gallery_image, open_image, to_model_tensor
    from pd_core.models import DEFAULT_MODEL, load_model
    from pd_core.runtime import configure_from_env
    from ui.present_run import compute_presentation
    from ui.state import DEFAULT_GALLERY_STEM

    configure_from_env()
    model = load_model(DEFAULT_MODEL, device="cpu")
    entry = gallery_image(DEFAULT_GALLERY_STEM)
    spec = model.spec
    x = to_model_tensor(open_image(entry.path), spec.input_size, spec.resize, spec.interpolation, model.device)
    compute_presentation(model, x, entry.label_index, seed=1)  # warm: imports, kernels
    t = time.perf_counter()
    compute_presentation(model, x, entry.label_index, seed=0)
    return time.perf_counter() - t


def report(rounds: int = 2, log: Path | None = None) -> bool:
    """Measure and print the table; True when every step's median meets the target."""
    from ui.present_steps import STEPS

    log = log or ROOT / "artifacts" / "present_timing_streamlit.log"
    log.parent.mkdir(exist_ok=True)
    load_before = os.getloadavg()[0]
    app = browser_timings(rounds, log)
    compute = compute_baseline()
    load_after = os.getloadavg()[0]
    print(f"present_timing: Present page, EfficientNet-Lite0 on CPU, PD_THREADS={os.environ.get('PD_THREADS', '2')}, "
          f"{os.cpu_count()} cores, load average {load_before:.1f} -> {load_after:.1f}; {rounds} round(s)")
    print(f"first display of step 1 (warm-up or computed on the spot): {app['first']:.2f} s")
    print(f"baseline: computing the story's run without the store (compute_presentation, warm): {compute:.2f} s")
    print(f"{'step':44s} {'keys s':>7s} {'buttons s':>9s} {'step/compute':>12s} {'target':>6s}  verdict")
    ok = True
    for number, step in enumerate(STEPS, start=1):
        times = app["keys"][number] + app["buttons"][number]
        key = statistics.median(app["keys"][number])
        button = statistics.median(app["buttons"][number])
        worst = max(key, button)
        ok &= worst <= TARGET_S
        print(f"{f'{number}. {step.title}':44s} {key:7.2f} {button:9.2f} {statistics.median(times) / compute:12.3f} "
              f"{TARGET_S:6.1f}  {'PASS' if worst <= TARGET_S else 'FAIL'}")
    print(f"every step change (s): {', '.join(f'{t:.2f}' for n in app['keys'] for t in app['keys'][n] + app['buttons'][n])}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="forward-and-back passes with the keys and the buttons")
    args = parser.parse_args()
    os.environ.setdefault("PD_THREADS", "2")
    report(args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
