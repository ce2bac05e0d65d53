"""Home: the idea in plain words, and the whole story in one click.

The text and the button come first and import nothing heavy, so a visitor sees them at once; the
shared sidebar (which loads the model registry, hence torch) is drawn after them.
"""
import streamlit as st

from ui import state
from ui.components import result_cards
from ui.compute import Failed
from ui.images import GALLERY_CHOICE, SOURCE, gallery_current
from ui.sidebar import settings as sidebar_settings
from ui.story import load_preset, run_story

st.title("Pixel Deflection Lab")
st.markdown(
    "**Image classifiers can be fooled by changes too small to see.** An *adversarial example* is a photo "
    "with a carefully computed pattern added to it — each pixel moves by at most a few shades — that makes "
    "the classifier name something completely different. To a person the two photos look the same.")
st.markdown(
    "**Pixel deflection is a defence that needs no retraining** (Prakash et al., CVPR 2018). Before the photo "
    "goes to the classifier, it:\n"
    "1. finds where the object is, with the classifier's own *activation map*;\n"
    "2. *deflects* a hundred pixel values **away from the object**: each takes the value of a random neighbour. "
    "The classifier hardly notices, but the attacker's carefully placed pattern is broken up;\n"
    "3. *denoises* the photo with wavelets, which smooths both the deflections and what is left of the attack.\n\n"
    "Because the defence is random, it can be run ten times and the answers put to a vote (*Ens-10*).")

st.subheader("Try it")
st.caption("One click: a sample photo is attacked with FGSM (the fast gradient sign method) at the paper's "
           "budget, then defended once and ten times. Takes a few seconds.")
clicked = st.button("Attack and defend a sample photo", type="primary", icon=":material/play_arrow:",
                    help="Uses the strawberry photo, FGSM at 6/255 and the defence parameters in the sidebar.")
settings = sidebar_settings()
if clicked:
    image = gallery_current()
    if image is None:
        st.error("No sample photos were found on this server; ask the administrator to install the "
                 "requirements (Foolbox and scikit-image ship the photos).")
        st.stop()
    state.set_current_image(image)
    state.set_sticky(SOURCE, "Gallery")
    state.set_sticky(GALLERY_CHOICE, image.path)
    state.set_sticky(state.ATTACK_NAME, state.DEFAULT_ATTACK)
    state.set_sticky(state.ATTACK_PRESET, state.DEFAULT_PRESET)
    load_preset(state.DEFAULT_ATTACK, state.DEFAULT_PRESET)
    with st.status("Attacking and defending…", expanded=True) as status:
        try:
            run_story(image, settings, state.DEFAULT_ATTACK, state.DEFAULT_PRESET, {}, status)
            status.update(label="Done", state="complete", expanded=False)
        except Failed:
            status.update(label="That did not work", state="error")

stored = state.stored_result()
if stored is not None:
    from pd_core.labels import label_name

    result = stored.result
    if result.label_source == "dataset":
        st.markdown(f"**{result.image_name}** — true class: *{label_name(result.label)}*.")
    else:
        st.markdown(f"**{result.image_name}** — the clean prediction is taken as the true class.")
    result_cards(result, stored.figures, key_prefix="home", charts=False)
    st.page_link("pages/attack_defend.py", label="See every detail (maps, changes, numbers) on Attack & Defend",
                 icon=":material/arrow_forward:")

st.info(
    "**An honest note.** The sample photo was picked because the defence wins on it. On this model the "
    "defence recovers only a minority of photos attacked with FGSM at this budget, and an attacker who knows "
    "about the defence (the *adaptive attack* of Athalye & Carlini, 2018) defeats it completely. "
    "The page *About the method* has the measured figures and the limits.", icon=":material/info:")
