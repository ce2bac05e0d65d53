"""Defence Explorer: every parameter of the defence, live, on the current photo (paper Fig. 2, Table 3)."""
import streamlit as st

from ui import state
from ui.cache import get_model
from ui.compute import Failed
from ui.explorer import choose_photo, curve_section, follow_classes, python_command, stages_for, stages_section
from ui.images import ensure_image
from ui.sidebar import settings as sidebar_settings

settings = sidebar_settings(defence_expanded=True)

st.title("Defence Explorer")
st.caption("Change the defence parameters in the sidebar (**Defence parameters**): everything below is "
           "recomputed at once on the current photo. The photo comes from *Attack & Defend*.")

ensure_image()
image = state.current_image()
if image is None:
    st.error("No image is available; please choose or upload one on the Attack & Defend page.")
    st.stop()
photo = choose_photo(image, settings, get_model(settings.model_name, settings.device))

st.subheader("Each stage on its own (paper Table 3)")
st.caption("The defence is two stages: pixel deflection, then wavelet denoising. Here each is applied alone, "
           "both together, and JPEG compression (a classic baseline) for comparison, with the sidebar's "
           f"parameters and seed {settings.seed}.")
try:
    stages = stages_for(photo, settings)
except Failed:
    st.stop()
follow, colours = follow_classes(photo, image, stages)
stages_section(stages, photo, follow, colours)
python_command(photo, image, settings, follow)
curve_section(photo, settings, follow, colours)
