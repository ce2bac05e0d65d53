"""The Present page's widgets: the steps, Next/Back with the arrow keys, the before/after slider.

Keyboard. Streamlit has no key bindings, so a one-pixel ``st.iframe`` (HTML in an
iframe of the same origin) adds one small script to the *page's* document, once: → and PageDown
click the Next button, ← and PageUp the Back button (presentation clickers send PageUp/PageDown),
unless the visitor is typing in a text field. The script lives in the page's own realm, so it
keeps working when Streamlit replaces the iframe.

The before/after slider is plain HTML in an ``st.iframe``: the attacked photo under the clean
one, the clean one cut off at the slider's position (CSS ``clip-path``), so moving it needs no
round trip to the server. It sweeps across once when the step opens, so the audience sees it
move, then follows the mouse or a touch. Arrow keys stay with the step navigation there too.
"""
from __future__ import annotations

import base64

import streamlit as st

from .present_steps import STEPS

STEP = "present_step"  # session key: index of the step shown, 0-based
NEXT_KEY, BACK_KEY = "present_next", "present_back"

_CSS = """<style>
.pd-present-title { font-size: 2.6rem; font-weight: 700; margin: 0; line-height: 1.15; }
.pd-present-sentence { font-size: 1.75rem; line-height: 1.35; margin: .3rem 0 1rem; }
.pd-present-caption { font-size: 1.25rem; text-align: center; margin-top: .2rem; }
.pd-answer { font-size: 2.6rem; font-weight: 700; line-height: 1.2; margin: .2rem 0; }
.pd-present-label { font-size: 1.35rem; margin-top: .6rem; }
.pd-answer small { display: block; font-size: 1.3rem; font-weight: 400; }
.pd-ok { color: #2e7d32; } .pd-bad { color: #c62828; } .pd-neutral { color: inherit; }
[class*="st-key-present_step_"] [data-testid="stImage"] img { max-height: 62vh; object-fit: contain; }
</style>"""

_KEYS_SCRIPT = """
(() => {
  if (window.__pdPresentKeys) return;
  window.__pdPresentKeys = true;
  const targets = {ArrowRight: '%(next)s', PageDown: '%(next)s', ArrowLeft: '%(back)s', PageUp: '%(back)s'};
  window.__pdPresentKey = (event) => {
    const key = targets[event.key];
    const t = event.target;
    if (!key || event.altKey || event.ctrlKey || event.metaKey) return;
    if (t && (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName) && t.type !== 'range')) return;
    // The button shown (Streamlit 1.67 also keeps a hidden copy of a button that has a tooltip).
    const button = Array.from(document.querySelectorAll('.st-key-' + key + ' button'))
      .find(b => b.getClientRects().length > 0);
    if (!button || button.disabled) return;
    event.preventDefault();
    button.click();
  };
  document.addEventListener('keydown', window.__pdPresentKey);
})();
""" % {"next": NEXT_KEY, "back": BACK_KEY}

_KEYS_COMPONENT = """<script>
const doc = window.parent.document;
if (!doc.getElementById('pd-present-keys')) {
  const s = doc.createElement('script');
  s.id = 'pd-present-keys';
  s.textContent = %s;
  doc.head.appendChild(s);
}
</script>"""

_SLIDER = """<!doctype html><html><head><style>
body { margin: 0; font-family: system-ui, sans-serif; }
.wrap { position: relative; width: min(100%%, %(size)spx); aspect-ratio: 1; margin: 0 auto; user-select: none;
        touch-action: none; cursor: ew-resize; }
.wrap img { position: absolute; inset: 0; width: 100%%; height: 100%%; }
.wrap img, #line, .tag { pointer-events: none; }  /* no native image drag: the area takes the pointer */
#clean { clip-path: inset(0 50%% 0 0); }
#line { position: absolute; top: 0; bottom: 0; left: 50%%; width: 4px; margin-left: -2px; background: #fff;
        box-shadow: 0 0 6px #000; }
.tag { position: absolute; top: 10px; padding: 4px 10px; background: rgba(0,0,0,.6); color: #fff; font-size: 22px;
       border-radius: 4px; }
#slider { display: block; width: min(100%%, %(size)spx); margin: 12px auto 0; height: 28px; }
</style></head><body>
<div class="wrap" id="wrap">
  <img id="attacked" src="%(attacked)s" alt="attacked photo" draggable="false">
  <img id="clean" src="%(clean)s" alt="clean photo" draggable="false">
  <div id="line"></div>
  <span class="tag" style="left:10px">Clean</span><span class="tag" style="right:10px">Attacked</span>
</div>
<input id="slider" type="range" min="0" max="100" step="0.5" value="50" tabindex="-1"
       aria-label="Position of the line between the clean and the attacked photo">
<script>
const slider = document.getElementById('slider'), wrap = document.getElementById('wrap');
const show = (v) => {
  v = Math.max(0, Math.min(100, v));
  slider.value = v;
  document.getElementById('clean').style.clipPath = 'inset(0 ' + (100 - v) + '%% 0 0)';
  document.getElementById('line').style.left = v + '%%';
};
slider.addEventListener('input', () => { sweeping = false; show(parseFloat(slider.value)); });
const follow = (e) => { const r = wrap.getBoundingClientRect(); sweeping = false; show((e.clientX - r.left) / r.width * 100); };
let dragging = false;  // the pointer is captured by the photo area, so a drag may leave it
wrap.addEventListener('pointerdown', (e) => { e.preventDefault(); dragging = true; wrap.setPointerCapture(e.pointerId);
                                              follow(e); });
wrap.addEventListener('pointermove', (e) => { if (dragging) follow(e); });
wrap.addEventListener('pointerup', () => { dragging = false; });
wrap.addEventListener('pointercancel', () => { dragging = false; });
// Arrow keys and PageUp/PageDown move between steps, as on the rest of the page.
document.addEventListener('keydown', (e) => {
  const f = window.parent.__pdPresentKey;
  if (f) f({key: e.key, altKey: e.altKey, ctrlKey: e.ctrlKey, metaKey: e.metaKey, target: null,
            preventDefault: () => e.preventDefault()});
});
// One sweep when the step opens, clean -> attacked -> middle, so the audience sees the line move.
let sweeping = true;
window.sweepPositions = []; window.sweepDone = false;
const t0 = performance.now(), duration = 3000;
const frame = (now) => {
  if (!sweeping) return;
  const u = Math.min(1, (now - t0) / duration);
  show(u < 0.4 ? 100 * (1 - u / 0.4) : u < 0.8 ? 100 * (u - 0.4) / 0.4 : 100 - 50 * (u - 0.8) / 0.2);
  window.sweepPositions.push(parseFloat(slider.value));  // what the audience saw (read by the browser test)
  if (u < 1) requestAnimationFrame(frame); else window.sweepDone = true;
};
requestAnimationFrame(frame);
</script></body></html>"""

SLIDER_SIZE = 560  # px: the photos' side in the slider (a 224-pixel photo shown 2.5x on a projector)


def page_style() -> None:
    st.html(_CSS)


def keyboard_shortcuts() -> None:
    """Bind →/PageDown to Next and ←/PageUp to Back on the page (once per browser tab)."""
    import json

    st.iframe(_KEYS_COMPONENT % json.dumps(_KEYS_SCRIPT), height=1, tab_index=-1)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def comparison_slider(clean_png: bytes, attacked_png: bytes) -> None:
    """The before/after slider between two pictures of the same size (PNG bytes)."""
    st.iframe(_SLIDER % {"clean": _data_uri(clean_png), "attacked": _data_uri(attacked_png), "size": SLIDER_SIZE},
              height=SLIDER_SIZE + 56, tab_index=-1)


def current_step() -> int:
    return min(max(int(st.session_state.get(STEP, 0)), 0), len(STEPS) - 1)


def _move(delta: int) -> None:
    st.session_state[STEP] = min(max(current_step() + delta, 0), len(STEPS) - 1)


def navigation() -> None:
    """Back, the position, Next (the arrow keys click the buttons)."""
    index = current_step()
    back, where, forward = st.columns([1, 4, 1], vertical_alignment="center")
    with back:
        st.button("Back", key=BACK_KEY, icon=":material/arrow_back:", on_click=_move, args=(-1,),
                  disabled=index == 0, width="stretch", help="The previous step (or press ← / Page Up).")
    with where:
        st.progress((index + 1) / len(STEPS), text=f"Step {index + 1} of {len(STEPS)}: {STEPS[index].title}")
    with forward:
        st.button("Next", key=NEXT_KEY, icon=":material/arrow_forward:", on_click=_move, args=(1,),
                  disabled=index == len(STEPS) - 1, width="stretch", type="primary",
                  help="The next step (or press → / Page Down).")


# --- the run behind the steps -------------------------------------------------------------------
UPLOAD_RUNS = "present_upload_runs"  # session key: the visitor's upload's run (uploads stay private)
SHOWN_IMAGE = "present_shown_image"  # session key: the image the steps were last shown for


def _command_path(image) -> str:
    from pathlib import Path

    return Path(image.path).stem if image.source == "gallery" and image.path else (image.path or "IMAGE")


def presentation_for(image, settings):
    """The :class:`ui.present_run.PresentationRun` of ``image`` with the sidebar's settings: from the
    server-wide store (gallery photos; the warm-up fills it) or the session (uploads), else computed
    now under a progress bar. Raises :class:`ui.compute.Failed` after showing the error."""
    from . import present_store
    from .cache import get_model, model_tensor
    from .compute import run_heavy
    from .present_run import compute_presentation

    key = present_store.run_key(image.key, settings.model_name, settings.device, settings.seed, settings.config,
                                settings.n_ensemble)
    private = st.session_state.setdefault(UPLOAD_RUNS, {})
    run = present_store.get(key) if image.source == "gallery" else private.get(key)
    if run is not None:
        return run
    bar = st.progress(0.0, text="Preparing this photo's story (the attack, the defence, the adaptive attack)…")

    def report(fraction: float, message: str) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=f"Preparing this photo's story: {message}")

    model = get_model(settings.model_name, settings.device)
    x = model_tensor(image, model)
    try:
        run = run_heavy(lambda: compute_presentation(model, x, image.label_index, config=settings.config,
                                                     seed=settings.seed, n_ensemble=settings.n_ensemble,
                                                     image_name=image.name, image_path=_command_path(image),
                                                     progress=report),
                        "the presentation", settings.device)
    finally:
        bar.empty()
    if image.source == "gallery":
        present_store.put(key, run)
    else:
        private.clear()  # one upload at a time per visitor
        private[key] = run
    return run


def handout_button(run, key: str) -> None:
    from .present_handout import handout_html

    if getattr(run, "_handout", None) is None:
        run._handout = handout_html(run)  # once per run: the same bytes for every visitor
    st.download_button("Download handout", data=run._handout, file_name="pixel_deflection_handout.html",
                       mime="text/html", key=key, icon=":material/download:", on_click="ignore",
                       help="A one-page summary of this run (pictures, sentences, the command line) to "
                            "print or send.")
