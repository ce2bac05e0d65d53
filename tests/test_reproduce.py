"""Every command the Attack & Defend page offers under "Reproduce ... from the command line" runs
verbatim in a shell in the repository root and prints the numbers the page shows (issue 15,
item 5): the four stages' top-5 classes and probabilities (the bar charts), their verdicts (the
badges), the norms table and the attack's caption.

The command is taken from the page's own code block (AppTest, default story: the strawberry photo,
FGSM with the paper's preset, seed 0) and run with ``bash -c`` exactly as shown; ``python`` on
the PATH is this interpreter. Numbers are compared at the precision the page shows them.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["PD_WARM_UP"] = "0"
ROOT = Path(__file__).resolve().parents[1]
REPRODUCE = "Reproduce these numbers from the command line"
STAGES = ("clean", "adversarial", "defended", "ensemble")


@pytest.fixture(scope="module")
def story_page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.run()
    at.switch_page("pages/attack_defend.py").run()
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    return at


def _shown_commands(at) -> list[str]:
    (expander,) = [e for e in at.expander if e.label == REPRODUCE]
    commands = [line for block in expander.code for line in block.value.splitlines() if line.strip()]
    assert commands, "the page shows no command"
    return commands


def _run_verbatim(command: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PD_THREADS": os.environ.get("PD_THREADS", "1")}
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    return done.stdout


def _values(data) -> list[float]:
    """A Plotly data array: a list, or Plotly's typed-array form {"dtype": "f8", "bdata": base64}."""
    if isinstance(data, dict):
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()
    return list(data)


def _close(shown: str, value: float, decimals: int) -> bool:
    """``shown`` (the page's text) is ``value`` rounded to ``decimals`` (half a unit, plus float noise)."""
    return abs(float(shown) - value) <= 0.5 * 10 ** -decimals + 1e-6


def test_story_command_runs_verbatim_and_prints_the_page_numbers(story_page):
    from ui.components import BADGE, NORM_COLUMNS, NORM_ROWS

    at = story_page
    commands = _shown_commands(at)
    assert len(commands) == 1 and commands[0].startswith("python -m pd_core demo imagenet_04_949 ")
    printed = json.loads(_run_verbatim(commands[0]))

    # The four stages: the bar chart of each (top-5 names "label (index)", probabilities in %).
    charts = {c.proto.id.rsplit("-", 1)[-1]: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    for stage in STAGES:
        bars = charts[f"ad_top5_{stage}"]["data"][0]
        names, texts, percents = bars["y"][::-1], bars["text"][::-1], _values(bars["x"])[::-1]
        top5 = printed["stages"][stage]["top5"]
        assert names == [f"{t['label']} ({t['index']})" for t in top5], stage
        for text, percent, entry in zip(texts, percents, top5):
            assert _close(text.rstrip("%"), 100 * entry["prob"], 1), stage  # the label on the bar
            assert percent == pytest.approx(100 * entry["prob"], abs=0.01), stage  # its length
    # The verdict badges, in the order of the columns.
    badges = [m.value for m in at.markdown if "-badge[" in m.value]
    words = [re.match(r":\w+-badge\[([^\]]+)\]", b).group(1) for b in badges][:4]
    assert words == [BADGE[printed["stages"][s]["verdict"]][1] for s in STAGES]

    # The norms table, cell by cell at the page's precision.
    table = at.dataframe[0].value
    for key, row in NORM_ROWS.items():
        for name, (column, fmt) in NORM_COLUMNS.items():
            shown = str(table.loc[row, column])
            value = printed["norms"][key][name]
            if value == "inf":
                assert shown == "inf"
            elif fmt.endswith("%}"):
                assert _close(shown.rstrip("%"), 100 * value, 1), (row, column)
            else:
                assert _close(shown, value, int(re.search(r"\.(\d)f", fmt).group(1))), (row, column)

    # The attack's caption under the cards.
    n = printed["norms"]["adversarial"]
    caption = next(c.value for c in at.caption if c.value.startswith("Attack: FGSM"))
    assert f"normalised L2 {n['norm_l2']:.4f}, L∞ {n['linf_255']:.1f}/255, PSNR {n['psnr']:.1f} dB; " \
           f"seed {printed['seed']};" in caption
    assert printed["reference_label"]["index"] == 949 and printed["attack"]["name"] == "fgsm"


# ----------------------------------------------------------------------------- the other pages
def _shell_words(command: str, env: dict | None = None) -> list[str]:
    """The words bash makes of ``command`` (quotes removed, variables expanded), without running it."""
    done = subprocess.run(["bash", "-c", f"set -- {command}; printf '%s\\0' \"$@\""], cwd=ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\0")[:-1]


def _check_parses_with_its_folder(command: str, env: dict | None = None) -> None:
    from pd_core.cli import build_parser

    words = _shell_words(command, env)
    assert words[:3] == ["python", "-m", "pd_core"], words
    args = build_parser().parse_args(words[3:])  # exits (SystemExit) on an option the CLI lacks
    assert (ROOT / args.images).is_dir(), args.images  # a folder that exists, seen from the repo root


def test_adaptive_page_command_names_a_real_folder():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.run()
    at.switch_page("pages/adaptive.py").run()
    assert not at.exception, [e.value for e in at.exception]
    (command,) = [c.value for c in at.code if c.value.startswith("python -m pd_core adaptive")]
    if not (ROOT.parent / "shared" / "imagenet-dev").is_dir() and not os.environ.get("PD_IMAGE_ROOT"):
        pytest.skip("no data folder here: the page shows a FOLDER placeholder")
    _check_parses_with_its_folder(command)


def test_data_folder_argument_is_a_path_from_the_repo_root(tmp_path, monkeypatch):
    from ui.components import data_folder_argument

    monkeypatch.delenv("PD_IMAGE_ROOT", raising=False)
    sibling = ROOT.parent / "shared" / "imagenet-dev"
    assert data_folder_argument(sibling) == "../shared/imagenet-dev"
    monkeypatch.setenv("PD_IMAGE_ROOT", str(tmp_path))
    (tmp_path / "my photos").mkdir()
    shown = data_folder_argument(tmp_path / "my photos")
    assert shown == "\"$PD_IMAGE_ROOT\"/'my photos'" and str(tmp_path) not in shown
    assert _shell_words(f"ls {shown}", {"PD_IMAGE_ROOT": str(tmp_path)}) == ["ls", str(tmp_path / "my photos")]
    assert data_folder_argument("/") is None
