"""The "whole ladder" view of the Adaptive attack page (issue 14): controls, run, verdict, charts, checks, commands.

Every attacker of :mod:`pd_core.adaptive.ladder` (transfer, BPDA, BPDA+EOT, exact gradient+EOT; both
losses) on a few photos of the project's folder, against the paper's defence (the sidebar's
parameters) and, optionally, the two baselines (no defence, JPEG-75), through
:func:`pd_core.adaptive.evaluate_ladder`. The page (``pages/adaptive.py``) calls
:func:`ladder_section`; the numbers, figures and sentences come from :mod:`pd_core.adaptive`.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from pd_core.defences import defence_info

from . import state
from .cache import get_model
from .components import command_line, progress_reporter
from .compute import Failed, run_heavy

LADDER_KEY = "adaptive_ladder"  # {"key", "rows", "reports", "figures", "commands", "missing"}, per defence name
LADDER_DEFENCES = ("pixel_deflection", "jpeg", "none")  # registry names: the paper's, then the two baselines
def _ladder_controls(folder_ok: bool):
    st.caption("Every attacker of the ladder, (a) to (d), with both losses, on the same few photos, against the "
               "paper's defence and two baselines; then the sanity checks and a verdict. Photos: the first of the "
               "project's ImageNet folder (its evaluation part) that the undefended model gets right.")
    a, b = st.columns(2, gap="large")
    with a:
        photos = st.number_input("Photos", 1, 50, **state.sticky("ladder_photos", 3),
                                 help="How many photos of the folder to attack (those the bare model gets wrong "
                                      "are dropped). More photos: a tighter interval, and proportionally slower.")
        eps = st.multiselect("Budgets ε (/255)", [0.5, 1, 2, 4, 8, 16], **state.sticky("ladder_eps", [2, 4, 8]),
                             help="The largest change allowed to any pixel value, in /255; one point of the "
                                  "curve each. The verdict speaks of 4/255 (or the closest budget chosen).")
        baselines = st.toggle("Compare with the baselines (no defence, JPEG-75)",
                              **state.sticky("ladder_baselines", True),
                              help="Run the same ladder on the undefended model and on JPEG compression at "
                                   "quality 75, so 'looks robust' and 'is robust' can be told apart.")
    with b:
        steps = st.slider("Steps per attack", 1, 100, **state.sticky("ladder_steps", 3),
                          help="How many small moves each attack makes. More steps: stronger and slower.")
        eot = st.slider("Defence runs averaged per step, k (EOT)", 1, 20, **state.sticky("ladder_eot", 2),
                        help="For rungs (c) and (d): how many random runs of the defence each step averages.")
        ensemble = st.number_input("Runs in the vote (Ens-k)", 2, 50, **state.sticky("ladder_ensemble", 10),
                                   help="Each attacked photo is also judged by the majority vote of this many "
                                        "fresh runs of the defence (the paper's Ens-10).")
        st.caption("Both losses run on every rung: cross-entropy (lower the true class's probability) and "
                   "margin (lift another class above it); each rung counts the stronger one.")
    st.caption("These budgets take a minute or two per defence on a CPU. A GPU server can raise them: the "
               "issue's reference run uses 100 steps and k = 10 on 100 photos or more.")
    run = st.button("Run the whole ladder", type="primary", icon=":material/play_arrow:",
                    disabled=not (folder_ok and eps), help="Runs every attacker on every defence; progress below.")
    if not eps:
        st.error("Choose at least one budget ε to attack with.")
    eps_255 = tuple(sorted(float(e) for e in eps))
    return int(photos), eps_255, int(steps), int(eot), int(ensemble), bool(baselines), run


def _run_ladder(settings, folder: Path, photos: int, eps: tuple, steps: int, eot: int, ensemble: int,
                defences: tuple) -> dict | None:
    """Evaluate the ladder on each defence (``ui.compute`` queue, progress in an ``st.status``)."""
    from pd_core.adaptive import LOSSES, ImageSelection, LadderSettings, evaluate_ladder, ladder_figure
    from pd_core.defences import create_defence

    ladder = LadderSettings(eps_255=eps, steps=steps, eot=eot, losses=LOSSES, ensemble=ensemble, seed=settings.seed)
    messages_per_defence = 2 + len(LOSSES) * 4 * len(eps)  # loading, each attack (at most 4 rungs), the checks
    with st.status("Climbing the ladder…", expanded=True) as status:
        report = progress_reporter(status)
        try:
            model = get_model(settings.model_name, settings.device)

            def work():
                done, results = [0], {}
                for position, name in enumerate(defences):
                    def say(message, name=name):
                        done[0] += 1
                        report(done[0] / (messages_per_defence * len(defences)),
                               f"{defence_info(name).title}: {message}")

                    config = settings.config if name == "pixel_deflection" else None
                    defence = create_defence(name, model, config=config)
                    results[name] = evaluate_ladder(model, folder, defence, ladder, ImageSelection(limit=photos),
                                                    progress=say)
                return results

            results = run_heavy(work, "the ladder", settings.device, waiting=status.empty())
        except Failed:
            status.update(label="That did not work", state="error")
            return None
        status.update(label=f"Done: {len(defences)} defence(s), n = {next(iter(results.values()))[2]['n']} photos",
                      state="complete", expanded=False)
    return {"rows": {k: v[0] for k, v in results.items()}, "reports": {k: v[2] for k, v in results.items()},
            "figures": {k: ladder_figure(v[0]) for k, v in results.items()}}


def _show_verdict(report: dict) -> None:
    """The verdict in plain words, prominently, with the n and interval behind it and the caveat of a small n."""
    from pd_core.adaptive import verdict_details

    found = verdict_details(report)
    clean = report["clean"]["single"]["accuracy"]
    colour, word = (("red", "No real protection") if found["accuracy"] < 0.1 else
                    ("orange", "Some protection") if found["accuracy"] < 0.5 * clean else ("green", "Holds up"))
    with st.container(border=True, key="ladder_verdict"):
        st.markdown(f":{colour}-badge[{word}] **The verdict on pixel deflection**")
        st.markdown(f"#### {found['sentence']}")
        st.caption(f"Kept {found['accuracy']:.0%} of n = {found['n']} photos at {found['eps_255']:g}/255 "
                   f"(95% interval {found['ci_low']:.0%}–{found['ci_high']:.0%}), one defended run, against the "
                   f"strongest attacker of the ladder ({found['attack'].replace('/', ', loss ')}).")
        if found["caveat"]:
            st.warning(found["caveat"], icon=":material/info:")


def ladder_section(settings, folder: Path | None, folder_arg: str | None) -> None:
    """The ladder tab: its controls, the run (on ``folder``, shown as ``folder_arg`` in the commands;
    ``None``: no folder here) and its stored result, with the sidebar's ``settings``."""
    import json

    from pd_core.adaptive import checks_table, looks_versus_is

    photos, eps, steps, eot, ensemble, baselines, run = _ladder_controls(folder is not None)
    defences = LADDER_DEFENCES if baselines else LADDER_DEFENCES[:1]
    run_key = (settings.key, photos, eps, steps, eot, ensemble, defences)
    if folder is None:
        st.info("No folder of labelled photos is available on this server, so the ladder cannot run here; the "
                "command below runs it on your own folder.", icon=":material/info:")
    elif run:
        result = _run_ladder(settings, folder, photos, eps, steps, eot, ensemble, defences)
        if result is not None:
            from pd_core.cli.options import ShellWord, ladder_commands

            commands, missing = ladder_commands(images=ShellWord(folder_arg) if folder_arg else "FOLDER",
                                                photos=photos, eps=eps, steps=steps, eot=eot, ensemble=ensemble,
                                                seed=settings.seed, model=settings.model_name,
                                                config=settings.config, defences=defences)
            st.session_state[LADDER_KEY] = {**result, "key": run_key, "commands": commands, "missing": missing}
    stored = st.session_state.get(LADDER_KEY)
    if stored is None:
        return
    if stored["key"] != run_key:
        st.warning("The settings changed since this ladder was computed; press **Run the whole ladder** to "
                   "update it.", icon=":material/update:")
    reports = stored["reports"]
    _show_verdict(reports["pixel_deflection"])
    if len(reports) > 1:
        st.markdown("**Looks robust or is robust?** One defended run at the same budget: against an attacker "
                    "who ignores the defence (transfer) and against the strongest one.")
        st.dataframe([{k: (f"{v:.0%}" if isinstance(v, float) and k != "ε (/255)" else v) for k, v in row.items()}
                      for row in looks_versus_is(reports)], hide_index=True, key="ladder_looks_is")
    for name, report in reports.items():
        st.subheader(defence_info(name).title)
        st.caption(report["verdict"])
        st.plotly_chart(stored["figures"][name], key=f"ladder_{name}")
        st.dataframe(checks_table(report["checks"]), hide_index=True, key=f"ladder_checks_{name}",
                     column_config={"result": st.column_config.TextColumn(
                         "result", help="pass: the check found nothing wrong; warn: look before trusting the "
                                        "numbers")})
        st.download_button(f"Download the report of {defence_info(name).title.lower()} (JSON)",
                           json.dumps(report, indent=2, allow_nan=False) + "\n",
                           file_name="report.json" if name == "pixel_deflection" else f"report_{name}.json",
                           mime="application/json", on_click="ignore", icon=":material/download:",
                           key=f"ladder_download_{name}",
                           help="RobustBench-style report (schema pd-lab/adaptive-report/1): every attack, "
                                "the checks, the intervals and the software versions.")
    note = ("Run it in the project's folder: it writes the same numbers (same photos, seed and budgets) to "
            "report.json" + (" and one report per baseline." if len(reports) > 1 else "."))
    if folder_arg is None:
        note = "FOLDER: a folder of labelled photos. " + note
    if stored["missing"]:
        note += (" The command line has no option for " + ", ".join(stored["missing"]) + ": it uses the paper's "
                 "values, so reset them in the sidebar to get the same numbers.")
    command_line("\n".join(stored["commands"]), note, title="Reproduce the ladder from the command line")
