"""Defence arena (issue 20 item 4): one photo, every defence of the registry side by side (the defended
image, the prediction, the time), then the leaderboard of the ladder's reports. Drawn by :mod:`ui.arena`."""
import streamlit as st

from pd_core.labels import label_name
from ui import state
from ui.arena import RESULT_KEY, arena_defences, defence_cards, leaderboard_section, load_board, run_arena
from ui.cache import get_model, model_tensor
from ui.components import command_line, settings_changed_notice
from ui.images import image_panel
from ui.sidebar import settings

settings = settings()

st.title("Defence arena")
st.caption("Many defences have been proposed against adversarial photos. Here one photo goes through each of "
           "them: what each does to the picture, what the model then answers, and how long it takes. Below, the "
           "leaderboard says which of them still hold when the attacker knows the defence.")

names = arena_defences()
left, right = st.columns([1, 1], gap="large")
with left:
    image_panel()
    image = state.current_image()
with right:
    stored = state.stored_result()
    attacked_available = (image is not None and stored is not None and stored.image_key == image.key
                          and stored.result.model == settings.model_name)
    options = ["The photo as it is"] + (["The attacked photo (last Attack & Defend run)"] if attacked_available else [])
    which = st.radio("Photo to defend", options, index=len(options) - 1, key="arena_which",
                     help="The photo itself, or the attacked version made on the Attack & Defend page (run an "
                          "attack there first to see whether each defence undoes it).")
    st.markdown(f"**{len(names)} defences**: the sidebar's seed and defence parameters apply to all of them.")
    run = st.button("Defend the photo with every defence", type="primary", icon=":material/play_arrow:",
                    disabled=image is None,
                    help="Runs each defence once on the photo and classifies the result; progress is shown below.")

if image is None:
    st.error("No image is available: no sample photos were found and nothing was uploaded; please upload a photo.")
    st.stop()
attacked = which.startswith("The attacked")
run_key = (image.key, attacked, settings.key, tuple(names))

if run:
    with st.status(f"Defending the photo with {len(names)} defences…", expanded=True) as status:
        model = get_model(settings.model_name, settings.device)
        if attacked:
            x = stored.result.images["adversarial"][None].to(model.device)
            reference = stored.result.label
        else:
            import torch

            x = model_tensor(image, model)
            with torch.no_grad():
                reference = image.label_index if image.label_index is not None else int(model(x).argmax())
        results = run_arena(settings, model, x, names, status)
        st.session_state[RESULT_KEY] = (run_key, results, reference)
        failed = sum(isinstance(r, str) for r in results.values())
        status.update(label=f"{len(names) - failed} of {len(names)} defences done" + (f", {failed} failed" if failed
                                                                                      else ""),
                      state="error" if failed else "complete", expanded=False)

board, problem = load_board()
result = st.session_state.get(RESULT_KEY)
if result is None or result[0][0] != image.key:
    st.info("Press **Defend the photo with every defence** to see them side by side.", icon=":material/touch_app:")
else:
    key, results, reference = result
    settings_changed_notice(key != run_key)
    st.subheader("Every defence on this photo")
    st.caption(f"Reference class: **{label_name(reference)}**"
               + (" (the photo's true class)." if image.label_index is not None else " (the model's answer on "
                  "the clean photo).") + " Times are for one run of the defence on this server.")
    defence_cards(results, reference, key[1], board)
    photo = "ATTACKED.png" if key[1] else (image.path if image.source == "gallery" else image.name)
    command_line(f"python -m pd_core classify {photo} --defence NAME --seed {settings.seed} "
                 f"--model {settings.model_name}",
                 "Gives each card's prediction, with NAME from `python -m pd_core defences` (the command uses "
                 "the paper's defence parameters unless you add --deflections, --window, --sigma). "
                 + ("ATTACKED.png: the attacked photo downloaded from the Attack & Defend page." if key[1] else ""))

st.divider()
leaderboard_section(board, problem)
