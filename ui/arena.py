"""The *Defence arena* page's pieces (issue 20 item 4): one photo through every defence side by side,
then the leaderboard of the ladder's reports.

- :func:`arena_defences`: the registry's arena entries (:func:`pd_core.arena.arena_defence_names`),
  after the operator's plugins (``PD_DEFENCE_PLUGINS``, read once per server and value) are loaded.
  A visitor can never name code to load: the page has no such control.
- :func:`arena_controls`, :func:`defend_everything`, :func:`arena_results`: the page's three parts
  (the photo and the Run button; the run with its progress; the cards of the last run).
- :func:`run_arena`: one batch per defence through :func:`ui.compute.run_heavy` (the device queue,
  plain-language errors), with progress; a defence that fails gets its sentence on its card and the
  others go on.
- :func:`defence_cards`: the defended image, the prediction and the time of each defence.
- :func:`leaderboard_section`: the leaderboard JSON committed under ``docs/results/`` (``pdlab
  leaderboard ... --json``; another file through ``PD_LEADERBOARD_FILE``) as an interactive chart,
  one sentence per defence and the table; while it does not exist the page says so and shows the
  commands that make it. No number here is typed in: each is read from that file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from . import state
from .cache import get_model, model_tensor
from .components import command_line, settings_changed_notice, verdict_badge
from .compute import Failed, run_heavy
from .images import image_panel

ROOT = Path(__file__).resolve().parent.parent
LEADERBOARD_FILE = ROOT / "docs" / "results" / "zoo_leaderboard.json"
LEADERBOARD_ENV = "PD_LEADERBOARD_FILE"
RESULT_KEY = "arena_result"  # (run key, {name: DefendedRun | error sentence}, reference class)
CARDS_PER_ROW = 4

def leaderboard_commands() -> str:
    """The commands that make the leaderboard: one ladder report per built-in arena defence (issue 20
    item 5's budget: 100 photos, ε 2, 4, 8/255, Ens-10), then the table."""
    from pd_core.arena import arena_defence_names
    from pd_core.defences import defence_info

    names = " ".join(n for n in arena_defence_names() if defence_info(n).group != "plugin")
    return (f"for d in {names}; do\n"
            "  python -m pd_core adaptive --images ../shared/imagenet-dev --ladder --defence $d --eps 2,4,8 \\\n"
            "    --limit 100 --steps 40 --eot 10 --ensemble 10 --seed 0 --out docs/results/zoo/$d.csv \\\n"
            "    --report docs/results/zoo/$d.json\n"
            "done\n"
            "python -m pd_core leaderboard docs/results/zoo --json docs/results/zoo_leaderboard.json "
            "--html docs/results/zoo_leaderboard.html")


@st.cache_resource(show_spinner=False)
def _load_operator_plugins(value: str) -> tuple[tuple[str, ...], str | None]:
    from pd_core.defences import DefenceError
    from pd_core.defences.plugins import PLUGIN_ENV, load_operator_plugins

    try:
        return tuple(load_operator_plugins({PLUGIN_ENV: value})), None
    except DefenceError as exc:
        return (), str(exc)


def arena_defences() -> list[str]:
    """The arena's defences, with the operator's plugins loaded (a broken plugin is reported, not fatal)."""
    from pd_core.arena import arena_defence_names
    from pd_core.defences import DEFENCES
    from pd_core.defences.plugins import PLUGIN_ENV

    value = os.environ.get(PLUGIN_ENV, "")
    if value.strip():
        names, problem = _load_operator_plugins(value)
        if any(n not in DEFENCES for n in names):  # unregistered since (a reload): load them again
            _load_operator_plugins.clear()
            names, problem = _load_operator_plugins(value)
        if problem:
            st.warning(f"A defence plugin of this server's operator could not be loaded: {problem} "
                       "(the other defences are shown).", icon=":material/extension_off:")
    return arena_defence_names()


def run_arena(settings, model, x, names: list[str], status) -> dict:
    """Each defence of ``names`` on ``x`` (1, 3, S, S): ``{name: DefendedRun or error sentence}``."""
    from pd_core.arena import defend_and_classify
    from pd_core.defences import defence_info

    bar = status.progress(0.0, text="Starting…")
    results = {}
    for i, name in enumerate(names):
        title = defence_info(name).title
        bar.progress(i / len(names), text=f"Defence {i + 1} of {len(names)}: {title}")
        try:
            results[name] = run_heavy(
                lambda name=name: defend_and_classify(model, name, x, seed=settings.seed, config=settings.config),
                f"the defence {title}", settings.device, waiting=status.empty())
        except Failed as exc:
            results[name] = str(exc)
    bar.progress(1.0, text=f"{len(names)} defences done")
    return results


@dataclass(frozen=True)
class ArenaChoice:
    """What the visitor chose: the photo, whether its attacked version is defended, and whether Run was pressed."""

    image: object
    attacked: bool
    run: bool
    stored: object = None

    def key(self, settings, names) -> tuple:
        return (self.image.key, self.attacked, settings.key, tuple(names))


def arena_controls(settings, names: list[str]) -> ArenaChoice | None:
    """The photo (gallery or upload), which version of it, and the Run button; None without a photo."""
    left, right = st.columns([1, 1], gap="large")
    with left:
        image_panel()
        image = state.current_image()
    with right:
        stored = state.stored_result()
        attacked_available = (image is not None and stored is not None and stored.image_key == image.key
                              and stored.result.model == settings.model_name)
        options = ["The photo as it is"] + (["The attacked photo (last Attack & Defend run)"] if attacked_available
                                            else [])
        which = st.radio("Photo to defend", options, index=len(options) - 1, key="arena_which",
                         help="The photo itself, or the attacked version made on the Attack & Defend page (run an "
                              "attack there first to see whether each defence undoes it).")
        st.markdown(f"**{len(names)} defences**: the sidebar's seed and defence parameters apply to all of them.")
        run = st.button("Defend the photo with every defence", type="primary", icon=":material/play_arrow:",
                        disabled=image is None,
                        help="Runs each defence once on the photo and classifies the result; progress is shown "
                             "below.")
    if image is None:
        return None
    return ArenaChoice(image=image, attacked=which.startswith("The attacked"), run=run,
                       stored=stored if attacked_available else None)


def defend_everything(settings, choice: ArenaChoice, names: list[str]) -> None:
    """Run every defence on the chosen photo (progress in an ``st.status``) and keep the result in the session."""
    from pd_core.arena import predicted_class

    with st.status(f"Defending the photo with {len(names)} defences…", expanded=True) as status:
        model = get_model(settings.model_name, settings.device)
        if choice.attacked:
            x, reference = choice.stored.result.images["adversarial"][None].to(model.device), choice.stored.result.label
        else:
            x, reference = model_tensor(choice.image, model), choice.image.label_index
        results = run_arena(settings, model, x, names, status)
        if reference is None:  # an upload: the bare model's answer on the clean photo is the reference
            try:
                reference = run_heavy(lambda: predicted_class(model, x), "the clean prediction", settings.device)
            except Failed:
                status.update(label="That did not work", state="error")
                return
        st.session_state[RESULT_KEY] = (choice.key(settings, names), results, reference)
        failed = sum(isinstance(r, str) for r in results.values())
        status.update(label=f"{len(names) - failed} of {len(names)} defences done"
                      + (f", {failed} failed" if failed else ""),
                      state="error" if failed else "complete", expanded=False)


def arena_results(settings, choice: ArenaChoice, names: list[str], board) -> None:
    """The cards of the last run on this photo (with a notice when the settings changed since), and their command."""
    from pd_core.labels import label_name

    result = st.session_state.get(RESULT_KEY)
    image = choice.image
    if result is None or result[0][0] != image.key:
        st.info("Press **Defend the photo with every defence** to see them side by side.",
                icon=":material/touch_app:")
        return
    key, results, reference = result
    settings_changed_notice(key != choice.key(settings, names))
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


def _card(name: str, run, reference: int, attacked: bool, board_entry) -> None:
    from pd_core.defences import defence_info
    from .verdicts import verdict
    from pd_core.labels import label_name

    info = defence_info(name)
    st.markdown(f"**{info.title}**")
    if isinstance(run, str):
        st.error(f"This defence failed on the photo: {run}", icon=":material/error:")
        return
    st.image(run.defended[0].permute(1, 2, 0).numpy().clip(0, 1), width="stretch")
    prediction = run.predictions[0]
    stage = ("adversarial" if name == "none" else "defended") if attacked else "clean"
    kind, sentence = verdict(stage, prediction, reference)
    verdict_badge(kind, f"{label_name(prediction)} ({float(run.probs[0, prediction]):.0%})")
    ms = run.seconds * 1000
    took = f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"
    st.caption(f"{sentence} Defence time: {took}"
               + ("; randomised: another seed gives another picture." if info.randomised else "."))
    if board_entry is not None:
        head = board_entry["head"]
        robust = board_entry["entry"].is_robust.get(head)
        if robust is not None:
            st.caption(f"Leaderboard: an attacker who knows it leaves {robust.accuracy:.0%} at "
                       f"{board_entry['budget']}.")
    with st.popover("What it does", icon=":material/info:",
                    help="What this defence does to a photo, where it comes from, and how an attacker gets around it."):
        source = f"\n\nSource: {info.citation}." if info.citation.strip(" -") else ""
        st.markdown(f"{info.summary}{source}\n\nAn adaptive attack gets its gradient "
                    + ("exactly, through the defence." if info.gradient == "exact" else
                       f"through BPDA (surrogate: {info.surrogate})."))


def defence_cards(results: dict, reference: int, attacked: bool, board=None) -> None:
    """The cards, :data:`CARDS_PER_ROW` per row, in the registry's order."""
    entries = {}
    if board is not None:
        entries = {e.defence: {"entry": e, "head": board.headline_eps_255, "budget": board.budget(board.headline_eps_255)}
                   for e in board.entries}
    names = list(results)
    for start in range(0, len(names), CARDS_PER_ROW):
        columns = st.columns(CARDS_PER_ROW)
        for column, name in zip(columns, names[start:start + CARDS_PER_ROW]):
            with column, st.container(border=True, key=f"arena_card_{name}"):
                _card(name, results[name], reference, attacked, entries.get(name))


def leaderboard_file() -> Path:
    return Path(os.environ.get(LEADERBOARD_ENV) or LEADERBOARD_FILE)


def load_board():
    """``(leaderboard or None, message or None)``: the committed leaderboard, or why there is none."""
    from pd_core.leaderboard import LeaderboardError, load_leaderboard

    path = leaderboard_file()
    if not path.is_file():
        return None, None
    try:
        return load_leaderboard(path), None
    except LeaderboardError as exc:
        return None, str(exc)


def leaderboard_section(board, problem: str | None) -> None:
    """The leaderboard chart, a sentence per defence and the table, or why it is not there."""
    st.subheader("The leaderboard: which defence survives an attacker who knows it?")
    st.caption("Each defence judged by the same ladder of attacks on the same photos. **Looks robust**: the "
               "accuracy left after an attack made on the bare model (what the original papers measured). "
               "**Is robust**: the accuracy left after the strongest attack that knows the defence. Bars show "
               "95% intervals; hover a bar for the counts.")
    path = leaderboard_file()
    if board is None:
        if problem:
            st.error(f"The leaderboard file cannot be read: {problem} Make it again with the commands below.",
                     icon=":material/error:")
        else:
            st.info(f"The leaderboard has not been computed yet (there is no {path.name} in docs/results/). "
                    "It takes a GPU server about an hour; the commands below make it, and this page shows it "
                    "as soon as the file exists.", icon=":material/hourglass_empty:")
        command_line(leaderboard_commands(), "Run in the project's folder; each report is the ladder of one defence "
                                       "(transfer, BPDA, BPDA+EOT, exact+EOT where it exists), with its checks.",
                     title="The commands that make the leaderboard")
        return
    from pd_core.leaderboard import leaderboard_figure

    st.plotly_chart(leaderboard_figure(board), key="arena_leaderboard", config={"displaylogo": False})
    head = board.headline_eps_255
    for entry in board.entries:
        st.markdown(f"- {board.sentence(entry)}")
    with st.expander("The numbers"):
        dash = "—"
        st.dataframe([{"defence": e.title, "n": e.n, "judged by": e.judge.replace("ens", "Ens-"),
                       "clean": e.clean.text() if e.clean else dash,
                       f"looks robust ({board.budget(head)})": e.looks_robust[head].text() if head in e.looks_robust
                       else dash,
                       **{f"is robust {board.budget(x)}": e.is_robust[x].text() if x in e.is_robust else dash
                          for x in board.eps_255},
                       "checks": e.checks_text(),
                       "s / image": dash if e.seconds_per_image is None else f"{e.seconds_per_image:.3g}"}
                      for e in board.entries], hide_index=True)
        notes = [f"{e.title}: {n}" for e in board.entries for n in e.notes] + board.notes
        for note in notes:
            st.caption(f"Note — {note}.")
    command_line(f"python -m pd_core leaderboard {' '.join(board_sources(board))} --json {_shown_path(path)}",
                 f"Read from {path.name}, made by this command from the ladder reports (model {board.model}); "
                 "docs/results.md gives each report's ladder command.")


def _shown_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def board_sources(board) -> list[str]:
    """The leaderboard command's arguments that read the board's reports again: a folder where it
    holds two or more of them, the file itself otherwise (in the order of first appearance)."""
    from collections import Counter

    reports = [Path(e.source) for e in board.entries if e.source]
    per_folder = Counter(r.parent for r in reports)
    sources: list[str] = []
    for report in reports:
        source = str(report.parent) if per_folder[report.parent] > 1 else str(report)
        if source not in sources:
            sources.append(source)
    return sources
