"""Attack & Defend: one photo, one attack, the defence once and ten times, side by side."""
import re
from pathlib import Path

import streamlit as st

from pd_core.cli.options import demo_command
from pd_core.labels import label_name
from ui import state
from ui.components import (command_line, downloads, maps_section, norms_table, perturbation_section,
                           preload_chart_code, result_cards, settings_changed_notice)
from ui.compute import Failed
from ui.images import image_panel
from ui.sidebar import settings as sidebar_settings
from ui.story import attack_controls, run_story, settings_key

settings = sidebar_settings()

st.title("Attack & Defend")
st.caption("Pick a photo and an attack, press **Run**: the model's answer on the clean photo, on the attacked "
           "photo, after one run of the defence, and after the vote of ten runs (Ens-10).")

left, right = st.columns([1, 1], gap="large")
with left:
    image_panel(', so *correct* means *the same answer as before the attack*')
    image = state.current_image()
with right:
    attack, preset, overrides = attack_controls()
    run = st.button("Run", type="primary", icon=":material/play_arrow:", disabled=image is None,
                    help="Attack the photo, then defend it once and ten times. Progress is shown below.")

if image is None:
    st.error("No image is available: no sample photos were found and nothing was uploaded; please upload a "
             "photo.")
    st.stop()

if run:
    with st.status("Attacking and defending…", expanded=True) as status:
        try:
            run_story(image, settings, attack, preset, overrides, status)
            status.update(label="Done", state="complete", expanded=False)
        except Failed:
            status.update(label="That did not work", state="error")

stored = state.stored_result()
if stored is None or stored.image_key != image.key:
    st.info("Press **Run** to attack this photo and defend it.", icon=":material/touch_app:")
    preload_chart_code()  # the browser loads its chart code now, so the results draw at once
    st.stop()

result = stored.result
settings_changed_notice(stored.settings_key != settings_key(image, settings, attack, preset, overrides))
st.divider()
if result.label_source != "dataset":
    st.caption(f"Reference class (the clean prediction): **{label_name(result.label)}**.")
result_cards(result, stored.figures)
n = result.norms["adversarial"]
st.caption(f"Attack: {result.attack.upper()} ({result.preset} preset), normalised L2 {n['norm_l2']:.4f}, "
           f"L∞ {n['linf_255']:.1f}/255, PSNR {n['psnr']:.1f} dB; seed {result.seed}; "
           f"computed in {result.seconds.get('total', 0):.1f} s on {result.device}.")
st.divider()
maps_section(result, stored.figures)
perturbation_section(result, stored.figures)
norms_table(result)
downloads(result, re.sub(r"[^A-Za-z0-9]+", "_", Path(image.name).stem.split(" (")[0]).strip("_")[:40] or "image")
command_line(demo_command(result),
             None if image.source == "gallery" else
             "Save your photo under the same name next to where you run the command.")
