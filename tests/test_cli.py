"""Command line: ``python -m pd_core models | classify | defend`` (issue 2, item 6)."""
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pd_core.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cat_path():
    from pd_core.images import gallery

    return str(next(g for g in gallery() if g.label_index == 281).path)


def test_models_lists_every_model_with_its_availability(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50", "vgg19",
                         "inception_v3"}  # Lite1/Lite2: issue 13
    assert rows["efficientnet_lite0"]["available"] is True
    assert all(r["available"] or r["reason"] for r in rows.values())


def test_classify_json_schema_and_values(capsys, cat_path, model):
    from pd_core.images import load_image

    assert main(["classify", cat_path, "--defend", "--json", "--seed", "1"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert record["image"] == cat_path and record["model"] == "efficientnet_lite0"
    for key in ("top5", "defended_top5"):
        assert len(record[key]) == 5
        assert set(record[key][0]) == {"index", "label", "prob"}
        probs = [item["prob"] for item in record[key]]
        assert probs == sorted(probs, reverse=True)
    # the numbers are the library's numbers
    with torch.no_grad():
        probs = model(load_image(cat_path, spec=model.spec)).softmax(-1)[0]
    assert record["top5"][0]["index"] == int(probs.argmax())
    assert record["top5"][0]["prob"] == pytest.approx(float(probs.max()), abs=1e-5)
    from pd_core.labels import label_name
    assert record["top5"][0]["label"] == label_name(int(probs.argmax()))


def test_defend_writes_a_lossless_png_that_reproduces_with_the_seed(tmp_path, cat_path):
    from pd_core.images import load_image

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["defend", cat_path, "--out", str(a), "--seed", "7"]) == 0
    assert main(["defend", cat_path, "--out", str(b), "--seed", "7"]) == 0
    assert a.read_bytes() == b.read_bytes()
    img = load_image(a, size=224, resize=224)
    clean = load_image(cat_path, size=224, resize=256)
    diff = (img - clean).abs()
    assert 0 < diff.mean() < 0.05  # defended, but still the same photo


def test_bad_image_exits_2_with_one_line_on_stderr(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    proc = subprocess.run([sys.executable, "-m", "pd_core", "classify", str(bad)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "notes.png" in lines[0]


def test_help_lists_every_subcommand_with_its_one_line_description():
    from pd_core import cli

    proc = subprocess.run([sys.executable, "-m", "pd_core", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0
    listing = " ".join(proc.stdout.split())  # argparse wraps long descriptions
    for name in cli.SUBCOMMANDS:
        help_line = " ".join(importlib.import_module(f"pd_core.cli.{name}").HELP.split())
        assert f"{name} {help_line}" in listing, name
    assert set(cli.SUBCOMMANDS) == {"models", "classify", "defend", "attack", "demo", "evaluate", "adaptive",
                                    "sweep", "dose", "defences", "leaderboard"}


def test_models_command_imports_no_heavy_front_end_library():
    """Only the chosen subcommand builds its parser: listing the models loads neither the attacks'
    Foolbox nor the app's Plotly, scikit-image or Streamlit."""
    code = ("import sys, contextlib, io\nfrom pd_core.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['models', '--json']) == 0\n"
            "print(sorted(m for m in ('foolbox', 'plotly', 'skimage', 'streamlit', 'pd_core.attacks.core') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
