"""Every example in the README runs, and says what the README says it does (issue 21).

The README's code blocks are parsed here, not copied: each ``pdlab`` / ``python -m pd_core`` line and
the library's Python snippet is run as written, in a scratch folder where ``photo.jpg`` is the
strawberry photo (Foolbox sample 04, the app's default) and ``../shared`` is the project's shared folder.
Lines that cannot run here say why in :data:`NOT_RUN`; a new example the README gains fails
:func:`test_every_readme_example_is_handled` until it is run here or given a reason.

Fast: the commands run in-process (``pd_core.cli.main``, the function the ``pdlab`` script calls) and
the protocol commands (``evaluate``, ``adaptive``) get a smaller budget appended (:data:`SMALLER`;
argparse keeps an option's last value), so each runs on one image with a couple of steps.
"""
from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHARED = REPO.parent / "shared"

#: The README's ``photo.jpg``: the strawberry the model gets right, that FGSM at the paper's ε turns
#: into "agaric", and that the defence (one run and Ens-10) turns back (measured over the gallery).
STRAWBERRY = 949

#: Commands that cannot run on a test machine, by their start, with the reason.
NOT_RUN = {
    "pdlab models --download": "downloads torchvision's weights (tests never reach beyond 127.0.0.1)",
    "pdlab evaluate --images /data/imagenet/val --ray": "ImageNet and a Ray cluster (tests/test_ray.py runs --ray)",
    "python -m pd_core evaluate --images /data/imagenet/val": "ImageNet on a Ray cluster (tests/test_ray.py)",
    "python -m pd_core evaluate --images /shared/imagenet/val": "a Ray cluster started by hand (tests/test_ray.py)",
}

#: Appended to the protocol commands: one image, a couple of steps (the last value of an option wins).
SMALLER = {
    "evaluate": ["--limit", "1", "--attacks", "fgsm,deepfool", "--no-progress"],
    "adaptive": ["--limit", "1", "--eps", "4", "--eot", "1", "--steps", "2", "--no-progress"],
}


def code_blocks(text: str) -> list[list[str]]:
    """The README's code blocks (four-space indented after a blank line, or fenced), as lists of lines with
    backslash continuations joined."""
    blocks: list[list[str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            blocks.append(lines[i + 1:j])
            i = j + 1
            continue
        if line.startswith("    ") and (i == 0 or not lines[i - 1].strip()) and not line.lstrip().startswith("- "):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            blocks.append([ln[4:] for ln in lines[i:j] if ln.strip()])
            i = j
            continue
        i += 1
    joined = []
    for block in blocks:
        out: list[str] = []
        for ln in block:
            if out and out[-1].endswith("\\"):
                out[-1] = out[-1][:-1].rstrip() + " " + ln.strip()
            else:
                out.append(ln)
        joined.append(out)
    return joined


def command_lines() -> list[str]:
    """Every ``pdlab ...`` / ``python -m pd_core ...`` line of the README, its comment dropped."""
    found = []
    for block in code_blocks(README.read_text()):
        for line in block:
            line = line.strip()
            if line.startswith(("pdlab ", "python -m pd_core ")):
                found.append(" ".join(shlex.split(line, comments=True)))
    return found


def python_snippets() -> list[str]:
    """The README's Python examples: the blocks that start by importing pd_core."""
    return ["\n".join(block) for block in code_blocks(README.read_text())
            if block and block[0].startswith(("from pd_core", "import pd_core"))]


def _reason_not_run(line: str) -> str | None:
    return next((why for start, why in NOT_RUN.items() if line.startswith(start)), None)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A working folder with ``photo.jpg`` (the strawberry) and ``../shared`` beside it."""
    if not SHARED.is_dir():
        pytest.skip("needs the project's shared folder beside the checkout (../shared)")
    from pd_core.images import gallery_image

    root = tmp_path_factory.mktemp("readme")
    (root / "shared").symlink_to(SHARED.resolve(), target_is_directory=True)
    work = root / "work"
    work.mkdir()
    shutil.copy(gallery_image("imagenet_04_949").path, work / "photo.jpg")
    return work


def _pdlab(line: str, cwd: Path, capsys, monkeypatch) -> tuple[int, str, str]:
    """Run one README command line in-process (as the ``pdlab`` script would) in ``cwd``."""
    from pd_core.cli import main

    argv = shlex.split(line, comments=True)
    argv = argv[1:] if argv[0] == "pdlab" else argv[3:]  # "python -m pd_core ..."
    argv += SMALLER.get(argv[0], [])
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _readme_line(start: str, exact: bool = False) -> str:
    lines = [line for line in command_lines() if (line == start if exact else line.startswith(start))]
    assert len(lines) == 1, f"expected one README line starting {start!r}, found {lines}"
    return lines[0]


# --- the checks ---------------------------------------------------------------------------------

RUN_HERE = ["pdlab models --from", "pdlab classify", "pdlab defend", "pdlab attack",
            "pdlab demo", "pdlab evaluate --images ../shared", "pdlab adaptive --images ../shared/imagenet-dev --eps",
            "pdlab adaptive --images ../shared/imagenet-dev --ladder"]


def test_every_readme_example_is_handled():
    lines = command_lines()
    assert len(lines) >= 10, lines  # the parser found the command-line section
    unhandled = [line for line in lines
                 if _reason_not_run(line) is None and not any(line.startswith(s) for s in RUN_HERE)
                 and line != "pdlab models"]
    assert not unhandled, f"README examples no test runs (run them here or give a reason in NOT_RUN): {unhandled}"
    assert len(python_snippets()) == 1


def test_models(scratch, capsys, monkeypatch):
    code, out, _ = _pdlab(_readme_line("pdlab models", exact=True), scratch, capsys, monkeypatch)
    assert code == 0
    assert re.search(r"efficientnet_lite0.*(yes|available)", out, re.IGNORECASE), out


def test_models_from_a_file_copied_by_hand(scratch, capsys, monkeypatch):
    """No such file here: exit 2 and one plain sentence naming it (an operator's line)."""
    line = _readme_line("pdlab models --from")
    code, out, err = _pdlab(line, scratch, capsys, monkeypatch)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "resnet50-0676ba61.pth" in err, err


def test_classify_defend_ensemble(scratch, capsys, monkeypatch):
    code, out, _ = _pdlab(_readme_line("pdlab classify"), scratch, capsys, monkeypatch)
    assert code == 0
    record = json.loads(out)
    assert record["top5"][0]["index"] == STRAWBERRY
    assert record["defended_top5"][0]["index"] == STRAWBERRY
    assert record["ensemble"]["n"] == 10 and record["ensemble"]["prediction"]["index"] == STRAWBERRY


def test_defend_writes_the_defended_png(scratch, capsys, monkeypatch):
    import torch

    from pd_core.images import load_image

    code, _, _ = _pdlab(_readme_line("pdlab defend"), scratch, capsys, monkeypatch)
    assert code == 0
    defended = scratch / "defended.png"
    assert Image.open(defended).size == (224, 224)
    # The defence changed the photo, a little (K = 100 deflections, then a soft wavelet shrinkage).
    change = (load_image(defended, size=224) - load_image(scratch / "photo.jpg", size=224)).abs()
    assert 0 < float(change.mean()) < 0.05 and bool((change > 0).any())
    assert torch.isfinite(change).all()


def test_attack_writes_an_adversarial_png_that_fools_the_model(scratch, capsys, monkeypatch):
    from pd_core.images import load_image
    from pd_core.models import load_model

    code, out, _ = _pdlab(_readme_line("pdlab attack"), scratch, capsys, monkeypatch)
    assert code == 0
    record = json.loads(out)
    assert record["success"] is True
    model = load_model("efficientnet_lite0", device="cpu")
    adv = load_image(scratch / "adv.png", spec=model)  # at the model's size: used as it is (no resize)
    assert int(model(adv).argmax()) != STRAWBERRY


def test_demo_tells_a_story_that_makes_sense(scratch, capsys, monkeypatch):
    """The README's story: the model gets the photo right, the attack fools it, the defence recovers it."""
    code, out, _ = _pdlab(_readme_line("pdlab demo"), scratch, capsys, monkeypatch)
    assert code == 0
    story = json.loads(out)
    verdicts = {stage: story["stages"][stage]["verdict"] for stage in story["stages"]}
    assert verdicts == {"clean": "correct", "adversarial": "fooled", "defended": "recovered",
                        "ensemble": "recovered"}, verdicts
    assert story["reference_label"]["index"] == STRAWBERRY
    assert story["command"].endswith("--seed 0") or "--seed 0" in story["command"]


def test_evaluate_table_1(scratch, capsys, monkeypatch):
    code, _, _ = _pdlab(_readme_line("pdlab evaluate --images ../shared"), scratch, capsys, monkeypatch)
    assert code == 0
    with open(scratch / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    attacks = {row["attack"] for row in rows}
    assert {"clean", "fgsm", "deepfool"} <= attacks, attacks
    assert len({row["image"] for row in rows}) == 1


def test_adaptive(scratch, capsys, monkeypatch):
    line = _readme_line("pdlab adaptive --images ../shared/imagenet-dev --eps")
    code, _, _ = _pdlab(line, scratch, capsys, monkeypatch)
    assert code == 0
    with open(scratch / "adaptive.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # The clean row (ε 0) and ε 4/255, each for the bare model, one defended run and Ens-10, on one image.
    assert {(float(row["eps_255"]), row["defence"]) for row in rows} == {
        (eps, defence) for eps in (0.0, 4.0) for defence in ("none", "single", "ens10")}
    assert {row["n"] for row in rows} == {"1"}


def test_adaptive_ladder(scratch, capsys, monkeypatch):
    line = _readme_line("pdlab adaptive --images ../shared/imagenet-dev --ladder")
    code, _, _ = _pdlab(line, scratch, capsys, monkeypatch)
    assert code == 0
    report = json.loads((scratch / "report.json").read_text())
    assert report["n"] == 1 and report["attacks"] and report["verdict"]
    with open(scratch / "ladder.csv", newline="") as f:
        assert list(csv.DictReader(f))


def test_library_in_five_lines(scratch, capsys, monkeypatch):
    """The Python snippet, as written, on photo.jpg: the undefended model is fooled, the defence says strawberry."""
    (snippet,) = python_snippets()
    monkeypatch.chdir(scratch)
    capsys.readouterr()
    exec(compile(snippet, "README.md", "exec"), {"__name__": "readme_snippet"})
    out = capsys.readouterr().out
    assert re.fullmatch(rf"tensor\(\[{STRAWBERRY}\]\) tensor\(\[{STRAWBERRY}\]\)\s*", out), out
