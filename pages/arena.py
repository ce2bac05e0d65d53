"""Defence arena (issue 20 item 4): one photo, every defence of the registry side by side (the defended
image, the prediction, the time), then the leaderboard of the ladder's reports. Drawn by :mod:`ui.arena`."""
import streamlit as st

from ui.arena import arena_controls, arena_defences, arena_results, defend_everything, leaderboard_section, load_board
from ui.sidebar import settings

settings = settings()

st.title("Defence arena")
st.caption("Many defences have been proposed against adversarial photos. Here one photo goes through each of "
           "them: what each does to the picture, what the model then answers, and how long it takes. Below, the "
           "leaderboard says which of them still hold when the attacker knows the defence.")

names = arena_defences()
choice = arena_controls(settings, names)
if choice is None:
    st.error("No image is available: no sample photos were found and nothing was uploaded; please upload a photo.")
    st.stop()
if choice.run:
    defend_everything(settings, choice, names)
board, problem = load_board()
arena_results(settings, choice, names, board)
st.divider()
leaderboard_section(board, problem)
