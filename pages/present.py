"""Present: the whole story in nine full-width steps, for a projector (Next/Back or the arrow keys)."""
import streamlit as st

from ui import state
from ui.components import preload_chart_code
from ui.compute import Failed
from ui.images import ensure_image, image_picker
from ui.present import (SHOWN_IMAGE, STEP, current_step, handout_button, keyboard_shortcuts, navigation, page_style,
                        presentation_for)
from ui.present_draw import draw_step
from ui.sidebar import settings as sidebar_settings

st.set_page_config(layout="wide")  # every pixel of the projector for the steps
settings = sidebar_settings()
page_style()
keyboard_shortcuts()

ensure_image()
with st.expander("Presenter: the photo and the handout", icon=":material/slideshow:"):
    st.caption("Swap the gallery photo for a volunteer's upload: the same steps replay on it. Collapse the "
               "sidebar (top left) to give the steps the whole screen. The steps always defend with pixel "
               "deflection (the paper's defence) and the sidebar's parameters and seed.")
    image_picker()
image = state.current_image()
if image is None:
    st.error("No image is available: no sample photos were found and nothing was uploaded; please upload a "
             "photo above.")
    st.stop()
if st.session_state.get(SHOWN_IMAGE) != image.key:  # a new photo starts the story again
    st.session_state[SHOWN_IMAGE] = image.key
    st.session_state[STEP] = 0

try:
    run = presentation_for(image, settings)
except Failed:
    st.stop()

navigation()
draw_step(run, current_step())
st.divider()
handout_button(run, "present_handout")
preload_chart_code()  # the arena step's chart then draws at once, and no key press waits behind it
