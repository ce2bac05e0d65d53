"""The Present page's handout: one self-contained HTML page summing up a run (no Streamlit here).

The page holds the run's key pictures (as data URIs, so the file works offline and can be mailed),
each step's sentence, the predictions with their confidence, and the command line that reproduces
the attack-and-defend numbers. It prints on one A4 page (the CSS sets the print size).
"""
from __future__ import annotations

import base64
import html

from .present_run import ADAPTIVE_EOT, ADAPTIVE_EPS_255, ADAPTIVE_STEPS
from .present_steps import STEPS

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.5em; margin: 0 0 .2em; } p.sub { color: #555; margin: 0 0 1em; }
.row { display: flex; gap: .8em; margin-bottom: 1em; }
figure { margin: 0; flex: 1; text-align: center; font-size: .85em; }
figure img { width: 100%; image-rendering: auto; border-radius: 4px; }
ol { padding-left: 1.3em; } li { margin-bottom: .35em; }
code { font-size: .8em; background: #f3f3f3; padding: .2em .4em; display: block; white-space: pre-wrap;
       word-break: break-all; }
@page { size: A4; margin: 12mm; }
"""


def _img(png: bytes, caption: str) -> str:
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return f'<figure><img src="{uri}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def handout_html(run) -> str:
    """The handout of ``run`` (:class:`ui.present_run.PresentationRun`) as one HTML document."""
    from pd_core.cli.options import demo_command
    from pd_core.labels import label_name

    s, a = run.story, run.adaptive
    answers = {
        "clean": s.predictions["clean"], "adversarial": s.predictions["adversarial"],
        "defended": s.predictions["ensemble"], "adaptive": a.predictions["adversarial_ensemble"],
    }
    captions = {
        "clean": f"Clean: “{label_name(answers['clean'])}”",
        "adversarial": f"Attacked (FGSM): “{label_name(answers['adversarial'])}”",
        "defended": f"Defended, Ens-{s.n_ensemble}: “{label_name(answers['defended'])}”",
        "adaptive": f"Adaptive attack, Ens-{a.ensemble}: “{label_name(answers['adaptive'])}”",
    }
    figures = "".join(_img(run.pictures[k], captions[k]) for k in captions)
    sentences = "".join(f"<li><b>{html.escape(step.title)}.</b> {html.escape(step.sentence(run))}</li>"
                        for step in STEPS)
    reference = ("true class" if s.label_source == "dataset" else "reference: the clean prediction")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Pixel Deflection Lab: {html.escape(run.image_name)}</title>
<style>{_CSS}</style></head><body>
<h1>Pixel Deflection Lab: {html.escape(run.image_name)}</h1>
<p class="sub">{html.escape(label_name(s.label))} ({reference}); model {html.escape(s.model)} on {html.escape(s.device)},
seed {s.seed}; defence: {int(s.config.deflections)} deflections, window {int(s.config.window)}, wavelet denoising.</p>
<div class="row">{figures}</div>
<ol>{sentences}</ol>
<p>Reproduce the attack and the defence:</p><code>{html.escape(demo_command(s))}</code>
<p>The adaptive attack: BPDA+EOT, ε {ADAPTIVE_EPS_255}/255, {ADAPTIVE_STEPS} steps, {ADAPTIVE_EOT} defence runs
per step, seed {a.seed} (the app's Adaptive attack page with these settings).</p>
</body></html>
"""
